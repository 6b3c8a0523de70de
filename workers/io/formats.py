"""Read a 3D diffraction intensity (and its mask) from the file formats beamlines produce, with validation.

Every reader failure becomes a physics.errors.InputError whose one-line message names the file and the
problem, so the CLI and the service can show it to the user as is. A spec is a path, optionally followed by
`:key` (an array name in a .npz) or `:/path/in/file` (a dataset in an HDF5/CXI file).
Also holds `atomic_path`, the temp-file-then-rename helper every writer uses so nothing is left half-written.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from physics.errors import InputError, InputFileError

NUMPY_SUFFIXES = (".npy", ".npz")
TIFF_SUFFIXES = (".tif", ".tiff")
HDF5_SUFFIXES = (".cxi", ".h5", ".hdf5", ".hdf", ".nxs")
KNOWN_SUFFIXES = NUMPY_SUFFIXES + TIFF_SUFFIXES + HDF5_SUFFIXES

MIN_SIZE = 16
"""Smallest accepted extent along every axis of an intensity (smaller boxes cannot hold an oversampled crystal)."""

# Where an intensity lives in a CXI file written by PyNX (data_1/data links to the detector data) or by us.
CXI_INTENSITY_PATHS = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data", "entry_1/image_2/data")
CXI_MASK_PATHS = ("entry_1/instrument_1/detector_1/mask", "entry_1/image_2/mask")
NPZ_INTENSITY_KEYS = ("intensity", "iobs", "data")
NPZ_MASK_KEYS = ("mask",)


def split_spec(spec: str | os.PathLike) -> tuple[Path, str | None]:
    """Split 'file.ext:key' into (Path('file.ext'), 'key'); a plain path gives (path, None)."""
    text = os.fspath(spec)
    if not text:
        raise InputError("empty input file name")
    if os.path.exists(text):
        return Path(text), None
    head, sep, key = text.rpartition(":")
    if sep and head and Path(head).suffix.lower() in KNOWN_SUFFIXES:
        return Path(head), (key or None)
    return Path(text), None


def _list_npz(keys) -> str:
    return ", ".join(sorted(keys)) or "none"


def _read_npy(path: Path, key: str | None) -> np.ndarray:
    if key is not None:
        raise InputError(f"{path}: a .npy file holds a single array, ':{key}' cannot select anything")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({_one_line(e)})") from None
    if magic != b"\x93NUMPY":
        raise InputError(f"{path}: not a readable .npy file (no NumPy header: damaged, or another format)")
    try:
        with open(path, "rb") as fh:  # the header says whether the array holds Python objects (pickles)
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            _shape, _order, dtype = read_header(fh)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npy file ({_one_line(e)})") from None
    if dtype.hasobject:
        raise InputError(f"{path}: holds Python objects, not a numeric array (not loaded, for safety); "
                         f"save the intensity with numpy.save of a numeric array")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise InputError(f"{path}: not a readable .npy file ({_one_line(e)})") from None
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npy file ({_one_line(e)})") from None


def _read_npz(path: Path, key: str | None, default_keys: tuple[str, ...]) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if key is not None:
                if key not in names:
                    raise InputError(f"{path}: no array '{key}' (arrays: {_list_npz(names)})")
                return z[key]
            if len(names) == 1:
                return z[names[0]]
            for k in default_keys:
                if k in names:
                    return z[k]
            raise InputError(f"{path}: holds several arrays ({_list_npz(names)}); "
                             f"choose one with {path}:NAME")
    except InputError:
        raise
    except (ValueError, OSError, EOFError, KeyError) as e:  # corrupt zip, pickled object arrays, ...
        raise InputError(f"{path}: not a readable .npz file ({_one_line(e)})") from None


def _read_tiff(path: Path, key: str | None) -> np.ndarray:
    if key is not None:
        raise InputError(f"{path}: ':{key}' cannot select anything in a TIFF file")
    import tifffile

    try:
        return tifffile.imread(path)
    except Exception as e:  # tifffile raises many types (TiffFileError, ValueError, struct.error) on bad files
        raise InputError(f"{path}: not a readable TIFF file ({_one_line(e)})") from None


def _datasets_3d(h5file) -> list[str]:
    import h5py

    found: list[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim == 3:
            found.append(name)

    h5file.visititems(visit)
    return found


def _read_hdf5(path: Path, key: str | None, defaults: tuple[str, ...], what: str) -> np.ndarray:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{path}: not a readable HDF5 file ({_one_line(e)})") from None
    with f:
        if key is not None:
            name = key.lstrip("/")
            try:
                obj = f.get(name)
            except (KeyError, OSError):  # broken soft/external link
                obj = None
            if obj is None:
                raise InputError(f"{path}: no dataset '/{name}'")
            if not isinstance(obj, h5py.Dataset):
                inside = ", ".join(sorted(obj.keys())[:10]) if isinstance(obj, h5py.Group) else ""
                raise InputError(f"{path}: '/{name}' is a group, not a dataset (it holds: {inside or 'nothing'})")
            return _read_dataset(path, obj)
        for name in defaults:
            try:
                obj = f.get(name)
            except (KeyError, OSError):
                obj = None
            if isinstance(obj, h5py.Dataset) and not np.issubdtype(obj.dtype, np.complexfloating):
                return _read_dataset(path, obj)
        scans = _bliss_scans(f)
        if scans and what == "intensity":
            raise InputError(f"{path}: is an ID01 BLISS file with scans {', '.join(scans[:6])}"
                             f"{', ...' if len(scans) > 6 else ''}; pass --scan SCAN (e.g. --scan {scans[0]}) "
                             f"so the frames are read from its detector files")
        if what == "mask":  # never guess a mask: the only 3D dataset is most likely the intensity itself
            raise InputError(f"{path}: no mask at {', '.join('/' + n for n in defaults)}; "
                             f"name it with {path}:/path/to/mask")
        candidates = [n for n in _datasets_3d(f) if not np.issubdtype(f[n].dtype, np.complexfloating)
                      and not any(w in n.rsplit("/", 1)[-1].lower() for w in ("mask", "support"))]
        if len(candidates) == 1:
            return _read_dataset(path, f[candidates[0]])
        if not candidates:
            raise InputError(f"{path}: no 3D {what} dataset found; name one with {path}:/path/to/dataset")
        shown = ", ".join("/" + c for c in candidates[:6]) + (", ..." if len(candidates) > 6 else "")
        raise InputError(f"{path}: several 3D datasets ({shown}); choose one with {path}:/path/to/dataset")


def _bliss_scans(h5file) -> list[str]:
    """Top-level BLISS scan entries ('1.1', '2.1', ...) of an HDF5 file; empty for any other file."""
    import re

    try:
        names = list(h5file.keys())
    except (OSError, KeyError):
        return []
    scans = {m.group(1) for n in names if (m := re.fullmatch(r"(?:.+_)?(\d+\.\d+)", n))}  # master: PtNP_0001_1.1
    return sorted(scans, key=lambda n: tuple(map(int, n.split("."))))


def _read_dataset(path: Path, ds) -> np.ndarray:
    try:
        return ds[()]
    except (OSError, TypeError, ValueError) as e:
        raise InputError(f"{path}: cannot read dataset '{ds.name}' ({_one_line(e)})") from None


def read_array(spec: str | os.PathLike, *, what: str = "intensity") -> tuple[np.ndarray, str]:
    """Load the raw array named by spec; returns (array, label) where label names file and key for messages."""
    path, key = split_spec(spec)
    label = f"{path}:{key}" if key else str(path)
    if not path.exists():
        raise InputFileError(f"{what} file not found: {path}")
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, expected a {what} file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = _read_npy(path, key)
    elif suffix == ".npz":
        arr = _read_npz(path, key, NPZ_MASK_KEYS if what == "mask" else NPZ_INTENSITY_KEYS)
    elif suffix in TIFF_SUFFIXES:
        arr = _read_tiff(path, key)
    elif suffix in HDF5_SUFFIXES:
        arr = _read_hdf5(path, key, CXI_MASK_PATHS if what == "mask" else CXI_INTENSITY_PATHS, what)
    else:
        raise InputFileError(f"{path}: unknown file type '{suffix or '(none)'}' "
                         f"(expected one of {', '.join(KNOWN_SUFFIXES)})")
    return np.asarray(arr), label


def _check_3d(arr: np.ndarray, label: str, what: str) -> None:
    if arr.ndim != 3:
        raise InputError(f"{label}: {what} is {arr.ndim}D with shape {tuple(arr.shape)}, expected a 3D array")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InputError(f"{label}: {what} has non-numeric type {arr.dtype}")


def read_intensity(spec: str | os.PathLike, *, min_size: int = MIN_SIZE, allow_negative: bool = False) -> np.ndarray:
    """Read a 3D diffracted intensity (photon counts, centred on the Bragg peak) as float32, or raise InputError.

    Rejects: missing file/key/dataset, not 3D, complex or non-numeric values, NaN/inf, negative counts,
    all zeros, fewer than `min_size` voxels along an axis. allow_negative keeps negative values (background-
    subtracted data) for the front end to clip or mask (physics.preprocess.subtract_background).
    """
    arr, label = read_array(spec, what="intensity")
    _check_3d(arr, label, "intensity")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"{label}: intensity is complex ({arr.dtype}); give the measured intensity, not an object")
    small = [n for n in arr.shape if n < min_size]
    if small:
        raise InputError(f"{label}: intensity shape {tuple(arr.shape)} is too small "
                         f"(at least {min_size} voxels per axis)")
    data = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(f"{label}: intensity has {int(bad.sum())} NaN or infinite values "
                         f"(mark bad voxels with --mask instead)")
    n_neg = int((data < 0).sum())
    if n_neg and not allow_negative:
        raise InputError(f"{label}: intensity has {n_neg} negative values (min {float(data.min()):.3g}); "
                         f"counts must be >= 0: clip them (--negative clip), leave them out of the fit "
                         f"(--negative mask) or mark bad voxels with --mask")
    if not data.any():
        raise InputError(f"{label}: intensity is all zeros")
    return np.ascontiguousarray(data)


def read_mask(spec: str | os.PathLike, shape: tuple[int, ...]) -> np.ndarray:
    """Read a 3D mask matching `shape` as bool (True = masked/unknown voxel: nonzero in the file)."""
    arr, label = read_array(spec, what="mask")
    _check_3d(arr, label, "mask")
    if tuple(arr.shape) != tuple(shape):
        raise InputError(f"{label}: mask shape {tuple(arr.shape)} does not match the intensity shape {tuple(shape)}")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise InputError(f"{label}: mask has NaN values (use 0 = valid, nonzero = masked)")
    mask = np.ascontiguousarray(arr != 0)
    if mask.all():
        raise InputError(f"{label}: mask masks every voxel (nonzero = masked; nothing left to fit)")
    return mask


def companion_mask_spec(spec: str | os.PathLike) -> str | None:
    """The spec of a mask stored in the same file as an intensity (npz 'mask' array, CXI detector/image_2 mask).

    Only for files where the intensity was found by default or under its usual name; None when there is none.
    """
    path, key = split_spec(spec)
    suffix = path.suffix.lower()
    if not path.is_file():
        return None
    try:
        if suffix == ".npz" and key in (None,) + NPZ_INTENSITY_KEYS:
            with np.load(path, allow_pickle=False) as z:
                return f"{path}:mask" if "mask" in z.files and len(z.files) > 1 else None
        if suffix in HDF5_SUFFIXES and (key is None or key.lstrip("/") in CXI_INTENSITY_PATHS):
            import h5py

            with h5py.File(path, "r") as f:
                for name in CXI_MASK_PATHS:
                    if isinstance(f.get(name), h5py.Dataset):
                        return f"{path}:/{name}"
    except (OSError, ValueError, KeyError):
        return None
    return None


def check_output_path(path: str | os.PathLike, *, suffixes: tuple[str, ...] | None = None,
                      what: str = "output") -> Path:
    """Check an output file can be created (directory exists, expected suffix, not a directory); returns it."""
    out = Path(path)
    if suffixes and out.suffix.lower() not in suffixes:
        raise InputError(f"{out}: {what} file must end with {' or '.join(suffixes)}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{out}: output directory {parent} does not exist")
    if out.is_dir():
        raise InputError(f"{out}: is a directory, expected a file name")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{out}: output directory {parent} is not writable")
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on success rename it onto `path`, on failure delete it.

    The temp name keeps the real suffix last-but-one free (name.tmp<pid>.ext) so libraries that look at
    the suffix (numpy, h5py, matplotlib) behave as for the real file.
    """
    final = Path(path)
    tmp = final.with_name(f".{final.stem}.tmp{os.getpid()}{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] if text else type(err).__name__
