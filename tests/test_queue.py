"""The Redis Streams job queue against a real Redis: dedup, priorities, claims, recovery, dead letters, restart."""
from __future__ import annotations

import time
from contextlib import contextmanager

import pytest

from service_fixtures import (RedisServer, both_sides, make_settings, qsettings, queue, shared_tiled,  # noqa: F401
                              wait_for, worker_thread)

from contract.jobs import connect
from service.models import ReconRequest


def req(scan: int = 1, **kw) -> ReconRequest:
    return ReconRequest(scan={"tiled_path": "raw/sample", "scan": scan, "detector": "mpx1x4"}, **kw)


def test_submit_records_job_and_dedups_same_scan_and_options(queue):
    job, created = queue.submit(req(1))
    assert created
    rec = queue.get(job)
    assert rec["state"] == "queued" and rec["request"]["scan"]["scan"] == "1.1" and rec["created_at"] > 0
    # same scan + options, other priority: the existing job
    again, created2 = queue.submit(req(1, priority="high"))
    assert (again, created2) == (job, False)
    # other options: a new job; force: a new job too
    other, c3 = queue.submit(req(1, options={"er_cycles": 10}))
    forced, c4 = queue.submit(req(1, force=True))
    assert c3 and c4 and len({job, other, forced}) == 3
    # a cancelled job does not block a new submission
    assert queue.cancel(forced) == "cancelled"
    assert queue.get(forced)["state"] == "cancelled"
    fresh, c5 = queue.submit(req(1))
    assert c5 and fresh != forced
    items, total = queue.list()
    assert total == 4 and [i["id"] for i in items][0] == fresh
    items, total = queue.list(state="cancelled")
    assert total == 1 and items[0]["id"] == forced


def test_high_priority_is_read_first(queue):
    normal = [queue.submit(req(i))[0] for i in range(3)]
    high, _ = queue.submit(req(99, priority="high"))
    got = queue.claim("c1", block_ms=50)
    assert [d.job_id for d in got] == [high]
    order = [queue.claim("c1", block_ms=50)[0].job_id for _ in range(3)]
    assert order == normal  # FIFO inside a priority
    assert queue.claim("c1", block_ms=50) == []


def test_dead_consumer_entry_is_reclaimed_after_idle_and_heartbeat_prevents_it(queue, qsettings):
    job, _ = queue.submit(req(5))
    [d1] = queue.claim("alive", block_ms=50)
    assert queue.start(d1, "alive") == "run"
    # while "alive" heartbeats, nobody else can take it, even well past claim_idle_s
    t_end = time.monotonic() + 2 * qsettings.claim_idle_s
    while time.monotonic() < t_end:
        assert queue.heartbeat(d1, "alive")
        t_last_beat = time.monotonic()
        assert queue.claim("other", block_ms=10) == []
        time.sleep(qsettings.heartbeat_s)
    # "alive" stops heartbeating (it died): after claim_idle_s another consumer takes it over
    got = wait_for(lambda: queue.claim("other", block_ms=10), 30, what="XAUTOCLAIM of the idle entry")
    waited = time.monotonic() - t_last_beat
    assert [d.job_id for d in got] == [job] and got[0].deliveries == 2
    assert qsettings.claim_idle_s * 0.9 <= waited < 30
    # the dead worker, if it came back, is fenced off
    assert not queue.heartbeat(d1, "alive")
    assert not queue.finish(d1, "alive", "succeeded")
    assert queue.start(got[0], "other") == "run"
    assert queue.finish(got[0], "other", "succeeded", result_path="results/x")
    rec = queue.get(job)
    assert rec["state"] == "succeeded" and rec["worker"] == "other" and rec["deliveries"] == 2


def test_delivery_limit_sends_job_to_dead_letter_with_reason(qsettings):
    s = make_settings(key_prefix=qsettings.key_prefix, max_deliveries=2, claim_idle_s=0.4, heartbeat_s=0.1)
    q = both_sides(connect(s), s)
    job, _ = q.submit(req(7))
    # two workers take it and die without a trace (no heartbeat, no ack)
    for consumer in ("doomed-1", "doomed-2"):
        d = wait_for(lambda: q.claim(consumer, block_ms=10), 10, what=f"delivery to {consumer}")[0]
        assert q.start(d, consumer) == "run"
    # the third delivery passes the limit: a real worker dead-letters it instead of running it
    from workers.worker import Worker

    w = Worker(s, runner=lambda *a: pytest.fail("a dead-lettered job must not run"), name="third")
    d3 = wait_for(lambda: q.claim("third", block_ms=10), 10, what="third delivery")[0]
    assert d3.deliveries == 3
    assert w.process(d3) == "dead-letter"
    rec = q.get(job)
    assert rec["state"] == "failed" and "delivery limit" in rec["error"] and "max_deliveries=2" in rec["error"]
    [dead] = q.dead_letters()
    assert dead["job"] == job and dead["deliveries"] == "3" and "delivery limit" in dead["reason"]
    assert q.stats()["streams"]["normal"] == {"length": 0, "pending": 0}


