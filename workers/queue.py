"""The workers' side of the job queue: claim deliveries, mark them running, heartbeat, progress, finish.

The Redis layout, the job record and the Lua scripts are the shared job contract (contract.jobs); the gateway's
side is service.queue.JobProducer.
"""
from __future__ import annotations

import json
import time
from typing import Any

from contract.jobs import PRIORITIES, TERMINAL_STATES, Delivery, JobStore, lua_script


class JobConsumer(JobStore):
    """Queue operations of a worker. Takes a redis-py client created with decode_responses=True."""

    def __init__(self, client, settings):
        super().__init__(client, settings)
        self._start = client.register_script(lua_script("start"))
        self._heartbeat = client.register_script(lua_script("heartbeat"))
        self._progress = client.register_script(lua_script("progress"))
        self._finish = client.register_script(lua_script("finish"))
        self._dead = client.register_script(lua_script("dead_letter"))
        self._requeue = client.register_script(lua_script("requeue"))

    def claim(self, consumer: str, block_ms: int) -> list[Delivery]:
        """Next deliveries for `consumer`: stale high, new high, stale normal, new normal, then block on both.

        Stale = pending on another consumer and idle longer than claim_idle_s (its worker died): XAUTOCLAIM.
        Usually returns one delivery; the final blocking read can return one per stream.
        """
        idle_ms = int(self.settings.claim_idle_s * 1000)
        for prio in PRIORITIES:
            stream = self.stream(prio)
            _, entries, *_ = self.redis.xautoclaim(stream, self.group, consumer, idle_ms, "0-0", count=1)
            entries = [e for e in entries if e]
            if entries:
                return [self._delivery(prio, entries[0])]
            got = self.redis.xreadgroup(self.group, consumer, {stream: ">"}, count=1)
            if got:
                return [self._delivery(prio, got[0][1][0])]
        got = self.redis.xreadgroup(self.group, consumer, {self.stream(p): ">" for p in PRIORITIES}, count=1,
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
        info = self.redis.xpending_range(stream, self.group, entry_id, entry_id, 1)
        n = int(info[0]["times_delivered"]) if info else 1
        return Delivery(job_id=fields.get("job", ""), priority=priority, stream=stream, entry_id=entry_id,
                        deliveries=n)

    def start(self, d: Delivery, consumer: str) -> str:
        """Mark the job running. Returns 'run', a terminal state or 'missing' (entry acked: skip it),
        'lost' (another worker owns it now) or 'dead' (delivery limit passed: call dead_letter)."""
        outcome = self._start(keys=[self.job_key(d.job_id), d.stream],
                              args=[self.group, d.entry_id, consumer, repr(time.time()), d.deliveries,
                                    self.settings.max_deliveries])
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
        return self.redis.hget(self.job_key(job_id), "cancel_requested") == "1"

    def finish(self, d: Delivery, consumer: str, state: str, **fields: Any) -> bool:
        """Terminal transition + XACK, only if `consumer` still owns the entry. Dicts are stored as JSON."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"finish() needs a terminal state ({', '.join(sorted(TERMINAL_STATES))}), got {state!r}")
        now = time.time()
        fields.setdefault("finished_at", now)
        fields.setdefault("updated_at", now)
        args: list[Any] = [self.group, d.entry_id, consumer, state, self.settings.job_ttl_s]
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
                   args=[self.group, d.entry_id, consumer, repr(time.time()), self.settings.job_ttl_s, d.job_id, reason,
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
        self.redis.xack(d.stream, self.group, d.entry_id)
        self.redis.xdel(d.stream, d.entry_id)

    def worker_seen(self, consumer: str, gone: bool = False) -> None:
        """Record that a worker is alive (or remove it when it exits cleanly)."""
        if gone:
            self.redis.hdel(self.workers_key, consumer)
        else:
            self.redis.hset(self.workers_key, consumer, repr(time.time()))
