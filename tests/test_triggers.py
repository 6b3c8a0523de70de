"""Triggers with real parts: a Bluesky RunEngine (ophyd.sim), a real gateway (uvicorn on loopback) on the real
Redis, and a real Tiled server with a Redis streaming cache that Bluesky's TiledWriter writes runs into."""
from __future__ import annotations

import gc
import logging
import socket
import threading
import time

import httpx
import pytest

from service_fixtures import READ_KEY, SUBMIT_KEY, RedisServer, drop_keys, free_port, make_settings, \
    redis_available, wait_for

bluesky = pytest.importorskip("bluesky")  # the bluesky extra; CI installs it
import bluesky.plan_stubs as bps  # noqa: E402
import bluesky.plans as bp  # noqa: E402
import bluesky.preprocessors as bpp  # noqa: E402
from bluesky import RunEngine  # noqa: E402
from ophyd.sim import det, motor  # noqa: E402

from service.triggers import BcdiSelector, BcdiTrigger, GatewaySubmitter, TiledWatcher  # noqa: E402

PLAN = "bcdi_rocking_scan"


# ---- a real gateway on loopback ----------------------------------------------------------------------------------
class Gateway:
    """The FastAPI gateway served by uvicorn in a thread, on a fresh key prefix of the shared Redis."""

    def __init__(self):
        import uvicorn

        from service.app import create_app

        self.settings = make_settings()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(self.settings), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 30, what="the gateway")

    def jobs(self) -> list[dict]:
        r = httpx.get(self.url + "/api/v1/reconstructions", headers={"X-API-Key": READ_KEY}, timeout=5)
        r.raise_for_status()
        return r.json()["items"]

    def stop(self):
        self.server.should_exit = True
        self.thread.join(15)
        drop_keys(self.settings)


@pytest.fixture(scope="module")
def gateway():
    if not redis_available():
        pytest.fail("Redis is not running on 127.0.0.1:6379 (start it: redis-server --daemonize yes)")
    g = Gateway()
    yield g
    g.stop()


@pytest.fixture
def fresh_gateway(gateway):
    """The module's gateway with its job list emptied (a fresh key prefix per test)."""
    drop_keys(gateway.settings)
    gateway.server.config.app.state.queue.ensure_groups()
    yield gateway


def scan_of(job: dict) -> dict:
    """The scan reference the gateway stored for a job (unset fields dropped)."""
    return {k: v for k, v in job["request"]["scan"].items() if v is not None}


def bcdi_scan(**md):
    return bp.scan([det], motor, -1, 1, 3, md={"plan_name": PLAN, **md})


# ---- RunEngine callback ------------------------------------------------------------------------------------------
def test_successful_bcdi_run_posts_exactly_one_job(fresh_gateway):
    submitter = GatewaySubmitter(fresh_gateway.url, SUBMIT_KEY, timeout=5)
    trigger = BcdiTrigger(submitter, BcdiSelector(plan_names=(PLAN,), options={"method": "cnn-er", "er_cycles": 50}))
    RE = RunEngine({}, context_managers=[])
    RE.subscribe(trigger)
    (uid,) = RE(bcdi_scan())
    (other,) = RE(bp.count([det], 2))  # not a BCDI plan
    assert submitter.flush(20)
    jobs = fresh_gateway.jobs()
    assert len(jobs) == 1
    assert scan_of(jobs[0]) == {"run_uid": uid}
    assert jobs[0]["request"]["options"]["er_cycles"] == 50
    assert [s.status for s in submitter.submissions] == ["sent"]
    assert submitter.submissions[0].job_id == jobs[0]["id"]
    assert (other, "not a BCDI plan (plan_name='count')") in trigger.skipped
    submitter.close()


def test_metadata_key_selects_and_names_the_tiled_scan(fresh_gateway):
    submitter = GatewaySubmitter(fresh_gateway.url, SUBMIT_KEY, timeout=5)
    RE = RunEngine({}, context_managers=[])
    RE.subscribe(BcdiTrigger(submitter, BcdiSelector(plan_names=(), md_key="bcdi")))
    ref = {"tiled_path": "raw/PtNP/PtNP_0001", "scan": 2, "detector": "mpx1x4"}
    RE(bp.count([det], 2, md={"bcdi": ref}))
    RE(bp.count([det], 2))  # neither plan name nor key: ignored
    assert submitter.flush(20)
    jobs = fresh_gateway.jobs()
    (job,) = jobs
    got = scan_of(job)
    assert got["tiled_path"] == ref["tiled_path"] and got["detector"] == ref["detector"]
    assert str(got["scan"]) in ("2", "2.1")  # the gateway may normalise scan 2 to the BLISS entry name
    submitter.close()


