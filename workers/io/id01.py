"""ESRF ID01 BLISS scans: frames, masks and geometry metadata from a dataset or sample-level master file.

Layout (see docs and /work/shared/notes/id01.md): one NXentry per scan ("1.1", ...; "<sample>_<dataset>_1.1" in
master files, as external links), frames at ``<scan>/measurement/<det>`` -> ``instrument/<det>/image``, usually a
virtual dataset or external link into ``scanNNNN/<det>_0000.h5``. h5py silently returns zeros when such a source
file is missing, so every source is checked before reading.

The metadata and mask logic (``scan_metadata``, ``build_mask``) works on a ``get(path)`` callable so the Tiled
adapter (workers/io/tiled_store.py) reuses it on the same tree served by Tiled.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from physics.errors import InputError

__all__ = [
    "DETECTORS",
    "list_scans",
    "load_scan",
    "scan_metadata",
    "detector_gap_mask",
    "hot_pixel_mask",
    "build_mask",
    "normalise_by_monitor",
    "read_metadata",
    "write_bliss_scan",
    "assemble",
    "peak_region",
]

# name -> (rows, columns, pixel size m). Order = auto-detection preference.
DETECTORS: dict[str, tuple[int, int, float]] = {
    "mpx1x4": (516, 516, 55e-6),
    "mpxgaas": (516, 516, 55e-6),
    "eiger2M": (2164, 1030, 75e-6),
}
SCAN_COMMANDS = ("ascan", "dscan", "a2scan", "d2scan", "a3scan", "d3scan", "lookupscan", "fscan", "timescan")
ANGLE_MOTORS = ("eta", "phi", "mu", "delta", "nu")

# Maxipix 2x2: rows and columns 255-260 (virtual 4-pixel gap plus the enlarged chip-edge pixels).
_MAXIPIX_GAP = (255, 260)
# Eiger2M module gaps and known bad lines, inclusive ranges (rows, then columns).
_EIGER2M_GAP_ROWS = ((255, 258), (511, 551), (804, 808), (1061, 1101), (1355, 1358), (1611, 1651), (1905, 1908))
_EIGER2M_GAP_COLS = ((255, 258), (513, 516), (771, 774))


# --------------------------------------------------------------------------------------------------------------------
# masks and normalisation (pure, arrays only)

def detector_gap_mask(detector: str, frame_shape: tuple[int, int]) -> np.ndarray:
    """2D bool mask (True = gap) of the chip/module gaps of a known detector; all False for an unknown one."""
    mask = np.zeros(frame_shape, dtype=bool)
    rows, cols = frame_shape
    if detector in ("mpx1x4", "mpxgaas") and frame_shape == (516, 516):
        lo, hi = _MAXIPIX_GAP
        mask[lo:hi + 1, :] = True
        mask[:, lo:hi + 1] = True
    elif detector == "eiger2M" and frame_shape == (2164, 1030):
        for lo, hi in _EIGER2M_GAP_ROWS:
            mask[lo:hi + 1, :] = True
        for lo, hi in _EIGER2M_GAP_COLS:
            mask[:, lo:hi + 1] = True
    return mask


def hot_pixel_mask(frames: np.ndarray, mask2d: np.ndarray | None = None, threshold: float = 100.0,
                   size: int = 3) -> np.ndarray:
    """2D mask of hot pixels: summed counts above ``threshold`` x (3x3 median + 1) of the summed frame.

    A hot pixel fires in every frame, so the rocking-curve sum makes it stand out while a Bragg peak (several
    pixels wide) stays close to its neighbourhood median.
    """
    total = np.asarray(frames, dtype=np.float64).sum(axis=0)
    if mask2d is not None:
        total = np.where(mask2d, 0.0, total)
    med = ndimage.median_filter(total, size=size, mode="nearest")
    return total > threshold * (med + 1.0)


def build_mask(frames: np.ndarray, detector: str, pixel_mask: np.ndarray | None = None,
               saturation: float | None = None, hot_pixels: bool = True,
               roi: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """3D bool mask (True = bad) from pixel_mask, detector gaps, hot pixels and invalid/saturated voxels.

    ``roi`` = (row0, col0, full_rows, full_cols) when ``frames`` is a detector region read on its own (Tiled path):
    gaps and pixel_mask are then taken on the full frame and cut. Returns (mask, counts of masked pixels per source).
    """
    nz, rows, cols = frames.shape
    r0, c0, full_rows, full_cols = roi if roi is not None else (0, 0, rows, cols)
    cut = (slice(r0, r0 + rows), slice(c0, c0 + cols))
    counts: dict[str, int] = {}
    m2 = detector_gap_mask(detector, (full_rows, full_cols))[cut]
    counts["gap_pixels"] = int(m2.sum())
    if pixel_mask is not None:
        pm = np.asarray(pixel_mask)
        if pm.shape != (full_rows, full_cols):
            raise InputError(f"pixel_mask shape {pm.shape} differs from the frame shape {(full_rows, full_cols)}")
        pm = pm.astype(bool)[cut]
        counts["pixel_mask_pixels"] = int(pm.sum())
        m2 = m2 | pm
    if hot_pixels:
        hot = hot_pixel_mask(frames, m2)
        counts["hot_pixels"] = int((hot & ~m2).sum())
        m2 = m2 | hot
    mask = np.broadcast_to(m2, frames.shape).copy()
    invalid = frames < 0
    if frames.dtype.kind == "u":
        invalid |= frames == np.iinfo(frames.dtype).max  # Eiger marks dead pixels with the max value
    if saturation is not None and saturation > 0:
        invalid |= frames >= saturation
    counts["invalid_voxels"] = int((invalid & ~mask).sum())
    return mask | invalid, counts


def normalise_by_monitor(frames: np.ndarray, monitor: np.ndarray) -> np.ndarray:
    """Scale each frame by mean(monitor)/monitor[frame] so a drifting beam does not distort the rocking curve."""
    monitor = np.asarray(monitor, dtype=np.float64).ravel()
    if monitor.shape[0] != frames.shape[0]:
        raise InputError(f"monitor has {monitor.shape[0]} values for {frames.shape[0]} frames")
    if not np.all(np.isfinite(monitor)) or np.any(monitor <= 0):
        raise InputError("monitor has zero, negative or non-finite values: cannot normalise")
    scale = monitor.mean() / monitor
    return (frames * scale[:, None, None]).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------------
# metadata from any tree (h5py entry or Tiled node) through get(path)

def _text(value) -> str | None:
    """Decode an HDF5 string scalar (bytes, str or 0-d array) to str."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _float(value) -> float | None:
    """A scalar float, or None when absent."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    return float(arr.ravel()[0]) if arr.size else None


def parse_title(title: str | None) -> dict[str, Any]:
    """Scan command, motor, start, stop and intervals from a BLISS title like 'ascan eta 15.24 19.24 50 1'."""
    out: dict[str, Any] = {"command": None}
    if not title:
        return out
    tokens = title.split()
    out["command"] = tokens[0]
    if tokens[0] in ("ascan", "dscan") and len(tokens) >= 5:
        try:
            out.update(motor=tokens[1], start=float(tokens[2]), stop=float(tokens[3]), intervals=int(tokens[4]))
        except ValueError:
            pass
    return out


def read_monitor(get: Callable[[str], Any], monitor: str, where: str) -> np.ndarray:
    """The monitor counter of a scan, from measurement/<name> or instrument/<name>/data (BLISS puts it in both)."""
    mon = get(f"measurement/{monitor}")
    if mon is None:
        mon = get(f"instrument/{monitor}/data")
    if mon is None:
        raise InputError(f"{where}: monitor counter {monitor!r} not found")
    return np.asarray(mon)


def scan_metadata(get: Callable[[str], Any], detector: str, scan: str, nb_frames: int) -> dict[str, Any]:
    """Geometry and scan metadata of one BLISS entry, read through ``get(relative_path) -> value or None``.

    Units are in the key names (eV, m, deg, px). The rocking motor is the title's motor when it is an array in the
    positioners, else the first of eta/phi/mu that is an array; its step is the median difference.
    """
    det = f"instrument/{detector}"
    title = _text(get("title"))
    energy = _float(get("instrument/monochromator/Energy"))
    if energy is None:
        nrj_kev = _float(get("instrument/positioners/mononrj"))
        energy = nrj_kev * 1000.0 if nrj_kev is not None else None
    wavelength = _float(get("instrument/monochromator/WaveLength"))
    if wavelength is None and energy:
        wavelength = 12398.419843320026e-10 / energy  # hc = 12398.42 eV·Å
    meta: dict[str, Any] = {
        "scan": scan,
        "title": title,
        "start_time": _text(get("start_time")),
        "sample_name": _text(get("sample/name")),
        "detector": detector,
        "energy_eV": energy,
        "wavelength_m": wavelength,
        "distance_m": _float(get(f"{det}/distance")),
        "pixel_size_x_m": _float(get(f"{det}/x_pixel_size")),
        "pixel_size_y_m": _float(get(f"{det}/y_pixel_size")),
        "beam_center_x_px": _float(get(f"{det}/beam_center_x")),
        "beam_center_y_px": _float(get(f"{det}/beam_center_y")),
        "nb_frames": int(nb_frames),
    }
    if meta["pixel_size_x_m"] is None and detector in DETECTORS:
        meta["pixel_size_x_m"] = meta["pixel_size_y_m"] = DETECTORS[detector][2]
    arrays: dict[str, np.ndarray] = {}
    for motor in ANGLE_MOTORS:
        value = get(f"instrument/positioners/{motor}")
        if value is None:
            meta[f"{motor}_deg"] = 0.0 if motor == "mu" else None  # mu is absent on some ID01 set-ups: 0
            continue
        arr = np.asarray(value, dtype=np.float64).ravel()
        if arr.size > 1:
            arrays[motor] = arr
        meta[f"{motor}_deg"] = float(arr[arr.size // 2])  # middle of the rocking curve for a scanned motor
    parsed = parse_title(title)
    motor = parsed.get("motor") if parsed.get("motor") in arrays else next(
        (m for m in ("eta", "phi", "mu") if m in arrays), None)
    if motor is None and arrays:
        motor = next(iter(arrays))
    meta["scan_command"] = parsed.get("command")
    meta["rocking_motor"] = motor
    if motor is not None:
        angles = arrays[motor]
        meta["rocking_angles_deg"] = [float(a) for a in angles]
        meta["rocking_start_deg"] = float(angles[0])
        meta["rocking_stop_deg"] = float(angles[-1])
        meta["rocking_step_deg"] = float(np.median(np.diff(angles))) if angles.size > 1 else None
    else:
        meta["rocking_angles_deg"] = None
        meta["rocking_start_deg"] = meta["rocking_stop_deg"] = meta["rocking_step_deg"] = None
    return meta


# --------------------------------------------------------------------------------------------------------------------
# HDF5 (h5py) adapter

def _h5py():
    import h5py  # local: keeps `import workers.io.id01` light for callers that only need the pure helpers
    return h5py


def list_scans(path: str | os.PathLike) -> list[str]:
    """Names of the scan entries of a BLISS dataset or master file (external links included, not opened)."""
    h5py = _h5py()
    with _open(path, h5py) as f:
        return sorted(f.keys(), key=_scan_sort_key)


def _scan_sort_key(name: str):
    """Sort '2.1' before '10.1' and keep prefixed master-file names together."""
    stem = name.rsplit("_", 1)[-1]
    try:
        return (name[: len(name) - len(stem)], float(stem.split(".")[0]), stem)
    except ValueError:
        return (name, 0.0, stem)


def _open(path, h5py):
    """Open read-only with a one-line error for missing or non-HDF5 files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ID01 file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path} is not a readable HDF5 file ({exc})") from None


