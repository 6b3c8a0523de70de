"""The crystal's shape from a reconstruction: the amplitude isosurface inside the phasing support.

Shrink-wrap ends with a support one voxel wider than the crystal all round (a Gaussian-smoothed amplitude
thresholded at 0.1-0.25 of its maximum), which is right for phasing, since it must not cut the crystal, but
draws small crystals 1.3-1.6x too large (bench/support_slack.py, docs/benchmarks.md 'Support slack on small
crystals'). The field draws a crystal's shape and masks its strain with an isosurface of the amplitude
(cdiutils' find_isosurface, bcdi's isosurface_strain); this is that, inside the support, with the level chosen on
calibration crystals by bench/shape_level.py. Pure numpy / scipy.ndimage, no I/O.
"""
from __future__ import annotations

import numpy as np

from physics.errors import InputError

# Chosen by bench/shape_level.py's fixed rule on 64 calibration crystals (32 paper-family, 32 wide-condition;
# docs/benchmarks.md, 'Crystal shape level'): 45 % of the 95th percentile of the amplitude in the support. On the 57
# whose phase was right, every one reached IoU >= 0.7 (the phasing support: 55), median IoU 0.983 (support: 0.880).
SHAPE_LEVEL = 0.45
SHAPE_REFERENCE = "q95"  # the amplitude the level is relative to: "max", or a percentile "qNN" in the support
SHAPE_FILL_HOLES = True


def shape_definition(shape: np.ndarray | None = None, support: np.ndarray | None = None) -> dict:
    """How the shape is drawn, for the metadata of every result that carries one; with the shape and the
    support, their voxel counts too."""
    out = {"level": SHAPE_LEVEL, "reference": SHAPE_REFERENCE, "fill_holes": SHAPE_FILL_HOLES,
           "definition": "amplitude >= level x reference inside the phasing support (physics.shape)"}
    if shape is not None:
        out["voxels"] = int(np.count_nonzero(shape))
    if support is not None:
        out["support_voxels"] = int(np.count_nonzero(support))
    return out


def amplitude_reference(amp: np.ndarray, support: np.ndarray, reference: str = SHAPE_REFERENCE) -> float:
    """The amplitude the isosurface level is a fraction of: the maximum in the support, or a quantile of it
    ("q99": the 99th percentile, less sensitive to a few noisy voxels)."""
    a = amp[support]
    if reference == "max":
        return float(a.max())
    if reference.startswith("q") and reference[1:].isdigit() and 0 < int(reference[1:]) <= 100:
        return float(np.percentile(a, int(reference[1:])))
    raise InputError(f"unknown amplitude reference {reference!r}: use 'max' or 'qNN' (a percentile)")


def crystal_shape(obj: np.ndarray, support: np.ndarray, level: float = SHAPE_LEVEL,
                  reference: str = SHAPE_REFERENCE, fill_holes: bool = SHAPE_FILL_HOLES) -> np.ndarray:
    """Voxels of the support where |obj| >= level x the amplitude reference (amplitude_reference), enclosed
    cavities filled (a crystal has no sealed voids at this resolution; noise on faint data punches some).
    Falls back to the support itself when the isosurface would be empty."""
    support = np.asarray(support, bool)
    obj = np.asarray(obj)
    if obj.shape != support.shape:
        raise InputError(f"object shape {obj.shape} differs from support shape {support.shape}")
    if not 0 < level < 1:
        raise InputError(f"shape level must be in (0, 1), got {level}")
    if not support.any():
        raise InputError("support is empty: no crystal shape")
    amp = np.abs(obj)
    ref = amplitude_reference(amp, support, reference)
    if not ref > 0:
        return support.copy()
    shape = support & (amp >= level * ref)
    if fill_holes:
        from scipy.ndimage import binary_fill_holes

        shape = binary_fill_holes(shape) & support
    return shape if shape.any() else support.copy()
