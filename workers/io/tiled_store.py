"""Tiled adapter: read ID01 scans that a Tiled server serves, write reconstructions back as browsable containers.

Reading: a scan reference ``{"tiled_path": "raw/PtNP/PtNP_0001", "scan": "1.1", "detector": "mpx1x4"}`` points at a
registered BLISS dataset file (or its folder). Only what is needed crosses the network: a few probe frames to find
the Bragg peak, then a detector region around it for all frames (sliced on the server), plus scalar metadata.
Masks and metadata use the same code as the HDF5 loader (workers.io.id01).

Writing: one container per job at ``reconstructions/<sample>/<dataset>/<scan>/<job id>`` holding the arrays, uint8
RGB previews (Tiled's browser shows them in colour) and metadata. Everything is validated before the first write,
the container is marked ``status: complete`` last, and a complete job is never written twice (idempotent by job id).
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from typing import Any, Iterable

import numpy as np

from contract.scanref import ScanRef, ScanRefError
from contract.settings import current_settings
from physics.errors import AccessError, InputError
from workers.io.id01 import (DETECTORS, assemble, peak_region, pick_detector, read_monitor, resolve_scan_name,
                             scan_metadata)

__all__ = [
    "parse_scan_ref",
    "TiledUnavailable",
    "connect",
    "load_scan_tiled",
    "make_previews",
    "write_result",
    "read_result",
    "result_keys",
    "REQUIRED_ARRAYS",
    "ensure_results_root",
]

RESULT_ROOT = "reconstructions"
REQUIRED_ARRAYS = ("amplitude", "phase", "phase_wrapped", "support", "shape", "object", "reciprocal_phase_predicted",
                   "intensity_crop", "displacement", "strain")
ARRAY_DOCS = {
    "amplitude": ("|object|", "arb. units"),
    "phase": ("phase, unwrapped, ramp and offset removed (mean 0 in the shape)", "rad"),
    "phase_wrapped": ("phase wrapped to [0, 2π)", "rad"),
    "support": ("phasing support, as phasing ended (1 inside; shrink-wrap leaves about a voxel of slack)", "1"),
    "shape": ("the crystal's shape: amplitude isosurface inside the support (metadata strain.shape); phase "
              "and strain are drawn inside it", "1"),
    "object": ("complex object (complex64)", "arb. units"),
    "reciprocal_phase_predicted": ("reciprocal-space phase predicted by the CNN on the 64³ grid", "rad"),
    "intensity_crop": ("log10(1 + cropped measured intensity)", "log10(counts)"),
    "displacement": ("displacement along G", "see metadata strain.displacement_units"),
    "strain": ("heterogeneous strain along G", "see metadata strain.strain_units"),
    "amplitude_lab": ("|object| on an orthogonal lab grid (axes x downstream, y, z up)", "arb. units"),
    "support_lab": ("support on the lab grid", "1"),
    "shape_lab": ("the crystal's shape on the lab grid", "1"),
    "displacement_lab": ("displacement along G on the lab grid", "see metadata strain.displacement_units"),
    "strain_lab": ("strain along G on the lab grid", "see metadata strain.strain_units"),
}

BOOL_ARRAYS = ("support", "shape", "support_lab", "shape_lab")  # stored 0/1 uint8, read back as bool


class TiledUnavailable(ConnectionError):
    """The Tiled server could not be reached after retries (transient: the job may be retried later)."""


# --------------------------------------------------------------------------------------------------------------------
# scan references and connection

def parse_scan_ref(ref: "dict | ScanRef", allowed_prefixes: Iterable[str] | None = None) -> ScanRef:
    """The scan reference validated by the job contract (contract.scanref.ScanRef.parse), bad ones as InputError.

    ``allowed_prefixes`` defaults to the current settings' ``allowed_scan_prefixes``, the gateway's rule.
    """
    try:
        return ScanRef.parse(ref, allowed_prefixes)
    except ScanRefError as exc:
        raise InputError(str(exc)) from None


def connect(uri: str | None = None, api_key: str | None = None, *, attempts: int = 5, backoff_s: float = 0.5,
            max_backoff_s: float = 8.0):
    """Tiled client for ``uri`` (default: the current settings' tiled_url, BCDI_TILED_URL), retrying with backoff.

    The key defaults to the settings' tiled_api_key (BCDI_TILED_API_KEY). Probes /healthz with a short timeout
    first, so an unreachable server fails after about backoff_s·(2^attempts) seconds with TiledUnavailable
    instead of hanging in the client's own long retries.
    """
    import httpx

    if not uri or api_key is None:
        settings = current_settings()
        uri = uri or settings.tiled_url
        api_key = api_key if api_key is not None else settings.tiled_api_key
    uri = uri.rstrip("/")
    last: Exception | None = None
    delay = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.get(f"{uri}/healthz", timeout=3.0)
            if response.status_code == 200:
                return _open_client(uri, api_key)
            last = RuntimeError(f"HTTP {response.status_code}")
        except httpx.HTTPError as exc:
            last = exc
        if attempt < attempts:
            time.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
    raise TiledUnavailable(f"Tiled server at {uri} is unreachable after {attempts} attempts ({last})")


def _open_client(uri: str, api_key: str | None):
    """from_uri, with a rejected or missing key reported as AccessError (one line) instead of a log-in prompt."""
    from tiled.client import from_uri
    from tiled.client.context import CannotPrompt
    from tiled.client.utils import ClientError

    try:
        return from_uri(uri, api_key=api_key)
    except CannotPrompt:
        raise AccessError(f"Tiled server at {uri} rejected the API key (or none was given)") from None
    except RuntimeError:  # a server without log-in providers (single-user key) refuses a bad key this way
        import httpx

        auth = {"Authorization": f"Apikey {api_key}"} if api_key else {}
        probe = httpx.get(f"{uri}/api/v1/metadata/", headers=auth, timeout=5.0)
        if probe.status_code in (401, 403):  # decided by the server's status, not by the error's wording
            raise AccessError(f"Tiled server at {uri} rejected the API key (or none was given)") from None
        raise
    except ClientError as exc:
        if exc.response.status_code in (401, 403):
            raise AccessError(f"Tiled server at {uri} refused access: {exc.response.status_code}") from None
        raise


def _node(client, path: str, shown: str | None = None):
    """client[path] with a one-line error naming the missing path (``shown``: the full path for the message)."""
    try:
        return client[path]
    except KeyError:
        raise InputError(f"no such Tiled path: {shown or path}") from None


def resolve_run_uid(client, uid: str, md_key: str = "bcdi", roots: Iterable[str] | None = None) -> dict:
    """The ID01 scan reference of a Bluesky run that TiledWriter stored, from its start document.

    A job may name a run by uid alone (the Tiled watcher, or a RunEngine callback without a file reference);
    the run's start document carries the reference to the ID01 dataset under ``md_key``
    ({"tiled_path", "scan", "detector"}), which is what the worker reads the frames from. ``roots``: where runs
    are looked for (default: the Tiled root and the allowed scan prefixes of the settings).
    """
    if not isinstance(uid, str) or not uid.strip():
        raise InputError(f"run uid must be a non-empty string, got {uid!r}")
    if roots is None:
        roots = ("", *current_settings().allowed_scan_prefixes)
    for root in roots:
        try:
            run = client[f"{root}/{uid}" if root else uid]
        except KeyError:
            continue
        start = dict(run.metadata.get("start") or {})
        ref = start.get(md_key)
        if not isinstance(ref, dict) or not ref.get("tiled_path"):
            raise InputError(f"Bluesky run {uid} has no ID01 scan reference in its start document "
                             f"(metadata key '{md_key}' with tiled_path, scan, detector)")
        return {k: ref[k] for k in ("tiled_path", "scan", "detector") if ref.get(k) is not None}
    raise InputError(f"no Bluesky run {uid} in Tiled (looked under: {', '.join(r or '/' for r in roots)})")


# --------------------------------------------------------------------------------------------------------------------
# reading scans

def _dataset_node(client, ref: ScanRef):
    """The node of the BLISS dataset file: the path itself, or ``<folder>/<folder name>`` as `tiled register` makes."""
    node = _node(client, ref.tiled_path)
    keys = list(node)
    last = ref.tiled_path.rsplit("/", 1)[-1]
    if last in keys and not any("." in k and k.split(".")[-1].isdigit() for k in keys):
        node = _node(node, last, f"{ref.tiled_path}/{last}")
        keys = list(node)
    return node, keys


def _getter(entry):
    """get(path) for id01.scan_metadata: the array value of a node, or None when absent."""
    from tiled.client.array import ArrayClient

    def get(path: str):
        try:
            node = entry[path]
        except KeyError:
            return None
        if not isinstance(node, ArrayClient):
            return None
        value = node.read()
        return value

    return get


def _find_detector_tiled(entry, detector: str | None, scan: str) -> str:
    """Detector name present under measurement/ or instrument/ of a Tiled scan node."""
    present: set[str] = set()
    for group in ("measurement", "instrument"):
        try:
            present |= set(entry[group])
        except KeyError:
            pass
    name = pick_detector(present, detector, scan)
    if name is not None:
        return name
    raise InputError(f"no detector found in scan {scan} (looked for {', '.join(DETECTORS)})")


def load_scan_tiled(client, ref: "dict | ScanRef", *, roi_size: tuple[int, int] | None = (256, 256),
                    probe_frames: int = 5, hot_pixels: bool = True, monitor: str | None = None,
                    allowed_prefixes: Iterable[str] | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read one scan through Tiled: (frames float32 (z, y, x) of a detector region, mask bool, metadata).

    The Bragg peak's detector position is found on ``probe_frames`` frames spread over the rocking curve, then
    only a ``roi_size`` region around it is read for every frame (server-side slicing); ``roi_size=None`` reads full
    frames. metadata["detector_roi_offset"] gives the region's (row, column) origin on the detector.
    ``allowed_prefixes`` defaults to the settings' allowed_scan_prefixes (see parse_scan_ref).
    """
    ref = parse_scan_ref(ref, allowed_prefixes)
    node, keys = _dataset_node(client, ref)
    name = resolve_scan_name(keys, ref.scan)
    entry = _node(node, name, "/".join(list(node.path_parts) + [name]))
    det = _find_detector_tiled(entry, ref.detector, name)
    where = f"scan {name} ({det})"
    try:
        frames_node = entry[f"measurement/{det}"]
    except KeyError:
        frames_node = _node(entry, f"instrument/{det}/image")
    shape = tuple(frames_node.shape)
    if len(shape) != 3 or shape[0] == 0:
        raise InputError(f"{where}: frames have shape {shape}, expected (frames, rows, columns)")
    n, rows, cols = shape
    get = _getter(entry)
    pixel_mask = get(f"instrument/{det}/pixel_mask")
    sat = get(f"instrument/{det}/saturation_value")
    saturation = float(np.asarray(sat).ravel()[0]) if sat is not None else None
    if roi_size is None or (roi_size[0] >= rows and roi_size[1] >= cols):
        r0, c0, h, w = 0, 0, rows, cols
    else:
        r0, c0, h, w = peak_region(lambda i: frames_node[i], list(range(n)), (rows, cols), det, roi_size,
                                   pixel_mask=pixel_mask, saturation=saturation, hot_pixels=hot_pixels,
                                   probe_frames=probe_frames, where=where)
    data = np.asarray(frames_node[:, r0:r0 + h, c0:c0 + w])
    meta = scan_metadata(get, det, name, n)
    mon = None if monitor is None else read_monitor(get, monitor, where)
    meta.update(tiled_path=ref.tiled_path, tiled_entry="/".join(list(node.path_parts) + [name]))
    return assemble(data, det, meta, pixel_mask=pixel_mask, saturation=saturation, hot_pixels=hot_pixels,
                    monitor=mon, roi=(r0, c0, rows, cols))


# --------------------------------------------------------------------------------------------------------------------
# results

def make_previews(arrays: dict[str, np.ndarray], geometry: dict | None = None,
                  title: str | None = None) -> dict[str, np.ndarray]:
    """The result's uint8 RGB previews, drawn by workers.io.previews.make_previews (arrays as they are)."""
    from workers.io.previews import make_previews as draw

    return draw(arrays, geometry, title=title)


def _jsonable(value: Any, where: str = "metadata") -> Any:
    """Plain JSON types for Tiled metadata (numpy scalars/arrays to Python, NaN/inf to None); error otherwise."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    raise InputError(f"{where} holds a {type(value).__name__}, which cannot be stored as Tiled metadata")


def _key_part(value: str, what: str) -> str:
    """A safe Tiled key segment (no slashes, not empty, not '.'/'..')."""
    value = str(value).strip()
    if not value or "/" in value or value in (".", "..") or len(value) > 200:
        raise InputError(f"{what} {value!r} cannot be used as a Tiled key")
    return value


def result_keys(ref: "dict | ScanRef", job_id: str, allowed_prefixes: Iterable[str] | None = None) -> list[str]:
    """Keys of the result container: reconstructions/<sample>/<dataset>/<scan>/<job id>."""
    ref = parse_scan_ref(ref, allowed_prefixes)
    parts = ref.tiled_path.split("/")
    dataset = parts[-1]
    sample = parts[-2] if len(parts) >= 3 else dataset.rsplit("_", 1)[0]
    return [RESULT_ROOT, _key_part(sample, "sample"), _key_part(dataset, "dataset"), _key_part(ref.scan, "scan"),
            _key_part(job_id, "job id")]


def _validate_arrays(arrays: dict[str, np.ndarray], previews: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check names, shapes, dtypes and finiteness of everything before writing; return the arrays as stored."""
    missing = [k for k in REQUIRED_ARRAYS if k not in arrays]
    if missing:
        raise InputError(f"result is missing arrays: {', '.join(missing)}")
    shape = np.shape(arrays["object"])
    if len(shape) != 3:
        raise InputError(f"object must be 3D, got shape {shape}")
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        a = np.asarray(value)
        if (key in ("amplitude", "phase", "phase_wrapped", "support", "shape", "object", "displacement", "strain")
                or key.endswith("_lab")) and a.shape != shape:
            raise InputError(f"array {key} has shape {a.shape}, expected the object shape {shape}")
        if key == "reciprocal_phase_predicted" and a.ndim != 3:
            raise InputError(f"reciprocal_phase_predicted must be 3D (64³), got shape {a.shape}")
        if key == "object":
            a = a.astype(np.complex64)
        elif key in BOOL_ARRAYS:
            a = a.astype(bool).astype(np.uint8)  # 0/1: viewable in the browser, exact round trip
        elif a.dtype.kind in "biuf":
            a = a.astype(np.float32)
        else:
            raise InputError(f"array {key} has unsupported dtype {a.dtype}")
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            raise InputError(f"array {key} contains NaN or infinite values")
        out[key] = a
    for key, value in previews.items():
        a = np.asarray(value)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise InputError(f"preview {key} must be an (H, W, 3) uint8 RGB array, got {a.dtype} {a.shape}")
        out[key] = a
    return out


def _ensure_container(parent, key: str, metadata: dict | None = None):
    """parent[key], created as a container when missing."""
    try:
        return parent[key]
    except KeyError:
        return parent.create_container(key, metadata=metadata or {})


def ensure_results_root(admin_client) -> None:
    """Create the top-level ``reconstructions`` container (deployment, with an admin key): under the access policy
    (deploy/tiled/bcdi_access.py) the workers may write only inside it, not at the top level."""
    _ensure_container(admin_client, RESULT_ROOT, {"description": "bcdi-recon reconstructions, one per job"})


def write_result(client, ref: "dict | ScanRef", job_id: str, arrays: dict[str, np.ndarray],
                 metadata: dict[str, Any], previews: dict[str, np.ndarray] | None = None,
                 allowed_prefixes: Iterable[str] | None = None) -> str:
    """Write one job's result container and return its Tiled path; a complete job is left as it is.

    ``metadata`` carries model name/checksum, engine, recipe, parameters, LLK/free LLK/R-factor, support size,
    obj2_out, timings and the input's metadata (free form, JSON types). Nothing is written when any input is bad.
    """
    import httpx

    ref = parse_scan_ref(ref, allowed_prefixes)
    keys = result_keys(ref, job_id, allowed_prefixes)
    stored = _validate_arrays(arrays, previews or {})
    meta = _jsonable(dict(metadata))
    meta.update(_jsonable({
        "bcdi_recon": {"kind": "reconstruction", "layout_version": 1},
        "job_id": job_id,
        "scan_ref": ref.as_dict(),
        "arrays": {k: {"description": d, "units": u} for k, (d, u) in ARRAY_DOCS.items() if k in stored},
        "previews": sorted(previews or {}),
        "status": "writing",
        "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
    }))
    path = "/".join(keys)
    try:
        node = client
        for key in keys[:-1]:
            node = _ensure_container(node, key)
        if keys[-1] in node:
            existing = node[keys[-1]]
            if existing.metadata.get("status") == "complete":
                return path  # idempotent: this job was already written completely
            node.delete_contents(keys[-1], recursive=True, external_only=False)  # a crashed partial write
        job = node.create_container(keys[-1], metadata=meta)
        # previews first: Tiled lists a container's children in the order they were written, 10 per page, so the
        # browser opens on the pictures (checked with headless Chromium, docs/screenshots/tiled_result_container.png)
        ordered = sorted(stored.items(), key=lambda kv: not kv[0].startswith("preview"))
        for key, value in ordered:
            if key in ARRAY_DOCS:
                extra = {"description": ARRAY_DOCS[key][0], "units": ARRAY_DOCS[key][1]}
            elif key.startswith("preview"):
                extra = {"description": "preview, RGB"}
            else:
                extra = {"description": key}
            if key.startswith("preview"):
                dims = ("row", "column", "rgb")
            elif key.endswith("_lab"):
                dims = ("x_lab", "y_lab", "z_lab")
            else:
                dims = ("z", "y", "x") if value.ndim == 3 else None
            job.write_array(value, key=key, metadata=extra, dims=dims)
        job.update_metadata({"status": "complete"})
    except httpx.TransportError as exc:
        raise TiledUnavailable(f"Tiled server became unreachable while writing {path} ({exc})") from None
    except httpx.HTTPStatusError as exc:  # tiled's ClientError
        if exc.response.status_code in (401, 403):
            raise AccessError(f"Tiled refused writing {path}: this API key has no write scopes "
                                  f"({exc.response.status_code})") from None
        raise
    return path


def read_result(client, path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read every array and the metadata of a result container (support back to bool)."""
    node = _node(client, path)
    arrays = {key: node[key].read() for key in node}
    for key in BOOL_ARRAYS:
        if key in arrays:
            arrays[key] = arrays[key].astype(bool)
    return arrays, dict(node.metadata)
