"""The job queue: Redis Streams with a consumer group, one stream per priority, plus a job-state hash per job.

Layout (prefix P = settings.key_prefix):
  P:jobs:high, P:jobs:normal   streams of {job: <id>} entries, consumer group settings.consumer_group
  P:job:<id>                   job-state hash (state, stage, progress, timings, error, result path, ...)
  P:index                      sorted set of job ids by submission time (listing, paging)
  P:dedup:<hash>               job id of the last job with this scan + options
  P:dead                       dead-letter stream: {job, reason, deliveries, at}
  P:events:<id>                pub/sub channel; every change of the job record is published there as JSON
  P:stats, P:workers           finished-job counters, worker last-seen times (for /metrics and /health)

Every state transition is one Lua script, so a transition and the stream bookkeeping (XACK/XADD) happen
together. Worker-side transitions check that the worker still owns the stream entry (XPENDING), which fences
a worker that lost its claim (paused past claim_idle_s) from overwriting the job of the worker that took over.
Results are never stored here: only their Tiled path and a small JSON summary.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from service.models import TERMINAL_STATES, JobState, ReconRequest
from service.settings import Settings

PRIORITIES = ("high", "normal")  # read order

_OWNER_CHECK = """
local p = redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
"""

# KEYS: dedup, job, stream, index   ARGV: id, force, created, job-key-prefix, field, value, ...
_SUBMIT = """
if ARGV[2] == '0' then
  local existing = redis.call('GET', KEYS[1])
  if existing then
    local st = redis.call('HGET', ARGV[4] .. existing, 'state')
    if st and st ~= 'failed' and st ~= 'cancelled' then return {existing, 0} end
  end
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
local entry = redis.call('XADD', KEYS[3], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[2], 'entry', entry)
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return {ARGV[1], 1}
"""

# KEYS: job, stream   ARGV: group, entry, consumer, now, stream_deliveries, max_deliveries
_START = """
local st = redis.call('HGET', KEYS[1], 'state')
if (not st) or st == 'succeeded' or st == 'failed' or st == 'cancelled' then
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
  return st or 'missing'
end
""" + _OWNER_CHECK.replace("return 0", "return 'lost'") + """
if tonumber(ARGV[5]) > tonumber(ARGV[6]) then return 'dead' end
redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[4], 'worker', ARGV[3], 'stage', 'starting',
           'progress', '0', 'heartbeat_at', ARGV[4], 'updated_at', ARGV[4], 'entry', ARGV[2])
redis.call('HSETNX', KEYS[1], 'first_started_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
return 'run'
"""

# KEYS: job, stream   ARGV: group, entry, consumer, now
_HEARTBEAT = _OWNER_CHECK + """
redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
redis.call('HSET', KEYS[1], 'heartbeat_at', ARGV[4])
return 1
"""

# KEYS: job   ARGV: consumer, field, value, ...
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
return 1
"""

# KEYS: job, stream, stats   ARGV: group, entry, consumer, state, ttl, field, value, ...
_FINISH = _OWNER_CHECK + """
local fields = {'state', ARGV[4]}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
return 1
"""

# KEYS: job, stream, stats, dead   ARGV: group, entry, consumer, now, ttl, job_id, reason, deliveries
_DEAD = """
redis.call('XADD', KEYS[4], '*', 'job', ARGV[6], 'reason', ARGV[7], 'deliveries', ARGV[8], 'at', ARGV[4])
redis.call('HSET', KEYS[1], 'state', 'failed', 'error', ARGV[7], 'finished_at', ARGV[4], 'updated_at', ARGV[4],
           'stage', 'dead-letter')
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('HINCRBY', KEYS[3], 'failed', 1)
redis.call('HINCRBY', KEYS[3], 'dead_lettered', 1)
return 1
"""

# KEYS: job, stream   ARGV: group, entry, consumer, now, job_id, reason
_REQUEUE = _OWNER_CHECK + """
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[5])
redis.call('HSET', KEYS[1], 'state', 'queued', 'stage', ARGV[6], 'progress', '0', 'entry', entry, 'worker', '',
           'updated_at', ARGV[4])
return 1
"""

# KEYS: job, stats   ARGV: now, ttl
_CANCEL = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return 'terminal' end
if st == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancel_requested', '1', 'finished_at', ARGV[1],
             'updated_at', ARGV[1], 'error', 'cancelled by request before it started')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('HINCRBY', KEYS[2], 'cancelled', 1)
  return 'cancelled'
