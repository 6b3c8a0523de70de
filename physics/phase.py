"""Phase helpers shared by strain, metrics and previews: wrapping, and the linear phase ramp inside a support.

One convention each: `wrap_phase` maps to [lower, lower + 2π) (default [-π, π)); `phase_ramp` is the circular
mean of the phase increment between neighbouring support voxels, per axis, so 2π wraps do not bias it.
"""
from __future__ import annotations

import numpy as np

from physics.errors import InputError


def wrap_phase(x, lower: float = -np.pi) -> np.ndarray:
    """Wrap phases to [lower, lower + 2π): [-π, π) by default, [0, 2π) with lower=0 (arithmetic, no exp/angle)."""
    return np.mod(np.asarray(x) - lower, 2 * np.pi) + lower


def centred_coords(shape) -> list[np.ndarray]:
    """Voxel coordinates relative to the array centre n//2, one broadcastable array per axis."""
    return [np.arange(n).reshape([-1 if i == a else 1 for i in range(len(shape))]) - n // 2
            for a, n in enumerate(shape)]


def phase_ramp(phase: np.ndarray, support: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Linear phase ramp (rad/voxel per axis) of a (wrapped) phase over a support.

    Per axis: the angle of the (weighted) sum of exp(i(φ[k+1] - φ[k])) over pairs of neighbouring support voxels,
    i.e. the circular mean increment; weights (e.g. the modulus) are taken at the first voxel of each pair.
    """
    phase = np.asarray(phase, dtype=np.float64)
    support = np.asarray(support, dtype=bool)
    if not support.any():
        raise InputError("support is empty: no phase to process")
    w = np.ones(phase.shape) if weights is None else np.asarray(weights, dtype=np.float64)
    ramp = []
    for axis in range(phase.ndim):
        lo = [slice(None)] * phase.ndim
        hi = [slice(None)] * phase.ndim
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        pairs = support[lo] & support[hi]
        c = np.sum((w[lo] * np.exp(1j * (phase[hi] - phase[lo])))[pairs])
        ramp.append(float(np.angle(c)) if pairs.any() else 0.0)
    return np.array(ramp)


def ramp_plane(ramp, shape) -> np.ndarray:
    """The linear phase Σ ramp[a]·(index[a] - n_a//2): zero at the array centre."""
    return sum(r * g for r, g in zip(ramp, centred_coords(shape)))
