"""Write and read reconstruction results as CXI (HDF5) files laid out like PyNX's, readable by PyNX and silx.

Layout (CXI 1.6 / NeXus style; what PyNX's `save_obj_cxi` writes, which `pynx-cdi-analysis` loads):
  /cxi_version                          160
  /entry_1                  NXentry     program_name, start_time, default=data_1
  /entry_1/image_1          NXdata      data: complex64 object (centred, full grid of the intensity),
                                        mask: support (uint8, 1 = inside), support -> mask (soft link),
                                        data_type "electron density", data_space "real"
  /entry_1/image_1/process_1 NXprocess  program, version, command, note,
                                        configuration/ (NXcollection: recipe, engine, seed, ..., free_pixel_mask)
                                        results/ (NXcollection: llk_poisson, free_llk_poisson, obj2_out, timings)
  /entry_1/image_2          NXdata      (optional) data: observed intensity (float32, centred),
                                        mask: detector mask (uint8, 1 = masked), data_space "diffraction"
  /entry_1/image_3, image_4 NXdata      (optional) data: displacement, strain (float32, object grid, units attr),
                                        data_type "displacement" / "strain", data_space "real"
  /entry_1/data_1           NXdata      data -> /entry_1/image_1/data (soft link): what viewers open first
The intensity is deliberately not stored under entry_1/instrument_1/detector_1/data: PyNX's loader takes a file
with that dataset for a *data* file instead of a result.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from physics.errors import InputError
from workers.io.formats import atomic_path, check_output_path

CXI_VERSION = 160
PROGRAM = "bcdi-recon"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("bcdi-recon")
    except Exception:  # not installed (running from a source tree)
        return "unknown"


def _h5_value(v: Any):
    """Turn a Python value into something h5py stores natively (str, number, array); None is skipped."""
    if isinstance(v, (str, bytes, bool, int, float, np.generic)):
        return v
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, str) for x in v):
            return ",".join(v)
        try:
            arr = np.asarray(v)
        except ValueError:  # ragged
            return str(v)
        return arr if arr.dtype.kind in "biufc" else str(v)
    if isinstance(v, np.ndarray):
        return v if v.dtype.kind in "biufc" else str(v.tolist())
    return str(v)


def _write_collection(group, items: Mapping[str, Any] | None) -> None:
    """Write a dict as datasets of an NXcollection group; nested dicts become sub-collections."""
    for key, value in (items or {}).items():
        if value is None:
            continue
        key = str(key).replace("/", "_")
        if isinstance(value, Mapping):
            sub = group.require_group(key)
            sub.attrs["NX_class"] = "NXcollection"
            _write_collection(sub, value)
            continue
        data = _h5_value(value)
        if key in group:
            del group[key]
        if isinstance(data, np.ndarray) and data.size > 64:
            group.create_dataset(key, data=data, chunks=True, shuffle=True, compression="gzip")
        else:
            group.create_dataset(key, data=data)


def _pynx_result_names(results: Mapping[str, Any] | None) -> dict[str, Any]:
    """Add PyNX's names for the free log-likelihoods (llk_poisson_free -> free_llk_poisson), keeping ours too."""
    out = dict(results or {})
    for key, value in list(out.items()):
        if key.startswith("llk_") and key.endswith("_free"):
            out.setdefault("free_" + key[: -len("_free")], value)
    return out