def test_failed_and_aborted_runs_post_nothing(fresh_gateway):
    submitter = GatewaySubmitter(fresh_gateway.url, SUBMIT_KEY, timeout=5)
    trigger = BcdiTrigger(submitter)
    RE = RunEngine({}, context_managers=[])
    RE.subscribe(trigger)
    stops = []
    RE.subscribe(lambda name, doc: stops.append(doc), "stop")

    @bpp.run_decorator(md={"plan_name": PLAN})
    def failing():
        yield from bps.trigger_and_read([det])
        raise RuntimeError("detector fault")

    with pytest.raises(RuntimeError, match="detector fault"):
        RE(failing())

    @bpp.run_decorator(md={"plan_name": PLAN})
    def pausing():
        yield from bps.trigger_and_read([det])
        yield from bps.checkpoint()
        yield from bps.pause()
        yield from bps.trigger_and_read([det])

    from bluesky.utils import RunEngineInterrupted

    with pytest.raises(RunEngineInterrupted):
        RE(pausing())
    assert RE.state == "paused"
    RE.abort("operator stopped the scan")
    assert [s["exit_status"] for s in stops] == ["fail", "abort"]
    assert submitter.flush(10)
    assert fresh_gateway.jobs() == []
    assert list(submitter.submissions) == []
    assert [why.split(" ")[0] for _, why in trigger.skipped] == ["exit_status='fail'", "exit_status='abort'"]
    submitter.close()


def test_duplicate_stop_documents_post_once(fresh_gateway):
    submitter = GatewaySubmitter(fresh_gateway.url, SUBMIT_KEY, timeout=5)
    trigger = BcdiTrigger(submitter)
    docs = []
    RE = RunEngine({}, context_managers=[])
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE.subscribe(trigger)
    RE(bcdi_scan())
    start = next(d for n, d in docs if n == "start")
    stop = next(d for n, d in docs if n == "stop")
    trigger("stop", stop)  # the same stop again (e.g. replayed by a document router)
    trigger("start", start)  # the whole run replayed
    trigger("stop", stop)
    assert submitter.flush(20)
    assert len(fresh_gateway.jobs()) == 1
    assert [s.status for s in submitter.submissions] == ["sent"]
    submitter.close()


