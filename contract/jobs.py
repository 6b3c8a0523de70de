"""Job states, the Redis layout of the queue and the job record, and the Lua scripts of every state transition.

Layout (prefix P = settings.key_prefix):
  P:jobs:high, P:jobs:normal   streams of {job: <id>} entries, consumer group settings.consumer_group
  P:job:<id>                   job-state hash (state, stage, progress, timings, error, result path, ...)
  P:index                      sorted set of job ids by submission time (listing, paging)
  P:dedup:<hash>               job id of the last job with this scan + options
  P:dead                       dead-letter stream: {job, reason, deliveries, at}
  P:events:<id>                pub/sub channel; every change of the job record is published there as JSON
  P:stats, P:workers           finished-job counters, worker last-seen times (for /metrics and /health)

Every state transition is one Lua script (contract/lua/*.lua), so a transition and the stream bookkeeping
(XACK/XADD) happen together. Worker-side transitions check that the worker still owns the stream entry
(XPENDING), which fences a worker that lost its claim (paused past claim_idle_s) from overwriting the job of the
worker that took over. Results are never stored here: only their Tiled path and a small JSON summary.
The gateway's side is service.queue.JobProducer, the workers' side workers.queue.JobConsumer; both derive from
`JobStore` here, so the layout and the record format have one definition.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from importlib.resources import files

from contract.settings import Settings

PRIORITIES = ("high", "normal")  # read order
_OWNER_CHECK_LINE = "--@owner_check "


class JobState(str, Enum):
    """Life cycle of a job: queued -> running -> succeeded | failed | cancelled (running may go back to queued)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATES = frozenset({JobState.succeeded.value, JobState.failed.value, JobState.cancelled.value})


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to a worker: which job, from where, and how often the stream delivered it."""

    job_id: str
    priority: str
    stream: str
    entry_id: str
    deliveries: int


@lru_cache(maxsize=None)
def lua_script(name: str) -> str:
    """The text of contract/lua/<name>.lua (package data), with its `--@owner_check <value>` line expanded."""
    text = files("contract").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        if line.startswith(_OWNER_CHECK_LINE):
            value = line[len(_OWNER_CHECK_LINE):].strip()
            check = files("contract").joinpath("lua", "owner_check.lua").read_text(encoding="utf-8")
            line = "\n".join(x for x in check.splitlines() if not x.startswith("--")).replace("@LOST", value)
        lines.append(line)
    return "\n".join(lines) + "\n"


def connect(settings: Settings):
    """A redis-py client for the settings (decode_responses=True, short socket timeouts)."""
    import redis

    return redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_connect_timeout=2.0,
                                health_check_interval=30)


class JobStore:
    """Key names, consumer groups and the job record: what the gateway's and the workers' sides share.

    Takes a redis-py client created with decode_responses=True (see `connect`).
    """

    def __init__(self, client, settings: Settings):
        self.redis = client
        self.settings = settings
        p = settings.key_prefix
        self.prefix = p
        self.group = settings.consumer_group
        self.index_key = f"{p}:index"
        self.dead_key = f"{p}:dead"
        self.stats_key = f"{p}:stats"
        self.workers_key = f"{p}:workers"
        self._ensure_groups = client.register_script(lua_script("ensure_groups"))

    # ---- key names ------------------------------------------------------------------------------------------
    def stream(self, priority: str) -> str:
        return f"{self.prefix}:jobs:{priority}"

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def channel(self, job_id: str) -> str:
        return f"{self.prefix}:events:{job_id}"

    def ensure_groups(self) -> int:
        """Create the streams and the consumer group where missing (atomic, idempotent); returns how many."""
        return int(self._ensure_groups(keys=[self.stream(p) for p in PRIORITIES], args=[self.group]))

    def groups_missing(self) -> bool:
        """True when a stream or its consumer group is gone (Redis restarted without its data)."""
        for prio in PRIORITIES:
            stream = self.stream(prio)
            if not self.redis.exists(stream):
                return True
            if not any(g["name"] == self.group for g in self.redis.xinfo_groups(stream)):
                return True
        return False

    # ---- the job record -------------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict | None:
        """The decoded job record, or None if unknown (or expired)."""
        raw = self.redis.hgetall(self.job_key(job_id))
        return self.decode(raw) if raw else None

    def publish(self, job_id: str) -> None:
        """Publish the current record on the job's channel (the events endpoint forwards it)."""
        rec = self.get(job_id)
        if rec is not None:
            self.redis.publish(self.channel(job_id), json.dumps(rec))

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
            "browser_url": f"{self.settings.browser_base}/ui/browse/{result_path}" if result_path else None,
            "result": json.loads(raw["result"]) if raw.get("result") else None,
            "request": json.loads(raw["request"]) if raw.get("request") else None,
        }
