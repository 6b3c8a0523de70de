"""Helpers for the service tests: real Redis / Tiled servers, worker subprocesses, isolated queue settings.

Every test uses its own Redis key prefix on the shared 127.0.0.1:6379 server (and deletes its keys after), or
its own redis-server on a free port when it needs to restart Redis. Tiled is one real server per pytest process
(devtools.tiled_server with a synthetic ID01 scan registered), started on first use. Intervals are short (heartbeat
0.3 s, claim after 1.5 s) so crash recovery is exercised in seconds. `BothSides` lets a test play the gateway
(JobProducer) and a worker (JobConsumer) on one Redis client.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SUBMIT_KEY = "submit-key-for-tests"
READ_KEY = "read-key-for-tests"
TILED_KEY = "tiledkeyfortests"
RUNNER = "devtools.sim_runner:simulated_scan_job"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def redis_available(url: str = "redis://127.0.0.1:6379/0") -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


def make_settings(**overrides):
    """Settings with a fresh key prefix and short intervals (tests only)."""
    from contract.settings import Settings

    values = dict(key_prefix=f"test-{uuid.uuid4().hex[:10]}", heartbeat_s=0.3, claim_idle_s=1.5, max_deliveries=3,
                  submit_api_keys=[SUBMIT_KEY], read_api_keys=[READ_KEY], device="cpu", runner=RUNNER,
                  block_ms=200, retry_attempts=3, retry_backoff_s=0.2, cancel_poll_s=0.05,
                  progress_interval_s=0.05, tiled_url=f"http://127.0.0.1:{free_port()}", tiled_api_key=TILED_KEY,
                  sse_keepalive_s=1.0, health_timeout_s=1.0, tiled_client_retry_attempts=1)
    values.update(overrides)
    return Settings(**values)


def settings_env(settings) -> dict:
    """The settings as BCDI_* environment variables (for worker subprocesses)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCDI_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        env[f"BCDI_{name.upper()}"] = ",".join(value) if isinstance(value, list) else str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def drop_keys(settings) -> None:
    """Delete every Redis key of this settings' prefix."""
    from contract.jobs import connect

    r = connect(settings)
    try:
        keys = list(r.scan_iter(f"{settings.key_prefix}:*", count=1000))
        if keys:
            r.delete(*keys)
    finally:
        r.close()


@pytest.fixture
def qsettings():
    """Isolated queue settings on the shared Redis (skips only if Redis is absent, which CI treats as set-up bug)."""
    if not redis_available():
        pytest.fail("Redis is not running on 127.0.0.1:6379 (start it: redis-server --daemonize yes)")
    s = make_settings()
    yield s
    drop_keys(s)


def both_sides(client, settings):
    """A JobProducer and a JobConsumer in one object: the test submits like the gateway and claims like a worker."""
    from service.queue import JobProducer
    from workers.queue import JobConsumer

    class BothSides(JobProducer, JobConsumer):
        pass

    return BothSides(client, settings)


@pytest.fixture
def queue(qsettings):
    from contract.jobs import connect

    client = connect(qsettings)
    q = both_sides(client, qsettings)
    q.ensure_groups()
    yield q
    client.close()


# ---- Tiled ----------------------------------------------------------------------------------------------------
class TiledServer:
    """The project's real Tiled server (devtools.tiled_server, embedded config) with the lead's synthetic ID01
    raw tree registered under /raw, so the real pipeline can read a scan and every runner can write results."""

    def __init__(self, api_key: str = TILED_KEY):
        from fixtures_tiled import write_raw_tree
        from devtools.tiled_server import TiledServer as _Server

        self.api_key = api_key
        self.dir = Path(tempfile.mkdtemp(prefix="tiled-test-"))
        write_raw_tree(self.dir / "raw")
        self.server = _Server(self.dir / "data", self.dir / "raw", api_key=api_key)
        self.url = ""

    def wait_ready(self, timeout: float = 120.0) -> "TiledServer":
        self.server.start(timeout=timeout)
        self.url = self.server.uri
        self.server.register()
        return self

    def client(self):
        return self.server.client()

    def results_for(self, job_id: str) -> list[str]:
        """Keys of result containers (simulated runner) whose metadata names this job: the exactly-once check."""
        from tiled.queries import Key

        c = self.client()
        if "results" not in c:
            return []
        return list(c["results"].search(Key("job_id") == job_id))

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


_TILED: TiledServer | None = None
_TILED_LOCK = threading.Lock()


def shared_tiled() -> TiledServer:
    """One Tiled server per pytest process, started on first use, stopped at exit."""
    global _TILED
    with _TILED_LOCK:
        if _TILED is None:
            _TILED = TiledServer().wait_ready()
            atexit.register(_TILED.stop)
        return _TILED


@pytest.fixture
def tiled():
    return shared_tiled()


# ---- workers ----------------------------------------------------------------------------------------------------
class WorkerProcess:
    """`bcdi-recon worker` (python -m cli.main worker) as a subprocess with the given settings; JSON log lines kept."""

    def __init__(self, settings, name: str, extra_args: tuple[str, ...] = ()):
        self.name = name
        self.logfile = tempfile.NamedTemporaryFile(prefix=f"worker-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([PYTHON, "-m", "cli.main", "worker", "--name", name, *extra_args],
                                     env=settings_env(settings), cwd=REPO, stdout=self.logfile,
                                     stderr=subprocess.STDOUT)

    def lines(self) -> list[dict]:
        out = []
        for line in Path(self.logfile.name).read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"raw": line})
        return out

    def logged(self, msg: str, job_id: str | None = None) -> bool:
        return any(e.get("msg") == msg and (job_id is None or e.get("job_id") == job_id) for e in self.lines())

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.unlink(self.logfile.name)


@contextmanager
def worker_processes(settings, *names: str, extra_args: tuple[str, ...] = ()):
    procs = [WorkerProcess(settings, n, extra_args) for n in names]
    try:
        yield procs
    finally:
        for p in procs:
            p.close()


@contextmanager
def worker_thread(settings, name: str = "thread-worker", runner=None):
    """An in-process Worker on a thread (stopped and joined on exit)."""
    from workers.worker import Worker

    w = Worker(settings, runner=runner, name=name)
    t = threading.Thread(target=w.run, name=name, daemon=True)
    t.start()
    try:
        yield w
    finally:
        w.request_stop()
        t.join(15)
        assert not t.is_alive(), "worker thread did not stop"


# ---- a private Redis ------------------------------------------------------------------------------------------
class RedisServer:
    """A private redis-server with the append-only file on every write (appendfsync always), for restart tests."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        import redis

        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server binary not found (apt-get install redis-server)")
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                                      "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                                      "--protected-mode", "yes"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def up():
            try:
                return redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
            except Exception:
                return False

        wait_for(up, 20, what="the private redis-server")
        return self

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