@pytest.fixture
def silent_gateway():
    """A TCP port that accepts connections and never answers (a hung gateway)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


def test_hung_or_down_gateway_never_blocks_the_run_engine(silent_gateway, caplog):
    caplog.set_level(logging.WARNING, logger="bcdi.trigger")
    hung = GatewaySubmitter(silent_gateway, SUBMIT_KEY, timeout=4.0, attempts=2, backoff_s=0.5)
    down = GatewaySubmitter(f"http://127.0.0.1:{free_port()}", SUBMIT_KEY, timeout=1.0, attempts=2, backoff_s=0.1)
    RE = RunEngine({}, context_managers=[])
    RE.subscribe(BcdiTrigger(hung))
    RE.subscribe(BcdiTrigger(down))
    t0 = time.perf_counter()
    (uid,) = RE(bcdi_scan())
    scan_s = time.perf_counter() - t0
    # a blocking post to the hung gateway would take >= 2 x 4 s; the scan itself takes well under a second
    assert scan_s < 4.0, f"the RunEngine waited for the gateway ({scan_s:.1f} s)"
    assert RE.state == "idle"
    assert down.flush(15) and hung.flush(20)
    for sub in (hung, down):
        (miss,) = sub.submissions
        assert miss.status == "missed" and miss.run_uid == uid
        assert not sub.already_submitted(uid)  # a later stop or catch-up may try again
    assert "ReadTimeout" in hung.submissions[0].error
    assert "ConnectError" in down.submissions[0].error
    misses = [r for r in caplog.records if r.getMessage().startswith("trigger miss")]
    assert len(misses) == 2
    hung.close(1)
    down.close(1)


def test_bad_request_is_a_miss_not_an_exception(fresh_gateway, caplog):
    caplog.set_level(logging.WARNING, logger="bcdi.trigger")
    submitter = GatewaySubmitter(fresh_gateway.url, SUBMIT_KEY, timeout=5)
    RE = RunEngine({}, context_managers=[])
    # an option the gateway refuses (er_cycles < 0): one 422, no retry, logged
    RE.subscribe(BcdiTrigger(submitter, BcdiSelector(options={"er_cycles": -1})))
    RE(bcdi_scan())
    assert submitter.flush(20)
    (miss,) = submitter.submissions
    assert miss.status == "missed" and miss.http_status == 422 and "er_cycles" in miss.error
    assert fresh_gateway.jobs() == []
    with pytest.raises(ValueError, match="submit API key"):
        GatewaySubmitter(fresh_gateway.url, "")
    with pytest.raises(ValueError, match="plan names or a metadata key"):
        BcdiSelector(plan_names=(), md_key=None)
    submitter.close()


# ---- Tiled watcher -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiled_streaming(tmp_path_factory):
    """A real Tiled server (embedded config + SQL table store) with a private Redis as its streaming cache."""
    from devtools.tiled_server import TiledServer, embedded_config
    from devtools.stack import tiled_config_with_tables

    base = tmp_path_factory.mktemp("tiled-stream")
    redis_server = RedisServer().start()
    config = tiled_config_with_tables(embedded_config(), base / "tiled.yml")
    server = TiledServer(base / "data", base / "raw", config=config,
                         extra_env={"TILED_STREAMING_CACHE_URI": f"redis://127.0.0.1:{redis_server.port}/0"})
    try:
        server.start()
        yield server
    finally:
        server.stop()
        redis_server.stop()


def test_tiled_watcher_submits_runs_closed_by_tiled_writer(tiled_streaming, fresh_gateway):
    from bluesky.callbacks.tiled_writer import TiledWriter

    client = tiled_streaming.client()
    submitter = GatewaySubmitter(fresh_gateway.url, SUBMIT_KEY, timeout=5)
    # no reference kept to the watcher on purpose: Tiled holds callbacks weakly, the watcher must survive gc
    TiledWatcher(client, submitter, BcdiSelector(plan_names=(PLAN,)), mode="subscribe", catch_up=False).start()
    gc.collect()
    RE = RunEngine({}, context_managers=[])
    RE.subscribe(TiledWriter(client, batch_size=1))  # the only change at the beamline: runs go to Tiled

    @bpp.run_decorator(md={"plan_name": PLAN})
    def failing():
        yield from bps.trigger_and_read([det])
        raise RuntimeError("beam lost")

    with pytest.raises(RuntimeError):
        RE(failing())
    RE(bp.count([det], 2))  # not BCDI
    (uid,) = RE(bcdi_scan(sample="Au-NP-7"))
    wait_for(lambda: fresh_gateway.jobs(), 30, interval=0.2, what="the watcher's submission")
    assert submitter.flush(10)
    time.sleep(1.0)  # let any late (wrong) submission arrive
    jobs = fresh_gateway.jobs()
    assert [scan_of(j) for j in jobs] == [{"run_uid": uid}]
    stop_md = client[uid].metadata["stop"]
    assert stop_md["exit_status"] == "success"

    from service.triggers.tiled_watcher import _LIVE

    (watcher,) = [w for w in _LIVE if w.submitter is submitter]
    assert watcher.active_mode == "subscribe" and watcher.updates >= 2
    assert watcher.catch_up() == 0  # already submitted: dedup by run uid
    assert [s.status for s in submitter.submissions] == ["sent"]

    # a second watcher that only polls (as with a Tiled server without streaming cache) finds the same run;
    # its own dedup is fresh, so it posts, and the gateway returns the existing job
    poll_submitter = GatewaySubmitter(fresh_gateway.url, SUBMIT_KEY, timeout=5)
    with TiledWatcher(client, poll_submitter, BcdiSelector(plan_names=(PLAN,)), mode="poll", poll_s=0.5):
        assert poll_submitter.flush(20)
        (sub,) = poll_submitter.submissions
    assert sub.status == "sent" and sub.duplicate is True and sub.job_id == jobs[0]["id"]
    assert len(fresh_gateway.jobs()) == 1
    watcher.stop()
    assert watcher not in _LIVE
    submitter.close()
    poll_submitter.close()


def test_watcher_command_needs_a_submit_key():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("BCDI_")}
    r = subprocess.run([sys.executable, "-m", "cli.main", "watch"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == ("bcdi-recon: error: no gateway submit key: set BCDI_TRIGGER_API_KEY "
                                "(or trigger_api_key in the config file)")
    r = subprocess.run([sys.executable, "-m", "cli.main", "watch", "--help"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "examples:" in r.stdout and "BCDI_TRIGGER_API_KEY" in r.stdout


def test_trigger_and_demo_writer_are_bluesky_callbacks():
    """BcdiTrigger is a DocumentRouter (documents pass through unchanged); the demo's writer a CollectThenCompute."""
    from bluesky.callbacks.core import CollectThenCompute, DocumentRouter

    from cli.cmd_demo import id01_file_writer

    submitter = GatewaySubmitter("http://127.0.0.1:9", "k")
    trigger = BcdiTrigger(submitter, BcdiSelector(plan_names=("p",)))
    assert isinstance(trigger, DocumentRouter)
    start = {"uid": "3f2a9c1e-77aa-4b1e", "time": 0.0, "plan_name": "other"}
    assert trigger("start", start) == ("start", start)
    assert trigger("descriptor", {"uid": "d", "run_start": start["uid"]})[0] == "descriptor"
    trigger("stop", {"uid": "s", "run_start": start["uid"], "exit_status": "success"})
    assert trigger.skipped == [(start["uid"], "not a BCDI plan (plan_name='other')")]
    writer = id01_file_writer("/nonexistent", tiled_client=None)
    assert isinstance(writer, CollectThenCompute)
    writer("start", start)
    writer("event", {"data": {"mpx1x4": [[0]], "eta": 1.0}})
    writer("stop", {"uid": "s", "run_start": start["uid"], "exit_status": "abort"})  # not written: aborted
    assert writer.written == [] and len(writer._events) == 1
    writer("start", {**start, "uid": "second-run-0001"})  # a new run starts with nothing collected
    assert len(writer._events) == 0
    submitter.close()


