"""The gateway's side of the job queue: submit, read, list and cancel jobs; queue depth for /metrics.

The Redis layout, the job record and the Lua scripts are the shared job contract (contract.jobs); the workers'
side is workers.queue.JobConsumer.
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from contract.jobs import PRIORITIES, JobState, JobStore, lua_script
from service.models import ReconRequest


class JobProducer(JobStore):
    """Queue operations of the gateway. Takes a redis-py client created with decode_responses=True."""

    def __init__(self, client, settings):
        super().__init__(client, settings)
        self._submit = client.register_script(lua_script("submit"))
        self._cancel = client.register_script(lua_script("cancel"))

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
        raw = self.redis.hgetall(self.job_key(job_id))
        return self.decode(raw) if raw else None

    def list(self, state: str | None = None, priority: str | None = None, offset: int = 0,
             limit: int = 50) -> tuple[list[dict], int]:
        """Jobs, newest first, optionally filtered by state and priority; returns (page, total matching)."""
        if state is None and priority is None:
            total = self.redis.zcard(self.index_key)
            ids = self.redis.zrevrange(self.index_key, offset, offset + limit - 1)
            records = self._records(ids)
            return [rec for rec in records if rec is not None], total
        ids = self.redis.zrevrange(self.index_key, 0, -1)
        pipe = self.redis.pipeline(transaction=False)
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
            self.redis.zrem(self.index_key, *stale)
        page = [rec for rec in self._records(matching[offset:offset + limit]) if rec is not None]
        return page, len(matching)

    def _records(self, ids: list[str]) -> list[dict | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.job_key(job_id))
        return [self.decode(raw) if raw else None for raw in pipe.execute()]

    def cancel(self, job_id: str) -> str:
        """Cancel: a queued job ends now; a running one gets a flag its worker reads between iterations.

        Returns 'cancelled', 'requested', 'terminal' (already finished) or 'missing'.
        """
        outcome = self._cancel(keys=[self.job_key(job_id), self.stats_key],
                               args=[repr(time.time()), self.settings.job_ttl_s])
        if outcome in ("cancelled", "requested"):
            self.publish(job_id)
        return outcome

    def dead_letters(self, count: int = 100) -> list[dict]:
        """The latest dead-letter entries (job, reason, deliveries, at)."""
        return [dict(fields, entry=eid) for eid, fields in self.redis.xrevrange(self.dead_key, count=count)]

    def stats(self) -> dict:
        """Queue depth and counters for /metrics."""
        out: dict[str, Any] = {"streams": {}, "finished": {}, "dead_letters": 0, "workers": {}}
        pipe = self.redis.pipeline(transaction=False)
        for prio in PRIORITIES:
            pipe.xlen(self.stream(prio))
        pipe.xlen(self.dead_key)
        pipe.hgetall(self.stats_key)
        pipe.hgetall(self.workers_key)
        res = pipe.execute()
        for prio, n in zip(PRIORITIES, res[:2]):
            out["streams"][prio] = {"length": n, "pending": 0}
            if self.redis.exists(self.stream(prio)):  # absent until the first submit or worker start
                for g in self.redis.xinfo_groups(self.stream(prio)):
                    if g["name"] == self.group:
                        out["streams"][prio]["pending"] = g["pending"]
        out["dead_letters"] = res[2]
        out["finished"] = {k: int(v) for k, v in res[3].items()}
        out["workers"] = {k: float(v) for k, v in res[4].items()}
        return out
