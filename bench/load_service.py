"""Load test of the reconstruction service: gateway + Redis queue + worker processes + Tiled, one worker killed.

Starts a real Tiled server (devtools.tiled_server, a synthetic ID01 scan registered under /raw), the gateway
(`bcdi-recon serve`, uvicorn) and N worker processes on the local Redis (own key prefix, removed afterwards).
  1. Gateway overhead: with every worker idle, POST one job at a time and measure POST -> job start
     (the worker's start timestamp minus the client's clock before the POST; same machine, same clock).
  2. Load: POST --jobs jobs, kill -9 one worker when half of them have finished, wait for all to end.
Checks that every job succeeded, that each job has exactly one result in Tiled (none duplicated, none lost),
and reports jobs/minute, per-stage medians and how long the killed worker's job took to be recovered.
Writes a section of docs/benchmarks.md (heading names the runner, so the two runners keep separate sections).

  .venv/bin/python bench/load_service.py                                  # 200 jobs, simulated-scan runner
  .venv/bin/python bench/load_service.py --runner pipeline --jobs 20      # the real CNN + ER pipeline
  .venv/bin/python bench/load_service.py --latency --er-cycles 400        # POST -> result in Tiled, 64³ and
                                                                          # 128x256x256 crops, per stage
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import command_line, machine, write_section  # noqa: E402

RUNNERS = {"simulated": "devtools.sim_runner:simulated_scan_job", "pipeline": "workers.pipeline:run_job"}
REF = {"tiled_path": "raw/Load/Load_0001", "scan": "1.1", "detector": "mpx1x4"}


def write_scan(raw: Path, n: int = 32) -> None:
    """A simulated n³ crystal's diffraction, with Poisson background, in an n-frame 516x516 ID01 BLISS scan."""
    from physics.simulate import SimParams, simulate_sample
    from workers.io.id01 import write_bliss_scan

    intensity = simulate_sample(11, SimParams(size=n, peak_counts=(1e6, 1e6)))["intensity_clean"]
    frames = np.random.default_rng(11).poisson(0.1, (n, 516, 516)).astype(np.int32)
    r0, c0 = 258 - n // 2, 258 - n // 2
    frames[:, r0:r0 + n, c0:c0 + n] += np.rint(intensity).astype(np.int32)
    write_bliss_scan(raw, "Load", "0001", frames, scan=1)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Stack:
    """Tiled + gateway + workers as subprocesses, with the BCDI_* environment they share."""

    def __init__(self, args, workdir: Path):
        from devtools.tiled_server import TiledServer, free_port

        self.args = args
        self.dir = workdir
        write_scan(workdir / "raw", n=128 if args.latency else 32)
        self.tiled = TiledServer(workdir / "data", workdir / "raw").start()
        self.tiled.register()
        self.submit_key, self.read_key = secrets.token_hex(12), secrets.token_hex(12)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "BCDI_KEY_PREFIX": self.prefix, "BCDI_REDIS_URL": args.redis_url,
                    "BCDI_TILED_URL": self.tiled.uri, "BCDI_TILED_API_KEY": self.tiled.api_key,
                    "BCDI_SUBMIT_API_KEYS": self.submit_key, "BCDI_READ_API_KEYS": self.read_key,
                    "BCDI_RUNNER": RUNNERS[args.runner], "BCDI_DEVICE": args.device,
                    "BCDI_HEARTBEAT_S": str(args.heartbeat), "BCDI_CLAIM_IDLE_S": str(args.claim_idle),
                    "PYTHONUNBUFFERED": "1"}
        self.gateway = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(self.port),
                                         "--log-level", "warning"], env=self.env, cwd=ROOT,
                                        stdout=open(workdir / "gateway.log", "wb"), stderr=subprocess.STDOUT)
        self.workers = {f"w{i}": self._worker(f"w{i}") for i in range(args.workers)}
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self._wait(lambda: self._health_ok(), 120, "gateway /health")
        self._wait(lambda: self.alive_workers() >= args.workers, 300, "all workers to register")

    def _worker(self, name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--name", name], env=self.env, cwd=ROOT,
                                stdout=open(self.dir / f"{name}.log", "wb"), stderr=subprocess.STDOUT)

    def _health_ok(self) -> bool:
        try:
            return self.http.get("/health", headers={"X-API-Key": self.read_key}).status_code == 200
        except httpx.HTTPError:
            return False

    def alive_workers(self) -> int:
        r = self.http.get("/health", headers={"X-API-Key": self.read_key})
        return int(r.json()["checks"].get("workers", {}).get("alive") or 0)

    @staticmethod
    def _wait(pred, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > end:
                raise SystemExit(f"load_service: timed out waiting for {what}")
            time.sleep(0.2)

    def post(self) -> tuple[str, float]:
        """POST one job (force: a new job each time); returns (job id, client time just before the POST)."""
        body = {"scan": REF, "force": True,
                "options": {"er_cycles": self.args.er_cycles, "crop_size": [self.args.size] * 3}}
        t0 = time.time()
        r = self.http.post("/api/v1/reconstructions", json=body, headers={"X-API-Key": self.submit_key})
        if r.status_code != 202:
            raise SystemExit(f"load_service: POST answered {r.status_code}: {r.text[:300]}")
        return r.json()["id"], t0

    def job(self, job_id: str) -> dict:
        return self.http.get(f"/api/v1/reconstructions/{job_id}", headers={"X-API-Key": self.read_key}).json()

    def stop(self) -> None:
        for p in [*self.workers.values(), self.gateway]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [*self.workers.values(), self.gateway]:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.tiled.stop()
        import redis

        r = redis.Redis.from_url(self.args.redis_url)
        keys = list(r.scan_iter(f"{self.prefix}:*", count=1000))
        if keys:
            r.delete(*keys)


def count_results(stack: Stack, jobs: list[dict]) -> dict[str, int]:
    """How many result containers exist in Tiled for each job (exactly one is right)."""
    from tiled.queries import Key

    client = stack.tiled.client()
    counts = {}
    for rec in jobs:
        path = rec.get("result_path")
        if not path:
            counts[rec["id"]] = 0
            continue
        parent_path = "/".join(path.split("/")[:-1])
        parent = client[parent_path]
        if stack.args.runner == "simulated":
            counts[rec["id"]] = len(parent.search(Key("job_id") == rec["id"]))
        else:
            counts[rec["id"]] = list(parent).count(rec["id"])
    return counts


def run(args) -> tuple[str, bool]:
    with tempfile.TemporaryDirectory(prefix="load-service-") as tmp:
        stack = Stack(args, Path(tmp))
        try:
            return latency(stack, args) if args.latency else measure(stack, args)
        finally:
            stack.stop()


def latency(stack: Stack, args) -> tuple[str, bool]:
    """One job per crop size, one at a time on an idle worker: POST -> results readable in Tiled, per stage."""
    rows, ok = [], True
    for crop, cycles in (([64, 64, 64], args.er_cycles), ([128, 256, 256], args.big_er_cycles)):
        body = {"scan": REF, "force": True, "options": {"er_cycles": cycles, "crop_size": crop}}
        t0 = time.time()
        r = stack.http.post("/api/v1/reconstructions", json=body, headers={"X-API-Key": stack.submit_key})
        job_id = r.json()["id"]
        Stack._wait(lambda: stack.job(job_id)["state"] in ("succeeded", "failed"), 3600, f"the {crop} job")
        rec = stack.job(job_id)
        if rec["state"] != "succeeded":
            ok = False
            rows.append(f"| {'x'.join(map(str, crop))} | {cycles} | failed: {rec['error']} | | |")
            continue
        client = stack.tiled.client()
        amplitude = client[rec["result_path"]]["amplitude"].read()  # readable by a Tiled client now
        t_readable = time.time() - t0
        stages = {k: v for k, v in rec["timings"].items()}
        per_cycle = stages.get("refine", float("nan")) / max(cycles, 1)
        rows.append(f"| {'x'.join(map(str, crop))} ({'x'.join(map(str, amplitude.shape))} result) | {cycles} | "
                    f"**{t_readable:.1f} s** | " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
                    + f" | {1e3 * per_cycle:.0f} ms |")
    lines = [
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}.",
        "Runner: `workers.pipeline:run_job` (ID01 scan read from Tiled, CNN on 64³, ER refinement on the crop grid, "
        f"strain, results + previews written to Tiled); device {args.device}; one idle worker, jobs one at a time. "
        "Scan: a simulated 128³ crystal's diffraction in a 128-frame 516x516 ID01 scan (Tiled reads a 256x256 "
        "detector region around the peak). Latency = POST sent -> job succeeded and its amplitude array read "
        "back from Tiled by a client. Stage times (s) are the worker's, from the job record.",
        "",
        "| crop | ER cycles | POST -> result readable in Tiled | stages (s) | ER time per cycle |",
        "|---|---:|---:|---|---:|",
        *rows,
    ]
    if args.big_er_cycles < 400:
        lines += ["", f"The large crop ran {args.big_er_cycles} ER cycles to keep this shared machine usable; 400 "
                  "cycles (the paper's refinement) would add (400 - that) x the per-cycle time shown."]
    return "\n".join(lines), ok