def test_watch_command_configured_by_settings_submits_a_closed_run(tiled_streaming, fresh_gateway, tmp_path):
    """`bcdi-recon watch` as its own process, configured only through BCDI_* settings (one name each), finds a BCDI
    run that TiledWriter closed, posts it, and stops cleanly on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    from bluesky.callbacks.tiled_writer import TiledWriter

    client = tiled_streaming.client()
    RE = RunEngine({}, context_managers=[])
    RE.subscribe(TiledWriter(client, batch_size=1))
    (uid,) = RE(bcdi_scan(sample="watched"))  # closed before the watcher starts: found by its catch-up/poll
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCDI_")}
    env.update(BCDI_TILED_URL=tiled_streaming.uri, BCDI_TILED_API_KEY=tiled_streaming.api_key,
               BCDI_GATEWAY_URL=fresh_gateway.url, BCDI_TRIGGER_API_KEY=SUBMIT_KEY, BCDI_TRIGGER_MODE="poll",
               BCDI_TRIGGER_POLL_S="0.5", PYTHONUNBUFFERED="1")
    log = tmp_path / "watch.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "watch"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        # (the module's Tiled may hold an earlier test's closed BCDI run too: the catch-up submits that one as well)
        wait_for(lambda: {"run_uid": uid} in [scan_of(j) for j in fresh_gateway.jobs()], 60, interval=0.3,
                 what="the watch command's submission")
        closed_bcdi = {k for k, c in client.items() if (c.metadata.get("stop") or {}).get("exit_status") == "success"
                       and (c.metadata.get("start") or {}).get("plan_name") == PLAN}
        submitted = [scan_of(j)["run_uid"] for j in fresh_gateway.jobs()]
        assert sorted(submitted) == sorted(closed_bcdi)  # each closed BCDI run once, nothing else
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "polling" in log.read_text() or "(poll)" in log.read_text()