def test_cancelled_queued_job_is_acked_and_skipped_by_worker(queue):
    job, _ = queue.submit(req(8))
    assert queue.cancel(job) == "cancelled"
    assert queue.cancel(job) == "terminal"
    assert queue.cancel("0" * 32) == "missing"
    [d] = queue.claim("w", block_ms=50)
    assert queue.start(d, "w") == "cancelled"
    assert queue.stats()["streams"]["normal"]["length"] == 0


@contextmanager
def own_redis_queue():
    """A private Redis (append-only, so it can be killed and restarted) with the shared Tiled: (server, s, q, tiled)."""
    tiled = shared_tiled()
    server = RedisServer().start()
    try:
        s = make_settings(redis_url=server.url, tiled_url=tiled.url)
        q = both_sides(connect(s), s)
        q.ensure_groups()
        yield server, s, q, tiled
    finally:
        server.stop()


def test_redis_restart_with_append_only_file_loses_no_job(tmp_path):
    """kill -9 of a Redis with appendonly yes + appendfsync always: queued, running and finished jobs survive,
    and a worker then completes every unfinished job exactly once (results in a real Tiled)."""
    with own_redis_queue() as (server, s, q, tiled):
        jobs = [q.submit(req(100 + i, options={"er_cycles": 5, "crop_size": [16, 16, 16]}))[0] for i in range(5)]
        high, _ = q.submit(req(200, priority="high", options={"er_cycles": 5, "crop_size": [16, 16, 16]}))
        [inflight] = q.claim("crashed-worker", block_ms=50)  # one job was running when Redis died
        assert inflight.job_id == high and q.start(inflight, "crashed-worker") == "run"
        server.kill9()
        with pytest.raises(Exception):
            q.get(jobs[0])
        server.start()  # same --dir: replays the append-only file
        q = both_sides(connect(s), s)
        assert all(q.get(j)["state"] == "queued" for j in jobs)
        assert q.get(high)["state"] == "running"
        st = q.stats()["streams"]
        assert st["normal"]["length"] == 5 and st["high"] == {"length": 1, "pending": 1}
        with worker_thread(s, "after-restart"):
            wait_for(lambda: all(q.get(j)["state"] == "succeeded" for j in [*jobs, high]), 60,
                     what="all jobs to finish after the Redis restart")
        assert q.get(high)["deliveries"] == 2  # re-delivered from the crashed worker's pending entry
        for j in [*jobs, high]:
            assert tiled.results_for(j) == [j]


def test_settings_from_file_and_env(tmp_path, monkeypatch):
    from contract.settings import load_settings

    cfg = tmp_path / "service.toml"
    cfg.write_text('redis_url = "redis://127.0.0.1:6379/3"\nheartbeat_s = 2\nsubmit_api_keys = ["a", "b"]\n')
    monkeypatch.setenv("BCDI_HEARTBEAT_S", "3")
    monkeypatch.setenv("BCDI_READ_API_KEYS", "r1, r2")
    s = load_settings(cfg)
    assert s.redis_url.endswith("/3") and s.heartbeat_s == 3.0  # environment wins over the file
    assert s.submit_api_keys == ["a", "b"] and s.read_api_keys == ["r1", "r2"]
    with pytest.raises(ValueError, match="claim_idle_s"):
        load_settings(cfg, heartbeat_s=20)
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml")


def test_worker_rides_out_a_redis_restart_mid_job(caplog):
    """A live worker keeps going through a Redis kill -9 + restart (append-only file): the job it was running is
    recorded once Redis is back, queued jobs are done afterwards, every job has exactly one Tiled result."""
    import logging

    with own_redis_queue() as (server, s, q, tiled):
        opts = {"er_cycles": 300, "crop_size": [24, 24, 24]}
        jobs = [q.submit(req(300 + i, options=opts))[0] for i in range(4)]
        with caplog.at_level(logging.INFO, logger="bcdi.worker"), worker_thread(s, "survivor") as w:
            wait_for(lambda: w.current is not None, 30, what="the survivor to start a job")
            running = w.current.job_id
            server.kill9()
            time.sleep(1.0)
            server.start()
            wait_for(lambda: all(q.get(j)["state"] == "succeeded" for j in jobs), 90,
                     what="every job to finish after the restart")
        msgs = [r.getMessage() for r in caplog.records]
        assert "Redis unreachable; waiting" in msgs or "progress not recorded: Redis unreachable" in msgs
        assert q.get(running)["worker"] == "survivor"
        for j in jobs:
            assert tiled.results_for(j) == [j]
        assert q.stats()["streams"]["normal"] == {"length": 0, "pending": 0}