def resolve_scan_name(keys: list[str], scan: str | int | float) -> str:
    """Entry name for a scan given as '1.1', '1', 1, or a full master-file name '<sample>_<dataset>_1.1'."""
    scan = str(scan).strip()
    if scan in keys:
        return scan
    wanted = scan if "." in scan else f"{scan}.1"
    if wanted in keys:
        return wanted
    matches = [k for k in keys if k.endswith(f"_{wanted}")]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InputError(f"scan {scan} is ambiguous in this master file: pass one of {', '.join(sorted(matches))}")
    shown = ", ".join(sorted(keys, key=_scan_sort_key)[:12]) + (" ..." if len(keys) > 12 else "")
    raise InputError(f"unknown scan {scan!r}: the file has {shown or 'no scans'}")


def _link_target_file(group, name: str, base_dir: Path) -> Path | None:
    """For an external link ``group[name]``, the target file if it exists, else raise InputError naming it."""
    h5py = _h5py()
    link = group.get(name, getlink=True)
    if not isinstance(link, h5py.ExternalLink):
        return None
    candidates = [Path(link.filename)] if Path(link.filename).is_absolute() else [
        base_dir / link.filename, Path.cwd() / link.filename]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"{group.name.rstrip('/')}/{name} is an external link to {link.filename}:{link.path}, "
                     f"but that file is missing (looked in {base_dir})")