end
redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'updated_at', ARGV[1])
return 'requested'
"""


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to a worker: which job, from where, and how often the stream delivered it."""

    job_id: str
    priority: str
    stream: str
    entry_id: str
    deliveries: int


class JobQueue:
    """Queue operations for the gateway (submit, read, list, cancel) and for workers (claim, heartbeat, finish).

    Takes a redis-py client created with decode_responses=True.
    """

    def __init__(self, client, settings: Settings):
        self.r = client
        self.s = settings
        p = settings.key_prefix
        self.prefix = p
        self.group = settings.consumer_group
        self.index_key = f"{p}:index"
        self.dead_key = f"{p}:dead"
        self.stats_key = f"{p}:stats"
        self.workers_key = f"{p}:workers"
        self._submit = client.register_script(_SUBMIT)
        self._start = client.register_script(_START)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._progress = client.register_script(_PROGRESS)
        self._finish = client.register_script(_FINISH)
        self._dead = client.register_script(_DEAD)
        self._requeue = client.register_script(_REQUEUE)
        self._cancel = client.register_script(_CANCEL)

    # ---- key names ------------------------------------------------------------------------------------------
    def stream(self, priority: str) -> str:
        return f"{self.prefix}:jobs:{priority}"

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def channel(self, job_id: str) -> str:
        return f"{self.prefix}:events:{job_id}"

    def ensure_groups(self) -> None:
        """Create the streams and the consumer group if missing (idempotent)."""
        for prio in PRIORITIES:
            try:
                self.r.xgroup_create(self.stream(prio), self.group, id="0", mkstream=True)
            except Exception as e:  # BUSYGROUP: already there
                if "BUSYGROUP" not in str(e):
                    raise

    # ---- gateway side ---------------------------------------------------------------------------------------
    def submit(self, request: ReconRequest) -> tuple[str, bool]:
        """Queue a job; returns (job id, created). An equal live job is returned instead unless request.force."""
        self.ensure_groups()
        now = time.time()
        job_id = uuid.uuid4().hex
        dedup = request.dedup_hash()
        fields = {
            "id": job_id, "state": JobState.queued.value, "stage": "queued", "progress": "0",
            "priority": request.priority, "created_at": repr(now), "updated_at": repr(now),
            "request": request.model_dump_json(), "dedup": dedup, "deliveries": "0", "cancel_requested": "0",
        }
        args: list[Any] = [job_id, "1" if request.force else "0", repr(now), f"{self.prefix}:job:"]
        for k, v in fields.items():
            args += [k, v]
        got_id, created = self._submit(keys=[f"{self.prefix}:dedup:{dedup}", self.job_key(job_id),
                                             self.stream(request.priority), self.index_key], args=args)
        if created:
            self.publish(got_id)
        return got_id, bool(created)

    def get(self, job_id: str) -> dict | None:
        """The decoded job record, or None if unknown (or expired)."""
        raw = self.r.hgetall(self.job_key(job_id))
        return self.decode(raw) if raw else None

    def list(self, state: str | None = None, priority: str | None = None, offset: int = 0,
             limit: int = 50) -> tuple[list[dict], int]:
        """Jobs, newest first, optionally filtered by state and priority; returns (page, total matching)."""
        if state is None and priority is None:
            total = self.r.zcard(self.index_key)
            ids = self.r.zrevrange(self.index_key, offset, offset + limit - 1)
            records = self._records(ids)
            return [rec for rec in records if rec is not None], total
        ids = self.r.zrevrange(self.index_key, 0, -1)
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.job_key(job_id), "state", "priority")
        matching = []
        stale = []
        for job_id, (st, pr) in zip(ids, pipe.execute()):
            if st is None:
                stale.append(job_id)
                continue
            if (state is None or st == state) and (priority is None or pr == priority):
                matching.append(job_id)
        if stale:
            self.r.zrem(self.index_key, *stale)
        page = [rec for rec in self._records(matching[offset:offset + limit]) if rec is not None]
        return page, len(matching)

    def _records(self, ids: list[str]) -> list[dict | None]:
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.job_key(job_id))
        return [self.decode(raw) if raw else None for raw in pipe.execute()]

    def cancel(self, job_id: str) -> str:
        """Cancel: a queued job ends now; a running one gets a flag its worker reads between iterations.

        Returns 'cancelled', 'requested', 'terminal' (already finished) or 'missing'.
        """
        outcome = self._cancel(keys=[self.job_key(job_id), self.stats_key],
                               args=[repr(time.time()), self.s.job_ttl_s])
        if outcome in ("cancelled", "requested"):
            self.publish(job_id)
        return outcome

    def dead_letters(self, count: int = 100) -> list[dict]:
        """The latest dead-letter entries (job, reason, deliveries, at)."""
        return [dict(fields, entry=eid) for eid, fields in self.r.xrevrange(self.dead_key, count=count)]

    def stats(self) -> dict:
        """Queue depth and counters for /metrics."""
        out: dict[str, Any] = {"streams": {}, "finished": {}, "dead_letters": 0, "workers": {}}
        pipe = self.r.pipeline(transaction=False)
        for prio in PRIORITIES:
            pipe.xlen(self.stream(prio))
        pipe.xlen(self.dead_key)
        pipe.hgetall(self.stats_key)
        pipe.hgetall(self.workers_key)
        res = pipe.execute()
        for prio, n in zip(PRIORITIES, res[:2]):
            out["streams"][prio] = {"length": n, "pending": 0}
            try:
                for g in self.r.xinfo_groups(self.stream(prio)):
                    if g["name"] == self.group:
                        out["streams"][prio]["pending"] = g["pending"]
            except Exception:  # stream not created yet
                pass
        out["dead_letters"] = res[2]
        out["finished"] = {k: int(v) for k, v in res[3].items()}
        out["workers"] = {k: float(v) for k, v in res[4].items()}
        return out

    # ---- events ---------------------------------------------------------------------------------------------
    def publish(self, job_id: str) -> None:
        """Publish the current record on the job's channel (the events endpoint forwards it)."""
        rec = self.get(job_id)
        if rec is not None:
            self.r.publish(self.channel(job_id), json.dumps(rec))

    def decode(self, raw: dict[str, str]) -> dict:
        """Hash fields (strings) -> the JobStatus shape (numbers, dicts, browser URL)."""
        def num(key):
            v = raw.get(key)
            return float(v) if v not in (None, "") else None

        result_path = raw.get("result_path") or None
        return {
            "id": raw.get("id"),
            "state": raw.get("state"),
            "stage": raw.get("stage") or None,
            "progress": min(1.0, max(0.0, num("progress") or 0.0)),
            "priority": raw.get("priority", "normal"),
            "created_at": num("created_at"),
            "started_at": num("first_started_at"),
            "finished_at": num("finished_at"),
            "timings": json.loads(raw["timings"]) if raw.get("timings") else {},
            "error": raw.get("error") or None,
            "cancel_requested": raw.get("cancel_requested") == "1",
            "deliveries": int(raw.get("deliveries") or 0),
            "worker": raw.get("worker") or None,
            "result_path": result_path,
            "browser_url": f"{self.s.browser_base}/ui/browse/{result_path}" if result_path else None,
            "result": json.loads(raw["result"]) if raw.get("result") else None,
            "request": json.loads(raw["request"]) if raw.get("request") else None,
        }

    # ---- worker side ----------------------------------------------------------------------------------------
    def claim(self, consumer: str, block_ms: int) -> list[Delivery]:
        """Next deliveries for `consumer`: stale high, new high, stale normal, new normal, then block on both.

        Stale = pending on another consumer and idle longer than claim_idle_s (its worker died): XAUTOCLAIM.
        Usually returns one delivery; the final blocking read can return one per stream.
        """
        idle_ms = int(self.s.claim_idle_s * 1000)
        for prio in PRIORITIES:
            stream = self.stream(prio)
            _, entries, *_ = self.r.xautoclaim(stream, self.group, consumer, idle_ms, "0-0", count=1)
            entries = [e for e in entries if e]
            if entries:
                return [self._delivery(prio, entries[0])]
            got = self.r.xreadgroup(self.group, consumer, {stream: ">"}, count=1)
            if got:
                return [self._delivery(prio, got[0][1][0])]
        got = self.r.xreadgroup(self.group, consumer, {self.stream(p): ">" for p in PRIORITIES}, count=1,
                                block=block_ms)
        out = []
        for stream, entries in got or []:
            prio = stream.rsplit(":", 1)[-1]
            out += [self._delivery(prio, e) for e in entries]
        out.sort(key=lambda d: PRIORITIES.index(d.priority))
        return out

    def _delivery(self, priority: str, entry) -> Delivery:
        entry_id, fields = entry
        stream = self.stream(priority)
        info = self.r.xpending_range(stream, self.group, entry_id, entry_id, 1)
        n = int(info[0]["times_delivered"]) if info else 1
        return Delivery(job_id=fields.get("job", ""), priority=priority, stream=stream, entry_id=entry_id,
                        deliveries=n)

    def start(self, d: Delivery, consumer: str) -> str:
        """Mark the job running. Returns 'run', a terminal state or 'missing' (entry acked: skip it),
        'lost' (another worker owns it now) or 'dead' (delivery limit passed: call dead_letter)."""
        outcome = self._start(keys=[self.job_key(d.job_id), d.stream],
                              args=[self.group, d.entry_id, consumer, repr(time.time()), d.deliveries,
                                    self.s.max_deliveries])
        if outcome == "run":
            self.publish(d.job_id)
        return outcome

    def heartbeat(self, d: Delivery, consumer: str) -> bool:
        """Keep the entry claimed (reset its idle time); False if another worker has taken it over."""
        return bool(self._heartbeat(keys=[self.job_key(d.job_id), d.stream],
                                    args=[self.group, d.entry_id, consumer, repr(time.time())]))

    def progress(self, job_id: str, consumer: str, stage: str, fraction: float, timings: dict) -> bool:
        """Record stage/progress/timings and publish them; False if the job is no longer ours and running."""
        ok = self._progress(keys=[self.job_key(job_id)],
                            args=[consumer, "stage", stage, "progress", repr(float(fraction)),
                                  "timings", json.dumps(timings), "updated_at", repr(time.time())])
        if ok:
            self.publish(job_id)
        return bool(ok)

    def cancel_requested(self, job_id: str) -> bool:
        return self.r.hget(self.job_key(job_id), "cancel_requested") == "1"

    def finish(self, d: Delivery, consumer: str, state: str, **fields: Any) -> bool:
        """Terminal transition + XACK, only if `consumer` still owns the entry. Dicts are stored as JSON."""
        assert state in TERMINAL_STATES, state
        now = time.time()
        fields.setdefault("finished_at", now)
        fields.setdefault("updated_at", now)
        args: list[Any] = [self.group, d.entry_id, consumer, state, self.s.job_ttl_s]
        for k, v in fields.items():
            args += [k, json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else
                                                                             (repr(v) if isinstance(v, float)
                                                                              else str(v)))]
        ok = self._finish(keys=[self.job_key(d.job_id), d.stream, self.stats_key], args=args)
        if ok:
            self.publish(d.job_id)
        return bool(ok)

    def dead_letter(self, d: Delivery, consumer: str, reason: str) -> None:
        """Move a job that passed the delivery limit to the dead-letter stream and fail it with the reason."""
        self._dead(keys=[self.job_key(d.job_id), d.stream, self.stats_key, self.dead_key],
                   args=[self.group, d.entry_id, consumer, repr(time.time()), self.s.job_ttl_s, d.job_id, reason,
                         d.deliveries])
        self.publish(d.job_id)

    def requeue(self, d: Delivery, consumer: str, reason: str) -> bool:
        """Put a job we hold back at the end of its stream as queued (worker shutdown); False if not ours."""
        ok = self._requeue(keys=[self.job_key(d.job_id), d.stream],
                           args=[self.group, d.entry_id, consumer, repr(time.time()), d.job_id, reason])
        if ok:
            self.publish(d.job_id)
        return bool(ok)

    def release(self, d: Delivery) -> None:
        """Ack and drop an entry without touching its job (e.g. an entry with no job id)."""
        self.r.xack(d.stream, self.group, d.entry_id)
        self.r.xdel(d.stream, d.entry_id)

    def worker_seen(self, consumer: str, gone: bool = False) -> None:
        """Record that a worker is alive (or remove it when it exits cleanly)."""
        if gone:
            self.r.hdel(self.workers_key, consumer)
        else:
            self.r.hset(self.workers_key, consumer, repr(time.time()))


def connect(settings: Settings):
    """A redis-py client for the settings (decode_responses=True, short socket timeouts)."""
    import redis

    return redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_connect_timeout=2.0,
                                health_check_interval=30)