def write_cxi(path: str | os.PathLike, obj: np.ndarray, support: np.ndarray, *,
              iobs: np.ndarray | None = None, mask: np.ndarray | None = None,
              process: Mapping[str, Any] | None = None, results: Mapping[str, Any] | None = None,
              free_mask: np.ndarray | None = None, crop_offsets=None, command: str | None = None,
              note: str | None = None, sample_name: str | None = None,
              derived: Mapping[str, tuple[np.ndarray, str]] | None = None) -> Path:
    """Write a reconstructed object + support (centred, full grid of the intensity) to a CXI file atomically.

    process: parameters (recipe, engine, seed, ...) -> process_1/configuration; results: LLK, free LLK,
    obj2_out, timings, ... -> process_1/results; crop_offsets: where the analysed box starts in the raw data;
    derived: name -> (real-space array on the object grid, units), e.g. displacement and strain, written as
    further entry_1/image_N groups (data_type = name, data_space = real) after the intensity.
    The file appears only once complete (temp file + rename). Returns the path.
    """
    import h5py

    obj = np.asarray(obj)
    support = np.asarray(support)
    if obj.ndim != 3 or not np.iscomplexobj(obj):
        raise ValueError(f"write_cxi: obj must be a 3D complex array, got {obj.dtype} {obj.shape}")
    if support.shape != obj.shape:
        raise ValueError(f"write_cxi: support shape {support.shape} != object shape {obj.shape}")
    if iobs is not None and np.shape(iobs) != obj.shape:
        raise ValueError(f"write_cxi: iobs shape {np.shape(iobs)} != object shape {obj.shape}")
    if mask is not None and np.shape(mask) != obj.shape:
        raise ValueError(f"write_cxi: mask shape {np.shape(mask)} != object shape {obj.shape}")
    if free_mask is not None and np.shape(free_mask) != obj.shape:
        raise ValueError(f"write_cxi: free_mask shape {np.shape(free_mask)} != object shape {obj.shape}")
    for name, (arr, _) in (derived or {}).items():
        if np.shape(arr) != obj.shape:
            raise ValueError(f"write_cxi: {name} shape {np.shape(arr)} != object shape {obj.shape}")
    out = check_output_path(path)
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    version = _version()
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["creator"] = PROGRAM
            f.attrs["default"] = "entry_1"
            f.attrs["HDF5_Version"] = h5py.version.hdf5_version
            f.attrs["h5py_version"] = h5py.version.version
            f.attrs["file_time"] = now
            f.create_dataset("cxi_version", data=CXI_VERSION)
            entry = f.create_group("entry_1")
            entry.attrs["NX_class"] = "NXentry"
            entry.attrs["default"] = "data_1"
            entry.create_dataset("program_name", data=f"{PROGRAM} {version}")
            entry.create_dataset("start_time", data=now)
            f["entry_last"] = h5py.SoftLink("/entry_1")
            if sample_name:
                sample = entry.create_group("sample_1")
                sample.attrs["NX_class"] = "NXsample"
                sample.create_dataset("name", data=sample_name)

            image = entry.create_group("image_1")
            image.attrs["NX_class"] = "NXdata"
            image.attrs["signal"] = "data"
            image.attrs["interpretation"] = "scaler"  # what PyNX writes for 3D volumes
            image.create_dataset("data", data=obj.astype(np.complex64), chunks=True, shuffle=True,
                                 compression="gzip")
            image.create_dataset("mask", data=(support != 0).astype(np.uint8), chunks=True, shuffle=True,
                                 compression="gzip")
            image["support"] = h5py.SoftLink("/entry_1/image_1/mask")
            image.create_dataset("data_type", data="electron density")
            image.create_dataset("data_space", data="real")

            proc = image.create_group("process_1")
            proc.attrs["NX_class"] = "NXprocess"
            proc.create_dataset("program", data=PROGRAM)
            proc.create_dataset("version", data=version)
            proc.create_dataset("command", data=command if command is not None else " ".join(sys.argv))
            proc.create_dataset("date", data=now)
            if note:
                proc.create_dataset("note", data=note)
            config = proc.create_group("configuration")
            config.attrs["NX_class"] = "NXcollection"
            _write_collection(config, process)
            if "iobs_shape" not in config:
                config.create_dataset("iobs_shape", data=np.asarray(obj.shape))
            if crop_offsets is not None:  # the argument wins over a same-named process entry
                if "crop_offsets" in config:
                    del config["crop_offsets"]
                config.create_dataset("crop_offsets", data=np.asarray(crop_offsets, dtype=np.int64))
            if free_mask is not None and np.any(free_mask):
                if "free_pixel_mask" in config:
                    del config["free_pixel_mask"]
                fm = config.create_dataset("free_pixel_mask", data=np.asarray(free_mask, dtype=bool),
                                           chunks=True, shuffle=True, compression="gzip")
                fm.attrs["note"] = "Mask of voxels used for the free log-likelihood (centred)"
                fm.attrs["interpretation"] = "scaler"
            res = proc.create_group("results")
            res.attrs["NX_class"] = "NXcollection"
            _write_collection(res, _pynx_result_names(results))
            if "nb_point_support" not in res:
                res.create_dataset("nb_point_support", data=int(np.count_nonzero(support)))

            if iobs is not None:
                img2 = entry.create_group("image_2")
                img2.attrs["NX_class"] = "NXdata"
                img2.attrs["signal"] = "data"
                img2.attrs["interpretation"] = "scaler"
                img2.create_dataset("data", data=np.asarray(iobs, dtype=np.float32), chunks=True, shuffle=True,
                                    compression="gzip")
                if mask is not None:
                    img2.create_dataset("mask", data=(np.asarray(mask) != 0).astype(np.uint8), chunks=True,
                                        shuffle=True, compression="gzip")
                img2.create_dataset("data_type", data="intensity")
                img2.create_dataset("data_space", data="diffraction")

            for n, (name, (arr, units)) in enumerate((derived or {}).items(), start=3):
                img = entry.create_group(f"image_{n}")
                img.attrs["NX_class"] = "NXdata"
                img.attrs["signal"] = "data"
                img.attrs["interpretation"] = "scaler"
                ds = img.create_dataset("data", data=np.asarray(arr, dtype=np.float32), chunks=True, shuffle=True,
                                        compression="gzip")
                if units:
                    ds.attrs["units"] = units
                img.create_dataset("data_type", data=name)
                img.create_dataset("data_space", data="real")

            data1 = entry.create_group("data_1")
            data1.attrs["NX_class"] = "NXdata"
            data1.attrs["signal"] = "data"
            data1.attrs["interpretation"] = "scaler"
            data1["data"] = h5py.SoftLink("/entry_1/image_1/data")
    return out