def measure(stack: Stack, args) -> tuple[str, bool]:
    # 1. gateway overhead with idle workers: one job at a time
    overheads, post_ms = [], []
    for i in range(args.overhead_samples):
        job_id, t0 = stack.post()
        post_ms.append(1e3 * (time.time() - t0))
        Stack._wait(lambda: stack.job(job_id)["state"] in ("succeeded", "failed"), 600, "an overhead job")
        rec = stack.job(job_id)
        overheads.append(1e3 * (rec["started_at"] - t0))
    # 2. load with one worker killed half-way
    t_start = time.time()
    ids = [stack.post()[0] for _ in range(args.jobs)]
    t_posted = time.time()
    victim_name = "w0"
    victim = stack.workers[victim_name]
    t_kill = None
    done_at_kill = None
    while True:
        listing = stack.http.get("/api/v1/reconstructions", params={"state": "succeeded", "limit": 1},
                                 headers={"X-API-Key": stack.read_key}).json()
        done = listing["total"] - args.overhead_samples
        failed = stack.http.get("/api/v1/reconstructions", params={"state": "failed", "limit": 1},
                                headers={"X-API-Key": stack.read_key}).json()["total"]
        if t_kill is None and done >= args.jobs // 2:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            t_kill = time.time()
            done_at_kill = done
            print(f"killed {victim_name} after {done} jobs", file=sys.stderr)
        if done + failed >= args.jobs:
            break
        if time.time() - t_start > args.timeout:
            break
        time.sleep(0.5)
    records = [stack.job(j) for j in ids]
    t_end = max((r["finished_at"] or 0) for r in records)
    states = {s: sum(1 for r in records if r["state"] == s) for s in ("succeeded", "failed", "cancelled",
                                                                         "queued", "running")}
    counts = count_results(stack, records)
    recovered = [r for r in records if r["deliveries"] > 1]
    per_stage: dict[str, list[float]] = {}
    for r in records:
        for k, v in r["timings"].items():
            per_stage.setdefault(k, []).append(v)
    victim_log = [json.loads(ln) for ln in (stack.dir / f"{victim_name}.log").read_text().splitlines()
                  if ln.startswith("{")]
    victim_jobs = sum(1 for e in victim_log if e.get("msg") == "job succeeded")
    recovery_s = []
    for r in recovered:
        for name in stack.workers:
            if name == victim_name:
                continue
            for ln in (stack.dir / f"{name}.log").read_text().splitlines():
                if ln.startswith("{"):
                    e = json.loads(ln)
                    if e.get("msg") == "job started" and e.get("job_id") == r["id"] and e.get("deliveries", 1) > 1:
                        recovery_s.append(e["ts"] - t_kill)
    minutes = (t_end - t_start) / 60
    lines = [
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}.",
        f"Runner: `{RUNNERS[args.runner]}`"
        + (" (**not the CNN pipeline**: a simulated 32³-class scan refined by numpy ER, results written to Tiled; "
           "it exercises the service, not the reconstruction)" if args.runner == "simulated" else
           " (the real pipeline: ID01 scan read from Tiled, CNN, ER refinement, strain, results + previews to Tiled)")
        + f"; options: crop {args.size}³, {args.er_cycles} ER cycles; device {args.device}.",
        f"Set-up: real Redis ({args.redis_url}), real Tiled (embedded config, synthetic ID01 scan), gateway "
        f"`bcdi-recon serve`, {args.workers} worker processes; heartbeat {args.heartbeat} s, claim after "
        f"{args.claim_idle} s idle.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| jobs submitted (POST, force) | {args.jobs} |",
        f"| succeeded / failed / other | {states['succeeded']} / {states['failed']} / "
        f"{args.jobs - states['succeeded'] - states['failed']} |",
        f"| jobs with exactly one result in Tiled | {sum(1 for c in counts.values() if c == 1)} |",
        f"| jobs with more than one result (duplicates) | {sum(1 for c in counts.values() if c > 1)} |",
        f"| jobs with no result | {sum(1 for c in counts.values() if c == 0)} |",
        f"| worker killed (kill -9) when | {done_at_kill} jobs had finished ({victim_name} had done "
        f"{victim_jobs} jobs in all) |",
        f"| jobs re-delivered after the kill | {len(recovered)} |",
        f"| kill -> re-delivered job started on the other worker | "
        f"{', '.join(f'{x:.1f} s' for x in recovery_s) or '-'} |",
        f"| wall time, first POST -> last job finished | {60 * minutes:.1f} s |",
        f"| throughput | **{args.jobs / minutes:.1f} jobs/minute** |",
        f"| submitting {args.jobs} POSTs (one client, sequential) | {t_posted - t_start:.2f} s |",
        f"| gateway overhead POST -> job start, idle worker (median / p95 of {len(overheads)}) | "
        f"**{statistics.median(overheads):.1f} ms** / {percentile(overheads, 95):.1f} ms (target < 100 ms) |",
        f"| POST round trip (median / p95) | {statistics.median(post_ms):.1f} ms / "
        f"{percentile(post_ms, 95):.1f} ms |",
        "",
        "Per-stage medians over the load jobs (s): "
        + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in per_stage.items()) + ".",
        "queue_wait includes waiting behind the other queued jobs.",
    ]
    ok = states["succeeded"] == args.jobs and all(c == 1 for c in counts.values())
    lines.append("")
    lines.append("Verdict: " + ("all jobs succeeded, each with exactly one result in Tiled."
                                if ok else "**FAILED**: not every job succeeded with exactly one result."))
    return "\n".join(lines), ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runner", choices=sorted(RUNNERS), default="simulated")
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--er-cycles", type=int, default=50)
    p.add_argument("--size", type=int, default=32, help="crop size per axis")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overhead-samples", type=int, default=20)
    p.add_argument("--heartbeat", type=float, default=2.0)
    p.add_argument("--claim-idle", type=float, default=10.0)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--latency", action="store_true",
                   help="instead of the load test: POST -> result in Tiled for a 64³ and a 128x256x256 crop "
                        "(pipeline runner, one worker)")
    p.add_argument("--big-er-cycles", type=int, default=50, help="ER cycles for the 128x256x256 crop (--latency)")
    p.add_argument("--no-write", action="store_true", help="print the section instead of updating docs/benchmarks.md")
    args = p.parse_args(argv)
    if args.latency:
        args.runner, args.workers = "pipeline", 1
        args.overhead_samples = 0
    elif args.jobs < 2 or args.workers < 2:
        p.error("need at least 2 jobs and 2 workers (one is killed)")
    text, ok = run(args)
    heading = (f"Service latency: POST -> results in Tiled, 64³ and 128x256x256 crops (pipeline runner)"
               if args.latency else
               f"Service load: {args.jobs} jobs, {args.workers} workers, one killed ({args.runner} runner)")
    print(f"## {heading}\n\n{text}")
    if not args.no_write:
        write_section(heading, text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
