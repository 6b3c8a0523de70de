"""What a job runner is, the errors it may raise, and a small real runner on simulated scans.

A runner is `run(spec: dict, progress(stage, fraction), should_cancel() -> bool) -> dict summary`.
The production runner is workers.pipeline.run_job (CNN + ER refinement). `simulated_scan_job` below does real,
smaller work with the same contract: it simulates a scan (physics.simulate), refines it with numpy error
reduction, and publishes amplitude and phase to Tiled under results/<job id>. The service tests and the load
benchmark use it so that they exercise real computation, real cancellation and real Tiled writes without
needing the CNN weights.
"""
from __future__ import annotations

import time
import zlib
from typing import Callable

Progress = Callable[[str, float], None]
ShouldCancel = Callable[[], bool]
Runner = Callable[[dict, Progress, ShouldCancel], dict]

RESULTS_ROOT = "results"


class JobCancelled(Exception):
    """Raised by a runner that saw should_cancel() return True; the worker records 'cancelled'."""


class TransientError(Exception):
    """A runner failure worth retrying (a service that may come back); the worker backs off and retries."""


def is_transient(err: BaseException) -> bool:
    """True for errors of an unreachable service: connection refused/reset, timeouts, HTTP transport errors."""
    if isinstance(err, (TransientError, ConnectionError, TimeoutError)):
        return True
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx comes with the tiled client
        return False
    if isinstance(err, httpx.TransportError):
        return True
    if isinstance(err, httpx.HTTPStatusError) and err.response is not None:
        return err.response.status_code in (502, 503, 504)
    return False


def load_runner(path: str) -> Runner:
    """Import 'package.module:function' (the worker's --runner)."""
    import importlib

    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"runner {path!r}: expected 'module:function'")
    module = importlib.import_module(module_name)
    try:
        fn = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"runner {path!r}: module {module_name} has no {attr!r}") from None
    if not callable(fn):
        raise ValueError(f"runner {path!r} is not callable")
    return fn


def tiled_client(spec: dict):
    """A Tiled client from the spec's tiled section (url, api_key)."""
    from tiled.client import from_uri

    cfg = spec.get("tiled") or {}
    return from_uri(cfg["url"], api_key=cfg.get("api_key"))


def simulated_scan_job(spec: dict, progress: Progress, should_cancel: ShouldCancel) -> dict:
    """Simulate the scan named in spec, refine it by error reduction, publish the object to Tiled.

    Stages: read (connect to Tiled, simulate the scan seeded by its reference), phasing (options.er_cycles,
    default 400 as for every job, numpy ER cycles from a random start inside a loose support, cancel checked every cycle), publish.
    Idempotent by job id: a complete result already in Tiled is reused, an incomplete one is replaced.
    """
    import numpy as np

    from physics.simulate import SimParams, simulate_sample

    from contract.options import ReconOptions

    job_id = spec["job_id"]
    opts = spec.get("options") or {}
    options = ReconOptions.from_mapping(opts)  # the one schema: same names, defaults and bounds as run_job
    crop = options.crop_size
    size = 32 if crop is None else int(crop if isinstance(crop, int) else crop[0])
    cycles = options.er_cycles

    progress("read", 0.0)
    client = tiled_client(spec)  # fails here, before any work, when Tiled is down
    if RESULTS_ROOT not in client:
        try:
            client.create_container(RESULTS_ROOT)
        except Exception:  # created concurrently by another worker
            if RESULTS_ROOT not in client:
                raise
    results = client[RESULTS_ROOT]
    existing = results.get(job_id) if job_id in results else None
    if existing is not None and existing.metadata.get("complete"):
        progress("publish", 1.0)
        return {"tiled_path": f"{RESULTS_ROOT}/{job_id}", "reused": True, **existing.metadata.get("summary", {})}

    seed = zlib.crc32(repr(sorted((spec.get("scan") or {}).items())).encode())
    sample = simulate_sample(seed, SimParams(size=size, peak_counts=(1e6, 1e7)))
    progress("read", 1.0)

    amp = np.sqrt(np.fft.ifftshift(sample["intensity"]).astype(np.float32))
    from scipy.ndimage import binary_dilation

    support = np.fft.ifftshift(binary_dilation(sample["support"], iterations=2))
    rng = np.random.default_rng(seed)
    obj = (rng.random(amp.shape) * support).astype(np.complex64)
    t0 = time.perf_counter()
    for i in range(cycles):
        if should_cancel():
            raise JobCancelled(f"cancelled at cycle {i}/{cycles}")
        f = np.fft.fftn(obj, norm="ortho")
        f = amp * np.exp(1j * np.angle(f))
        obj = (np.fft.ifftn(f, norm="ortho") * support).astype(np.complex64)
        progress("phasing", (i + 1) / max(cycles, 1))
    calc = np.abs(np.fft.fftn(obj, norm="ortho"))
    r_factor = float(np.abs(calc - amp).sum() / max(float(amp.sum()), 1e-12))
    phasing_s = time.perf_counter() - t0

    progress("publish", 0.0)
    obj_c = np.fft.fftshift(obj)
    if existing is not None:  # an earlier delivery died while publishing: replace its partial result
        existing.delete(recursive=True)
    summary = {"r_factor": r_factor, "cycles": cycles, "size": size, "phasing_s": round(phasing_s, 4)}
    node = results.create_container(key=job_id, metadata={"job_id": job_id, "complete": False,
                                                          "scan": spec.get("scan"), "options": opts,
                                                          "worker": spec.get("worker")})
    node.write_array(np.abs(obj_c).astype(np.float32), key="amplitude")
    progress("publish", 0.5)
    node.write_array(np.angle(obj_c).astype(np.float32), key="phase")
    node.update_metadata({"complete": True, "summary": summary})
    progress("publish", 1.0)
    return {"tiled_path": f"{RESULTS_ROOT}/{job_id}", **summary}
