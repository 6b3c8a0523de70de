"""Workers against real Redis and a real Tiled server: kill -9 recovery, SIGTERM, cancel, Tiled down, idempotence.

The runner is devtools.sim_runner:simulated_scan_job: it simulates a scan, runs the project's ER engine with the
cancel check between cycles, and publishes amplitude/phase to Tiled under results/<job id>. "Exactly one result" is
checked in Tiled by searching result containers whose metadata names the job.
"""
from __future__ import annotations

import logging
import time

import pytest
from fastapi.testclient import TestClient

from service_fixtures import (READ_KEY, SUBMIT_KEY, both_sides, drop_keys, make_settings, redis_available,  # noqa: F401
                              tiled, wait_for, worker_processes, worker_thread)

from contract.jobs import connect
from service.models import ReconRequest
from workers.io.tiled_store import read_result

MID_JOB_STAGES = ("cnn", "ifft", "refine", "strain", "publish")
ID01_REF = {"tiled_path": "raw/PtNP/PtNP_0001", "scan": "1.1", "detector": "mpx1x4"}


@pytest.fixture
def env(tiled):  # noqa: F811
    """(settings, queue) with the real Tiled server and an isolated Redis prefix."""
    if not redis_available():
        pytest.fail("Redis is not running on 127.0.0.1:6379")
    s = make_settings(tiled_url=tiled.url)
    client = connect(s)
    q = both_sides(client, s)
    q.ensure_groups()
    yield s, q
    client.close()
    drop_keys(s)


def submit(q, scan: int, cycles: int, size: int = 32, **kw) -> str:
    r = ReconRequest(scan={"tiled_path": "raw/sample", "scan": scan},
                     options={"method": "cnn-er", "er_cycles": cycles, "crop_size": [size] * 3}, **kw)
    return q.submit(r)[0]


def phasing_started(q, job: str, at_least: float = 0.05):
    rec = q.get(job)
    return rec["state"] == "running" and rec["stage"] == "phasing" and rec["progress"] >= at_least


def test_kill9_worker_mid_job_another_worker_finishes_exactly_one_result_in_tiled(tiled):  # noqa: F811
    """The real pipeline (workers.pipeline:run_job: ID01 scan from Tiled -> CNN -> ER -> strain -> Tiled) in
    worker subprocesses; the first is killed with SIGKILL during ER refinement."""
    s = make_settings(tiled_url=tiled.url, tiled_api_key=tiled.api_key, runner="workers.pipeline:run_job")
    client = connect(s)
    q = both_sides(client, s)
    q.ensure_groups()
    try:
        job = q.submit(ReconRequest(scan=ID01_REF, options={"method": "cnn-er", "er_cycles": 200, "crop_size": [32, 32, 32]}))[0]
        with worker_processes(s, "victim") as [victim]:
            # mid-job: past reading the scan (CNN, ER refinement, strain or publishing), not finished
            wait_for(lambda: q.get(job)["stage"] in MID_JOB_STAGES, 180, what="the victim to be mid-job")
            victim.kill9()
            t_kill = time.time()
            at_kill = q.get(job)
        assert at_kill["state"] == "running" and at_kill["stage"] in MID_JOB_STAGES
        assert q.get(job)["state"] == "running"  # the record still says running: nobody told Redis
        with worker_processes(s, "rescuer") as [rescuer]:
            wait_for(lambda: q.get(job)["state"] in ("succeeded", "failed"), 240, what="the rescuer to finish")
            started = [e for e in rescuer.lines() if e.get("msg") == "job started" and e.get("job_id") == job]
        rec = q.get(job)
        assert rec["state"] == "succeeded", rec["error"]
        assert rec["worker"] == "rescuer" and rec["deliveries"] == 2
        assert started and started[0]["deliveries"] == 2
        assert started[0]["ts"] - t_kill < 30  # taken over well within 30 s (claim_idle_s is 1.5 s here)
        assert {"read", "cnn", "refine", "strain", "publish"} <= set(rec["timings"])
        # exactly one result in Tiled: the job's key appears once under its scan, and it is complete
        path = rec["result_path"]
        assert path.endswith(job)
        tc = tiled.client()
        parent = tc["/".join(path.split("/")[:-1])]
        assert list(parent).count(job) == 1
        arrays, meta = read_result(tc, path)
        assert arrays["object"].shape[1:] == (32, 32) and meta["recipe"] == "ER**200"
    finally:
        client.close()
        drop_keys(s)


def test_sigterm_requeues_running_job_and_grace_lets_a_short_job_finish(env, tiled):  # noqa: F811
    s, q = env
    long_job = submit(q, 2, cycles=2000)
    with worker_processes(s, "stopper") as [w]:
        wait_for(lambda: phasing_started(q, long_job), 60, what="the job to be phasing")
        assert w.terminate(timeout=20) == 0
        assert w.logged("job requeued on shutdown", long_job)
        lines = w.lines()
    assert all("raw" not in e for e in lines), "every log line is JSON"
    assert all(e["worker"] == "stopper" for e in lines)
    rec = q.get(long_job)
    assert rec["state"] == "queued" and rec["stage"].startswith("requeued") and rec["progress"] == 0
    assert tiled.results_for(long_job) == []
    drop_keys(s)  # the requeued job is proven; a short one checks the grace period
    q.ensure_groups()
    short_job = submit(q, 3, cycles=150)
    with worker_processes(s, "graceful", extra_args=("--grace", "60")) as [w]:
        wait_for(lambda: q.get(short_job)["state"] == "running", 60, what="the short job to start")
        assert w.terminate(timeout=60) == 0
    rec = q.get(short_job)
    assert rec["state"] == "succeeded" and rec["worker"] == "graceful"
    assert tiled.results_for(short_job) == [short_job]