def _check_links_along(entry, relpath: str, base_dir: Path) -> None:
    """Walk a path link by link (following soft links) and raise a clear error on a dangling external link."""
    h5py = _h5py()
    group = entry
    parts = relpath.strip("/").split("/")
    for i, part in enumerate(parts):
        link = group.get(part, getlink=True)
        if link is None:
            return
        if isinstance(link, h5py.SoftLink):
            target = link.path
            _check_links_along(entry.file, target, base_dir)
            return
        _link_target_file(group, part, base_dir)
        if i < len(parts) - 1:
            try:
                group = group[part]
            except KeyError:
                return


def _check_virtual_sources(dset, what: str) -> None:
    """Raise InputError when a virtual dataset's source file or dataset is missing (h5py would read zeros)."""
    h5py = _h5py()
    if not dset.is_virtual:
        return
    own = Path(dset.file.filename).resolve()
    prefix = os.environ.get("HDF5_VDS_PREFIX")
    for src in dset.virtual_sources():
        name = src.file_name
        if name == ".":
            path = own
        else:
            candidates = [Path(name)] if Path(name).is_absolute() else (
                ([Path(prefix) / name] if prefix else []) + [own.parent / name, Path.cwd() / name])
            path = next((c for c in candidates if c.is_file()), None)
            if path is None:
                raise InputError(f"{what}: virtual dataset source file {name} is missing "
                                 f"(looked next to {own.name} in {own.parent}); h5py would return zeros")
        try:
            with h5py.File(path, "r") as src_file:
                if src.dset_name not in src_file:
                    raise InputError(f"{what}: source dataset {src.dset_name} is missing in {path}")
        except OSError as exc:
            raise InputError(f"{what}: virtual dataset source {path} cannot be opened ({exc})") from None


