"""Storage of simulated samples: one sample per `.npz`, or a whole set in one HDF5 file (stacked datasets)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

ARRAY_KEYS = ("intensity", "intensity_clean", "mask", "phase", "object", "support")


def save_sample_npz(path: str | os.PathLike, sample: dict) -> None:
    """Write one sample atomically (temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **sample)
    os.replace(tmp, path)


def save_set(path: str | os.PathLike, samples: Iterable[dict], n: int | None = None,
             params: dict | None = None) -> int:
    """Write samples into one HDF5 file: arrays stacked along a first axis, scalars as 1-D datasets.

    Written to a temp file and renamed at the end, so an interrupted run leaves nothing half-written.
    Returns the number of samples written.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "bcdi-recon simulated set v1"
            if params is not None:
                f.attrs["params"] = json.dumps(params, default=float)
            for s in samples:
                for k, v in s.items():
                    v = np.asarray(v)
                    dtype = h5py.string_dtype() if v.dtype.kind == "U" else v.dtype
                    if v.dtype.kind == "U":
                        v = str(v)
                    if count == 0:
                        f.create_dataset(k, shape=(n or 1,) + np.shape(v), maxshape=(None,) + np.shape(v), dtype=dtype,
                                         chunks=(1,) + np.shape(v) if np.ndim(v) >= 3 else True,
                                         compression="gzip" if np.ndim(v) >= 3 else None,
                                         compression_opts=1 if np.ndim(v) >= 3 else None)
                    ds = f[k]
                    if ds.shape[0] <= count:
                        ds.resize(count + 1, axis=0)
                    ds[count] = v
                count += 1
            for k in f:
                if f[k].shape[0] > count:
                    f[k].resize(count, axis=0)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return count


def load_set(path: str | os.PathLike, indices=None) -> dict:
    """Read a set written by `save_set` as a dict of stacked arrays (optionally only some samples)."""
    with h5py.File(path, "r") as f:
        sel = slice(None) if indices is None else np.sort(np.asarray(indices))
        out = {}
        for k in f:
            ds = f[k]
            out[k] = ds.asstr()[sel] if h5py.check_string_dtype(ds.dtype) else ds[sel]
        return out
