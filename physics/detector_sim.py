"""The held-out simulated crystals written as a detector would: larger arrays, higher oversampling, shorter rocking.

`detector_sample(seed, ...)` is the crystal of `physics.simulate.simulate_sample(seed)` (same shape kind,
orientation, facets, strain field kind and range, per-axis oversampling draw u in [0, 1)) at another array size
and oversampling: its per-axis oversampling is lo + (hi - lo) u over the given range instead of 2.2 + 1.8 u, i.e.
the same crystal seen from a detector farther away, with more pixels. A non-cubic shape (e.g. 128 x 256 x 256:
fewer rocking frames than detector pixels) is the centred crop of the cubic pattern of the largest size, which
keeps the q-step, hence the oversampling, and lowers the resolution along the cropped axes, as a short rocking
curve does. The Gaussian and cosine strain fields are the same functions of the crystal's own coordinates; the
correlated random field (``grf``) is drawn on the new grid, so it is another realisation of the same statistics.

`truth_on_crop` gives the true object on the grid of any centred reciprocal-space crop of such a pattern (the
inverse FFT of the cropped true diffraction), so a reconstruction on the front end's crop can be compared with it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from physics.simulate import SimParams, diffraction, object_from_diffraction, simulate_sample

__all__ = ["detector_sample", "truth_on_crop"]


def _centred_box(shape: Sequence[int], sub: Sequence[int], centre: Sequence[int] | None = None) -> tuple:
    centre = [n // 2 for n in shape] if centre is None else centre
    return tuple(slice(c - m // 2, c - m // 2 + m) for c, m in zip(centre, sub))


def detector_sample(seed: int, shape: Sequence[int] = (128, 128, 128), oversampling: tuple[float, float] = (3.0, 6.0),
                    params: SimParams = SimParams()) -> dict:
    """simulate_sample's dict for the crystal of ``seed`` on a ``shape`` array at ``oversampling`` (module doc).

    Intensities are Poisson counts (integers); "object" and "support" are on the full cubic grid of max(shape)
    voxels; use truth_on_crop for the truth on a crop.
    """
    shape = tuple(int(n) for n in shape)
    n = max(shape)
    s = simulate_sample(seed, replace(params, size=n, oversampling=tuple(float(o) for o in oversampling)))
    s["oversampling"] = s["oversampling"].astype(np.float32)  # per axis of the cubic grid, kept by the crop
    if shape != (n,) * 3:
        box = _centred_box((n,) * 3, shape)
        for key in ("intensity", "intensity_clean", "mask", "phase"):
            s[key] = np.ascontiguousarray(s[key][box])
        s["full_shape"] = (n,) * 3
    s["shape"] = shape
    return s


def truth_on_crop(sample: dict, offsets: Sequence[int], crop_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(true object, true support) on the grid of the reciprocal crop [offsets, offsets + crop_shape) of the
    sample's pattern: the inverse FFT of the crop of the clean complex diffraction (same convention as the data)."""
    full = np.asarray(sample["object"])
    psi = diffraction(full)
    # the sample's arrays may be a centred crop of the full cubic pattern: map the crop into the full grid
    lead = [(f - p) // 2 for f, p in zip(full.shape, sample["intensity"].shape)]
    box = tuple(slice(lo + o, lo + o + c) for lo, o, c in zip(lead, offsets, crop_shape))
    psi_c = psi[box]
    obj = object_from_diffraction(np.abs(psi_c), np.angle(psi_c))
    psi_a = diffraction(np.abs(full).astype(np.complex64))[box]  # the amplitude alone, for the support
    a = np.abs(object_from_diffraction(np.abs(psi_a), np.angle(psi_a)))
    plateau = float(np.median(a[a > 0.5 * a.max()]))
    return obj, a > 0.5 * plateau