def pick_detector(present: set[str], detector: str | None, scan: str) -> str | None:
    """The detector asked for (an InputError naming the ones present if absent), else the first known one
    present, else None (the caller may look further). Shared by the HDF5 and the Tiled readers."""
    if detector is not None:
        if detector in present:
            return detector
        raise InputError(f"detector {detector!r} not found in scan {scan} "
                         f"(known detectors present: {', '.join(d for d in DETECTORS if d in present) or 'none'})")
    return next((name for name in DETECTORS if name in present), None)


def _find_detector(entry, detector: str | None) -> str:
    """The detector name: the one asked for (checked), else the first known one present, else any 3D image."""
    h5py = _h5py()
    meas = entry.get("measurement")
    inst = entry.get("instrument")
    present = set(meas.keys()) if isinstance(meas, h5py.Group) else set()
    if isinstance(inst, h5py.Group):
        present |= {n for n in inst.keys() if n in DETECTORS or n == detector}
    name = pick_detector(present, detector, entry.name.strip("/"))
    if name is not None:
        return name
    if inst is not None:  # an unknown camera: any instrument/<det>/image that is a 3D stack
        for name in inst.keys():
            obj = inst.get(f"{name}/image") if isinstance(inst.get(name), h5py.Group) else None
            if isinstance(obj, h5py.Dataset) and obj.ndim == 3:
                return name
    raise InputError(f"no detector found in scan {entry.name.strip('/')} "
                     f"(looked for {', '.join(DETECTORS)} under measurement/ and instrument/)")


def _h5_getter(entry) -> Callable[[str], Any]:
    """get(path) for scan_metadata: the dataset value, or None when absent or unreadable."""
    h5py = _h5py()

    def get(path: str):
        try:
            obj = entry.get(path)
        except (KeyError, OSError):
            return None
        if not isinstance(obj, h5py.Dataset):
            return None
        return obj[()]

    return get


