"""A job runner on simulated scans, for the service tests and the load benchmark (no CNN weights needed).

Same contract as the production runner (workers.runner): `simulated_scan_job(spec, progress, should_cancel)`.
It simulates the scan named in the spec (physics.simulate, seeded by the reference), refines it with the
project's phasing engine (physics.phasing: ER cycles from a random start inside a loose support, the cancel
check between cycles) and publishes amplitude and phase under results/<job id> through the project's Tiled
adapter (workers.io.tiled_store.connect). So the service is exercised with real computation, real
cancellation and real Tiled writes, in seconds.
"""
from __future__ import annotations

import time
import zlib

import numpy as np
from scipy.ndimage import binary_dilation

from physics.phasing import CDI, LLK, run_recipe  # imported when the worker loads the runner, not in the first job
from physics.simulate import SimParams, simulate_sample
from workers.io.tiled_store import connect
from workers.runner import Progress, ShouldCancel

RESULTS_ROOT = "results"


def simulated_scan_job(spec: dict, progress: Progress, should_cancel: ShouldCancel) -> dict:
    """Simulate the scan named in spec, refine it by error reduction, publish the object to Tiled.

    Stages: read (connect to Tiled, simulate the scan), phasing (options.er_cycles ER cycles, the schema's
    default as for every job), publish. Idempotent by job id: a complete result already in Tiled is reused, an
    incomplete one is replaced.
    """
    from contract.options import ReconOptions

    job_id = spec["job_id"]
    opts = spec.get("options") or {}
    options = ReconOptions.from_mapping(opts)  # the one schema: same names, defaults and bounds as run_job
    crop = options.crop_size
    size = 32 if crop is None else int(crop if isinstance(crop, int) else crop[0])
    cycles = options.er_cycles

    progress("read", 0.0)
    tiled = spec.get("tiled") or {}
    client = connect(tiled.get("url"), tiled.get("api_key"), attempts=1)  # fails here, before any work, if down
    progress("read", 0.3)
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

    progress("read", 0.5)
    seed = zlib.crc32(repr(sorted((spec.get("scan") or {}).items())).encode())
    sample = simulate_sample(seed, SimParams(size=size, peak_counts=(1e6, 1e7)))
    progress("read", 1.0)

    support = binary_dilation(sample["support"], iterations=2)
    start = (np.random.default_rng(seed).random(support.shape) * support).astype(np.complex64)
    cdi = CDI(sample["intensity"], obj=start, support=support)
    progress("phasing", 0.0)
    t0 = time.perf_counter()
    if cycles > 0:
        run_recipe(cdi, f"ER**{cycles}", progress=lambda done, total: progress("phasing", done / total),
                   should_cancel=should_cancel)
    llk = (LLK() * cdi).get_llk()
    phasing_s = time.perf_counter() - t0

    progress("publish", 0.0)
    obj = cdi.get_obj()
    if existing is not None:  # an earlier delivery died while publishing: replace its partial result
        existing.delete(recursive=True)
    summary = {"r_factor": float(llk["r_factor"]), "llk_poisson": float(llk["llk_poisson"]), "cycles": cycles,
               "size": size, "phasing_s": round(phasing_s, 4)}
    node = results.create_container(key=job_id, metadata={"job_id": job_id, "complete": False,
                                                          "scan": spec.get("scan"), "options": opts,
                                                          "worker": spec.get("worker")})
    node.write_array(np.abs(obj).astype(np.float32), key="amplitude")
    progress("publish", 0.5)
    node.write_array(np.angle(obj).astype(np.float32), key="phase")
    node.update_metadata({"complete": True, "summary": summary})
    progress("publish", 1.0)
    return {"tiled_path": f"{RESULTS_ROOT}/{job_id}", **summary}
