"""Service results out of Tiled: find a job's result container and write it as the same CXI file `reconstruct` writes.

The Tiled container (workers.io.tiled_store.write_result) holds the object, support and log10(1 + intensity) on the
crop grid plus metadata (model, parameters, LLKs, timings, crop offsets); this reads only those three arrays through
the Tiled client and writes them with workers.io.cxi.write_cxi, so PyNX/silx read it like any local reconstruction.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from physics.errors import InputError

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
RESULT_ROOT = "reconstructions"


def find_result(client, job: str) -> str:
    """Tiled path of a job's complete result: ``job`` is a job id (searched under reconstructions/) or a path."""
    job = str(job).strip().strip("/")
    if "/" in job:
        try:
            node = client[job]
        except KeyError:
            raise InputError(f"no such Tiled path: {job}") from None
        if node.metadata.get("bcdi_recon", {}).get("kind") != "reconstruction":
            raise InputError(f"Tiled node {job} is not a bcdi-recon result container")
        return job
    if not JOB_ID.match(job):
        raise InputError(f"{job!r} is neither a job id (32 hex characters) nor a Tiled path of a result")
    from tiled.queries import Key

    try:
        root = client[RESULT_ROOT]
    except KeyError:
        raise InputError(f"this Tiled server has no {RESULT_ROOT}/ container: no service result was written to "
                         f"it") from None
    # keys of a deep search are tuples of segments below reconstructions/
    found = ["/".join((RESULT_ROOT, *((key,) if isinstance(key, str) else key)))
             for key in root.search_deep(Key("job_id") == job)]
    if not found:
        raise InputError(f"no result for job {job} in Tiled (is it finished? `GET /api/v1/reconstructions/{job}` "
                         f"tells its state)")
    return sorted(found, key=len)[0]


def _process_and_results(meta: dict[str, Any], tiled_path: str) -> tuple[dict, dict]:
    """The CXI configuration/results collections from the container's metadata, named as `reconstruct` names them."""
    model = meta.get("model") or {}
    scan = meta.get("scan") or meta.get("scan_ref") or {}
    params = {k: v for k, v in (meta.get("parameters") or {}).items() if v is not None}
    process = {"pipeline": "cnn+er", "engine": meta.get("engine"), "recipe": meta.get("recipe"),
               "model": model.get("name"), "model_sha256": model.get("sha256"),
               "input": f"tiled:{scan.get('tiled_path', '')}", "scan": scan.get("scan", ""),
               "detector": scan.get("detector") or (meta.get("input") or {}).get("detector", ""),
               "crop_offsets": meta.get("crop_offsets"), "device_used": meta.get("device"),
               "job_id": meta.get("job_id"), "tiled_result": tiled_path, **params}
    metrics = dict(meta.get("metrics") or {})
    results = {**{k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "support_size"},
               "timings": {f"{k}_s": v for k, v in (meta.get("timings") or {}).items()
                           if isinstance(v, (int, float))},
               "support_size": metrics.get("support_size")}
    return ({k: v for k, v in process.items() if v is not None}, {k: v for k, v in results.items() if v is not None})


def result_to_cxi(client, job: str, out: str | os.PathLike, command: str | None = None) -> tuple[Path, str]:
    """Write the result of ``job`` (id or Tiled path) to the CXI file ``out``; returns (file, Tiled path)."""
    from workers.io.cxi import write_cxi
    from workers.io.formats import check_output_path

    out = check_output_path(out, suffixes=(".cxi", ".h5"))  # before any network traffic
    path = find_result(client, job)
    node = client[path]
    meta = dict(node.metadata)
    if meta.get("status") != "complete":
        raise InputError(f"the result at {path} is not complete (status {meta.get('status')!r}); try again later")
    missing = [k for k in ("object", "support", "intensity_crop") if k not in node]
    if missing:
        raise InputError(f"the result at {path} lacks {', '.join(missing)}")
    obj = np.asarray(node["object"].read()).astype(np.complex64)
    support = np.asarray(node["support"].read()).astype(bool)
    iobs = np.power(10.0, np.asarray(node["intensity_crop"].read(), dtype=np.float64)) - 1.0  # stored log10(1+I)
    process, results = _process_and_results(meta, path)
    units = meta.get("strain") or {}
    derived = {k: (np.asarray(node[k].read(), dtype=np.float32), units.get(f"{k}_units", ""))
               for k in ("displacement", "strain", "shape") if k in node}  # as `reconstruct` writes them
    write_cxi(out, obj, support, iobs=np.clip(iobs, 0, None).astype(np.float32), process=process, results=results,
              crop_offsets=meta.get("crop_offsets"), command=command, derived=derived or None,
              note="exported from the bcdi-recon service's Tiled result by `bcdi-recon fetch`")
    return out, path