def test_cancel_stops_running_job_between_iterations_without_result(env, tiled):  # noqa: F811
    s, q = env
    job = submit(q, 4, cycles=5000)
    with worker_thread(s, "canceller"):
        wait_for(lambda: phasing_started(q, job, 0.02), 60, what="the job to be phasing")
        assert q.cancel(job) == "requested"
        wait_for(lambda: q.get(job)["state"] == "cancelled", 20, what="the cancel to take effect")
    rec = q.get(job)
    assert rec["progress"] < 1 and "cancelled by request during stage 'phasing'" in rec["error"]
    assert "phasing" in rec["timings"] and rec["cancel_requested"]
    assert tiled.results_for(job) == []
    assert q.stats()["streams"]["normal"] == {"length": 0, "pending": 0}


def test_tiled_down_retries_with_backoff_then_fails_clearly_gateway_stays_up(caplog):
    if not redis_available():
        pytest.fail("Redis is not running on 127.0.0.1:6379")
    s = make_settings()  # tiled_url points at a free port: nothing listens there
    from service.app import create_app

    try:
        with TestClient(create_app(s)) as api:
            r = api.post("/api/v1/reconstructions", headers={"X-API-Key": SUBMIT_KEY},
                         json={"scan": {"tiled_path": "raw/sample", "scan": 5}, "options": {"method": "cnn-er", "er_cycles": 5}})
            assert r.status_code == 202
            job = r.json()["id"]
            with caplog.at_level(logging.WARNING, logger="bcdi.worker"), worker_thread(s, "no-tiled"):
                wait_for(lambda: api.get(f"/api/v1/reconstructions/{job}",
                                         headers={"X-API-Key": READ_KEY}).json()["state"] == "failed", 30,
                         what="the job to fail")
            rec = api.get(f"/api/v1/reconstructions/{job}", headers={"X-API-Key": READ_KEY}).json()
            assert f"Tiled at {s.tiled_url}" in rec["error"] and "gave up after 3 attempts" in rec["error"]
            assert "stage 'read'" in rec["error"]
            retries = [r for r in caplog.records if r.getMessage() == "transient failure, retrying"]
            assert [r.fields["delay_s"] for r in retries] == [0.2, 0.4]  # exponential back-off
            assert all(r.fields["job_id"] == job for r in retries)
            health = api.get("/health", headers={"X-API-Key": READ_KEY})
            assert health.status_code == 503
            body = health.json()
            assert body["status"] == "degraded" and body["checks"]["redis"]["ok"]
            assert not body["checks"]["tiled"]["ok"] and s.tiled_url in body["checks"]["tiled"]["error"]
            # the gateway keeps accepting work while Tiled is down
            r2 = api.post("/api/v1/reconstructions", headers={"X-API-Key": SUBMIT_KEY},
                          json={"scan": {"tiled_path": "raw/sample", "scan": 6}})
            assert r2.status_code == 202
    finally:
        drop_keys(s)


def test_job_delivered_again_after_success_leaves_one_result(env, tiled):  # noqa: F811
    s, q = env
    job = submit(q, 7, cycles=20, size=16)
    with worker_thread(s, "first"):
        wait_for(lambda: q.get(job)["state"] == "succeeded", 60, what="the job to succeed")
    # the same job id arrives again (e.g. re-submitted by hand into the stream): skipped, nothing re-published
    q.redis.xadd(q.stream("normal"), {"job": job})
    from workers.worker import Worker

    w = Worker(s, runner=lambda *a: pytest.fail("a finished job must not run again"), name="second")
    [d] = q.claim("second", block_ms=100)
    assert w.process(d) == "skipped:succeeded"
    assert q.stats()["streams"]["normal"]["length"] == 0
    assert tiled.results_for(job) == [job]
    # a delivery that died half-way through publishing left an incomplete container: the re-run replaces it
    from devtools.sim_runner import simulated_scan_job

    c = tiled.client()
    c["results"].create_container(key="partial0job", metadata={"job_id": "partial0job", "complete": False})
    spec = {"job_id": "partial0job", "scan": {"tiled_path": "raw/x", "scan": 1},
            "options": {"method": "cnn-er", "er_cycles": 3, "crop_size": [16, 16, 16]}, "tiled": {"url": tiled.url,
                                                                              "api_key": tiled.api_key}}
    out = simulated_scan_job(spec, lambda stage, f: None, lambda: False)
    assert out["tiled_path"] == "results/partial0job" and not out.get("reused")
    assert tiled.results_for("partial0job") == ["partial0job"]
    assert c["results"]["partial0job"].metadata["complete"]
    again = simulated_scan_job(spec, lambda stage, f: None, lambda: False)
    assert again["reused"] and tiled.results_for("partial0job") == ["partial0job"]


def test_runner_input_error_fails_job_at_once_with_stage_in_message(env):
    s, q = env
    job = submit(q, 8, cycles=5)

    def runner(spec, progress, should_cancel):
        progress("preprocess", 0.0)
        raise ValueError(f"crop {spec['options']['crop_size']} is larger than the detector")

    with worker_thread(s, "strict", runner=runner):
        wait_for(lambda: q.get(job)["state"] == "failed", 20, what="the job to fail")
    rec = q.get(job)
    assert rec["error"] == ("stage 'preprocess' failed: ValueError: crop [32, 32, 32] is larger than the detector")
    assert rec["deliveries"] == 1  # not retried: bad input does not get better


def test_device_auto_picks_cuda_only_when_present():
    import torch

    from workers.worker import detect_device

    assert detect_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert detect_device("cuda:1") == "cuda:1"