def peak_region(read_frame: Callable[[int], np.ndarray], frame_indices: list[int], frame_shape: tuple[int, int],
                detector: str, roi_size: tuple[int, int], *, pixel_mask=None, saturation: float | None = None,
                hot_pixels: bool = True, probe_frames: int = 5, where: str = "scan") -> tuple[int, int, int, int]:
    """Detector region (row0, col0, rows, cols) of ``roi_size`` centred on the Bragg peak, found on a few frames.

    Reads ``probe_frames`` frames spread over the rocking curve (``read_frame(i)``), masks gaps, bad and hot pixels,
    and centres the region on the brightest pixel of their sum (shifted to stay inside the frame), so only that
    region of every frame needs to be read.
    """
    rows, cols = frame_shape
    h, w = min(int(roi_size[0]), rows), min(int(roi_size[1]), cols)
    picks = sorted({frame_indices[int(round(k))] for k in np.linspace(0, len(frame_indices) - 1,
                                                                      min(probe_frames, len(frame_indices)))})
    probe = np.stack([np.asarray(read_frame(i)) for i in picks]).astype(np.float64)
    bad = detector_gap_mask(detector, (rows, cols))
    if pixel_mask is not None and np.shape(pixel_mask) == (rows, cols):
        bad |= np.asarray(pixel_mask).astype(bool)
    if hot_pixels:
        bad |= hot_pixel_mask(probe, bad)
    if saturation:
        bad |= probe.max(axis=0) >= saturation
    total = np.where(bad, 0.0, np.clip(probe, 0, None).sum(axis=0))
    if not np.any(total > 0):
        raise InputError(f"{where}: frames are all zero (missing detector data or everything masked)")
    pr, pc = np.unravel_index(int(np.argmax(total)), total.shape)
    r0 = int(min(max(pr - h // 2, 0), rows - h))
    c0 = int(min(max(pc - w // 2, 0), cols - w))
    return r0, c0, h, w


def read_metadata(path: str | os.PathLike, scan: str | int = "1.1", detector: str | None = None) -> dict[str, Any]:
    """Metadata of one scan without reading frames (works even when the frame files are absent)."""
    h5py = _h5py()
    path = Path(path)
    with _open(path, h5py) as f:
        name = resolve_scan_name(list(f.keys()), scan)
        _link_target_file(f, name, path.resolve().parent)
        entry = f[name]
        det = _find_detector(entry, detector)
        image = entry.get(f"instrument/{det}/image", getlink=True)
        shape = None
        if image is not None and not isinstance(image, h5py.ExternalLink):
            shape = entry[f"instrument/{det}/image"].shape
        meta = scan_metadata(_h5_getter(entry), det, name, shape[0] if shape else 0)
        meta["frames_shape"] = list(shape) if shape else None
    meta["file"] = str(path)
    return meta


def load_scan(path: str | os.PathLike, scan: str | int = "1.1", detector: str | None = None, *,
              frames: slice | None = None, hot_pixels: bool = True, monitor: str | None = None,
              roi_size: tuple[int, int] | None = None,
              probe_frames: int = 5) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read one ID01 BLISS scan: (frames float32 (z, y, x), mask bool (True = bad), metadata dict).

    ``scan``: '1.1', '1' or a master-file entry name; ``detector``: mpx1x4/mpxgaas/eiger2M/..., auto-detected when
    None; ``frames``: optional slice of the rocking axis; ``monitor``: counter name (e.g. 'mon2') to normalise by;
    ``roi_size``: read only a (rows, cols) detector region around the peak (``peak_region``; e.g. for Eiger2M),
    its origin in metadata["detector_roi_offset"]. Masked voxels are set to 0. Raises InputError for an unknown scan, no detector, a missing source file or
    all-zero frames.
    """
    h5py = _h5py()
    path = Path(path)
    with _open(path, h5py) as f:
        name = resolve_scan_name(list(f.keys()), scan)
        base_dir = path.resolve().parent
        _link_target_file(f, name, base_dir)  # master file: the dataset file must exist
        try:
            entry = f[name]
        except KeyError as exc:
            raise InputError(f"scan {name} in {path.name} cannot be opened ({exc})") from None
        det = _find_detector(entry, detector)
        where = f"scan {name} ({det})"
        entry_dir = Path(entry.file.filename).resolve().parent
        frames_path = f"measurement/{det}" if entry.get(f"measurement/{det}", getlink=True) is not None \
            else f"instrument/{det}/image"
        _check_links_along(entry, frames_path, entry_dir)
        try:
            dset = entry[frames_path]
        except KeyError as exc:
            raise InputError(f"{where}: frames at {frames_path} cannot be opened ({exc})") from None
        if not isinstance(dset, h5py.Dataset) or dset.ndim != 3:
            raise InputError(f"{where}: {frames_path} is not a 3D frame stack")
        _check_virtual_sources(dset, where)
        sel = frames if frames is not None else slice(None)
        get = _h5_getter(entry)
        pixel_mask = get(f"instrument/{det}/pixel_mask")
        saturation = _float(get(f"instrument/{det}/saturation_value"))
        n, rows, cols = dset.shape
        roi = None
        try:
            if roi_size is not None and (roi_size[0] < rows or roi_size[1] < cols):
                indices = list(range(n))[sel]
                if not indices:
                    raise InputError(f"{where}: frame selection {sel} selects no frames of {n}")
                r0, c0, h, w = peak_region(lambda i: dset[i], indices, (rows, cols), det, roi_size,
                                           pixel_mask=pixel_mask, saturation=saturation, hot_pixels=hot_pixels,
                                           probe_frames=probe_frames, where=where)
                data = dset[sel, r0:r0 + h, c0:c0 + w]
                roi = (r0, c0, rows, cols)
            else:
                data = dset[sel]
        except OSError as exc:
            raise InputError(f"{where}: frames cannot be read ({exc})") from None
        meta = scan_metadata(get, det, name, dset.shape[0])
        mon = None if monitor is None else read_monitor(get, monitor, where)[sel]
    meta["file"] = str(path)
    return assemble(data, det, meta, pixel_mask=pixel_mask, saturation=saturation, hot_pixels=hot_pixels,
                    monitor=mon, frame_selection=sel, roi=roi)


def assemble(data: np.ndarray, detector: str, meta: dict[str, Any], *, pixel_mask=None, saturation=None,
             hot_pixels: bool = True, monitor=None, frame_selection: slice = slice(None),
             roi: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Masks, optional monitor normalisation and sanity checks on raw frames (shared by the HDF5 and Tiled paths)."""
    where = f"scan {meta.get('scan')} ({detector})"
    data = np.asarray(data)
    if data.ndim != 3 or data.shape[0] == 0:
        raise InputError(f"{where}: no frames selected (shape {data.shape})")
    mask, counts = build_mask(data, detector, pixel_mask=pixel_mask, saturation=saturation, hot_pixels=hot_pixels,
                              roi=roi)
    out = np.where(mask, 0.0, data).astype(np.float32)
    if not np.any(out > 0):
        raise InputError(f"{where}: frames are all zero (missing detector data or everything masked)")
    if monitor is not None:
        out = normalise_by_monitor(out, monitor)
    meta = dict(meta)
    meta.update(counts)
    meta["frames_shape"] = list(out.shape)
    meta["frame_selection"] = [frame_selection.start, frame_selection.stop, frame_selection.step]
    meta["monitor_normalised"] = monitor is not None
    meta["detector_roi_offset"] = [int(roi[0]), int(roi[1])] if roi is not None else [0, 0]
    if meta.get("rocking_angles_deg") and frame_selection != slice(None):
        meta["rocking_angles_deg"] = meta["rocking_angles_deg"][frame_selection]
    return out, mask, meta


# --------------------------------------------------------------------------------------------------------------------
# writer of synthetic BLISS files with the real layout (tests, demo)

def write_bliss_scan(root: str | os.PathLike, sample: str, dataset: str, frames: np.ndarray, *, scan: int = 1,
                     detector: str = "mpx1x4", link: str = "vds", rocking_motor: str = "eta",
                     rocking_range: tuple[float, float] = (30.5, 31.5), angles: dict[str, float] | None = None,
                     energy_eV: float = 9000.0, distance_m: float = 1.0,
                     beam_center: tuple[float, float] = (258.0, 258.0),
                     pixel_mask: np.ndarray | None = None, monitor: np.ndarray | None = None,
                     title: str | None = None, proposal: str | None = "hc0000") -> Path:
    """Write scan ``scan`` of ``<root>/<sample>/<sample>_<dataset>/<sample>_<dataset>.h5`` in the ID01 BLISS layout.

    Frames go to ``scanNNNN/<det>_0000.h5:/entry_0000/instrument/<det>/data`` and are exposed as
    ``instrument/<det>/image`` through a virtual dataset (``link="vds"``) or an external link (``"external"``);
    ``measurement/<det>`` and the scanned positioner are soft links, as BLISS writes them. With ``proposal``, the
    sample-level master file ``<proposal>_<sample>.h5`` gets an external link ``<sample>_<dataset>_<scan>.1``.
    Returns the dataset file path.
    """
    h5py = _h5py()
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise InputError(f"frames must be 3D (n, rows, cols), got {frames.shape}")
    n = frames.shape[0]
    name = f"{sample}_{dataset}"
    ds_dir = Path(root) / sample / name
    scan_dir = ds_dir / f"scan{scan:04d}"
    scan_dir.mkdir(parents=True, exist_ok=True)
    lima = scan_dir / f"{detector}_0000.h5"
    src_path = f"/entry_0000/instrument/{detector}/data"
    with h5py.File(lima, "w") as f:
        f.create_dataset(src_path, data=frames, chunks=(1,) + frames.shape[1:])
    angles = {"eta": 15.0, "phi": 0.0, "delta": 35.0, "nu": 0.5, "mu": 0.0, **(angles or {})}
    rock = np.linspace(rocking_range[0], rocking_range[1], n)
    title = title or f"ascan {rocking_motor} {rocking_range[0]:g} {rocking_range[1]:g} {n - 1} 1"
    ds_file = ds_dir / f"{name}.h5"
    entry_name = f"{scan}.1"
    with h5py.File(ds_file, "a") as f:
        if entry_name in f:
            del f[entry_name]
        e = f.create_group(entry_name)
        e.attrs["NX_class"] = "NXentry"
        e["title"] = title
        e["start_time"] = "2026-11-25T08:00:00+01:00"
        e.create_group("sample")["name"] = sample
        inst = e.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        det = inst.create_group(detector)
        det.attrs["NX_class"] = "NXdetector"
        image_path = f"/{entry_name}/instrument/{detector}/image"
        rel_lima = f"scan{scan:04d}/{detector}_0000.h5"
        if link == "vds":
            layout = h5py.VirtualLayout(shape=frames.shape, dtype=frames.dtype)
            layout[:] = h5py.VirtualSource(rel_lima, src_path, shape=frames.shape)
            det.create_virtual_dataset("image", layout, fillvalue=0)
            det["image"].attrs["interpretation"] = "image"
        elif link == "external":
            det["image"] = h5py.ExternalLink(rel_lima, src_path)
        else:
            raise InputError(f"link must be 'vds' or 'external', got {link!r}")
        det["data"] = h5py.SoftLink(image_path)
        rows, cols = frames.shape[1:]
        pix = DETECTORS.get(detector, (rows, cols, 55e-6))[2]
        det["dim_i"], det["dim_j"] = cols, rows
        for key, value in (("x_pixel_size", pix), ("y_pixel_size", pix), ("distance", distance_m)):
            det[key] = value
            det[key].attrs["units"] = "m"
        det["beam_center_x"], det["beam_center_y"] = beam_center[1], beam_center[0]
        det["pixel_mask"] = (np.zeros((rows, cols), np.uint8) if pixel_mask is None
                             else np.asarray(pixel_mask).astype(np.uint8))
        det["pixel_mask_applied"] = True
        det["saturation_value"] = np.int64(2**31 - 2)
        mono = inst.create_group("monochromator")
        mono["Energy"] = float(energy_eV)
        mono["WaveLength"] = 12398.419843320026e-10 / energy_eV
        motor = inst.create_group(rocking_motor)
        motor["value"] = rock
        motor["value"].attrs["units"] = "deg"
        pos = inst.create_group("positioners")
        pos.attrs["NX_class"] = "NXcollection"
        for key, value in angles.items():
            if key == rocking_motor:
                pos[key] = h5py.SoftLink(f"/{entry_name}/instrument/{rocking_motor}/value")
            else:
                pos[key] = float(value)
                pos[key].attrs["units"] = "deg"
        pos["mononrj"] = energy_eV / 1000.0
        meas = e.create_group("measurement")
        meas[detector] = h5py.SoftLink(image_path)
        meas[rocking_motor] = h5py.SoftLink(f"/{entry_name}/instrument/{rocking_motor}/value")
        if monitor is not None:
            inst.create_group("mon2")["data"] = np.asarray(monitor, dtype=np.float64)
            meas["mon2"] = h5py.SoftLink(f"/{entry_name}/instrument/mon2/data")
    if proposal:
        master = Path(root) / sample / f"{proposal}_{sample}.h5"
        with h5py.File(master, "a") as f:
            key = f"{name}_{entry_name}"
            if key in f:
                del f[key]
            f[key] = h5py.ExternalLink(f"{name}/{name}.h5", f"/{entry_name}")
    return ds_file