def _read_collection(group) -> dict[str, Any]:
    import h5py

    out: dict[str, Any] = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = _read_collection(item)
            continue
        v = item[()]
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, np.generic):
            v = v.item()
        out[key] = v
    return out


def read_cxi(path: str | os.PathLike) -> dict[str, Any]:
    """Read a CXI result (ours or PyNX's) -> dict(obj, support, iobs, mask, process, results, program, derived).

    iobs/mask are None when the file has no intensity; derived maps each further real-space image's data_type
    (displacement, strain) to its array. Raises InputError on a missing or non-result file.
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise InputError(f"CXI file not found: {p}")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise InputError(f"{p}: not a readable HDF5/CXI file ({' '.join(str(e).split())})") from None
    with f:
        if "entry_1/image_1/data" not in f:
            raise InputError(f"{p}: no /entry_1/image_1/data; not a CXI reconstruction result")
        image = f["entry_1/image_1"]
        obj = image["data"][()]
        sup_name = "support" if "support" in image else "mask" if "mask" in image else None
        support = image[sup_name][()] != 0 if sup_name else None
        proc = image.get("process_1")
        process = _read_collection(proc["configuration"]) if proc is not None and "configuration" in proc else {}
        results = _read_collection(proc["results"]) if proc is not None and "results" in proc else {}
        iobs = mask = None
        if "entry_1/image_2/data" in f:
            iobs = f["entry_1/image_2/data"][()]
            if "entry_1/image_2/mask" in f:
                mask = f["entry_1/image_2/mask"][()] != 0
        derived = {}
        for key, grp in f["entry_1"].items():
            if (key.startswith("image_") and key not in ("image_1", "image_2") and isinstance(grp, h5py.Group)
                    and "data" in grp and "data_type" in grp):
                kind = grp["data_type"][()]
                derived[kind.decode("utf-8", "replace") if isinstance(kind, bytes) else str(kind)] = grp["data"][()]
        program = f["entry_1/program_name"][()] if "entry_1/program_name" in f else b""
        if isinstance(program, bytes):
            program = program.decode("utf-8", "replace")
    return {"obj": obj, "support": support, "iobs": iobs, "mask": mask, "process": process,
            "results": results, "program": program, "derived": derived}
