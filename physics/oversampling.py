"""Oversampling ratio per axis, from a measured Bragg peak alone (no geometry needed).

The inverse FFT of the intensity is the autocorrelation of the object, whose support is the object's support
minus itself: twice the crystal's extent along every axis. So along axis i, oversampling = N_i / extent_i =
2 N_i / (autocorrelation extent + 1). This is the estimate PyNX (autocorrelation support) and cdiutils
(oversampling_from_diffraction) make; the threshold is where the tools differ.

Threshold choice: a relative threshold (e.g. 0.1 of the maximum, as for PyNX's initial support) measures a width,
not the extent, and for a highly strained crystal the modulus of the complex autocorrelation falls fast with the
shift (the phases decorrelate), so a relative threshold overestimated the oversampling by 1.4-3.8x on the
simulated 2π-5π crystals. Poisson noise is white, so it adds a flat floor to the autocorrelation; here the
support is the connected region around the origin that stands above that floor (median + ``k`` robust sigmas of
the outer shell, after a 1-voxel Gaussian smoothing). Measured on 12 simulated 64³ crystals (2π-5π, 1e4-4e6
peak counts): every axis within 10 % of the true value with k = 8 (tests/test_frontend.py repeats this).
Undersampling (oversampling <= 2) shows as an autocorrelation that wraps around: its outer slab along that axis
stands > 0.5 decade above the other axes' (measured 1.0 and 1.9 decades for oversampling 1.8 and 1.2; the
real APS pattern and simulated sampled crystals: < 0.3).
Limit: a masked gap band (whole planes normal to an axis) leaves a streak along that axis; the estimate then also
stands above the outer slab's maximum, which is still low by up to ~30-50 % on that axis for a gap through the
peak (measured on 4 simulated crystals), and cannot tell undersampling on that axis.

Truncated patterns (signal still well above the noise at the array's ends: a short rocking curve on a bright
crystal): the box multiplies the pattern, so the autocorrelation is convolved with the box's sinc, whose slowly
decaying side lobes stand above the noise floor and read as a larger extent, i.e. a lower oversampling (2.3 for
a true 5.3-5.7 along the 128-frame axis of 4 of 24 simulated 128x256x256 patterns with 1e10 photons). A Tukey
window (TUKEY_ALPHA: cosine tapers over the outer 20 % of each end) suppresses those side lobes, but it also
lowers the floor, so on untruncated patterns the threshold reaches farther into the autocorrelation's faint
tail and reads a larger extent too (up to 23 % low at 64³). Both errors only enlarge the extent, so each axis
keeps the smaller of the two extents (the larger ratio). On 36 + 24 + 48 simulated patterns (64³, 128³,
128x256x256) this keeps the plain estimate wherever the pattern is not truncated, and brings the 6 truncated
axes from 0.40-0.52x the truth to within 10 % of it, 2 of them on crystals measured only after the window was
chosen (bench/oversampling_estimate.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from physics.errors import InputError

__all__ = ["autocorrelation", "Oversampling", "estimate_oversampling", "fill_compact", "fill_masked", "per_axis",
           "tukey_window"]

ALIAS_DECADES = 0.5  # outer-slab excess (log10) over the other axes that means the autocorrelation wrapped
OUTER = 0.46  # |shift| >= OUTER * N on some axis: outside the autocorrelation of any crystal with oversampling > 2.17
TUKEY_ALPHA = 0.4  # the window of the second, truncation-proof autocorrelation: tapers over 20 % at each end
TRUNCATED = 1.25  # windowed / plain ratio above which an axis is reported truncated (1.8-2.3 on the truncated
# 128x256x256 patterns, at most 1.08 elsewhere: bench/oversampling_estimate.py)


def fill_masked(intensity: np.ndarray, mask: np.ndarray | None, sigma: float = 1.0) -> np.ndarray:
    """Masked voxels replaced by a local Gaussian-weighted mean of the measured ones (normalised convolution).

    The width grows (x2) until every masked voxel has measured neighbours, so a 6-pixel detector gap is bridged.
    Used for the CNN input, the oversampling estimate and the gate's autocorrelation bound (physics.quality), never
    for the refinement (masked voxels stay free there).
    """
    data = np.asarray(intensity, dtype=np.float32)
    if mask is None or not np.any(mask):
        return data.copy()
    mask = np.asarray(mask, dtype=bool)
    valid = (~mask).astype(np.float32)
    if not valid.any():
        raise InputError("every voxel is masked: nothing to fill from")
    out = data.copy()
    todo = mask.copy()
    s = float(sigma)
    while todo.any():
        num = ndimage.gaussian_filter(np.where(mask, 0.0, data).astype(np.float32), s, mode="constant")
        den = ndimage.gaussian_filter(valid, s, mode="constant")
        ok = todo & (den > 1e-3)
        out[ok] = num[ok] / den[ok]
        todo &= ~ok
        s *= 2
        if s > max(data.shape):
            out[todo] = 0.0
            break
    return np.clip(out, 0.0, None)


COMPACT_SCHEDULE = (1e-1, 3e-2, 1e-2, 5e-3, 3e-3, 2e-3)  # fill_compact's support thresholds (x max), in turn
COMPACT_ITERATIONS = 300


def fill_compact(intensity: np.ndarray, mask: np.ndarray | None, schedule=COMPACT_SCHEDULE,
                 iterations: int = COMPACT_ITERATIONS) -> np.ndarray:
    """Masked voxels extrapolated from the measured ones by the autocorrelation's compactness (Gerchberg-Papoulis).

    An oversampled pattern is the Fourier transform of a compact autocorrelation, so a gap is redundant: starting
    from fill_masked, alternate (1) keep the autocorrelation's voxels above t x its maximum, (2) back to reciprocal
    space, keep the measured voxels, the positive part of the rest. t falls through ``schedule``: a tight support
    first, so that the gap's own artefact is not kept (starting at 1e-2, a weakly strained crystal's gap through its
    sharp peak stayed 1.5-1.7x). Why: a local mean cannot bridge a 5-10-voxel gap through the Bragg peak; the error
    left is a cylinder in the autocorrelation along the gap's normal, which grew the gate's bound (physics.quality)
    2.0x in the median and up to 10.6x on the 43 gapped wide-calibration crystals; after this fill 0.95x, 0.66-1.16x,
    against the same data with the gap measured (docs/benchmarks.md, "Autocorrelation bound on gapped patterns").
    Limit: a 6-plane gap across the very centre of a weakly strained crystal's peak still reads 1.5x.
    Unmasked data come back unchanged (a copy)."""
    data = np.asarray(intensity, dtype=np.float32)
    x = fill_masked(data, mask)
    if mask is None or not np.any(mask):
        return x
    m = np.asarray(mask, dtype=bool)
    shape = data.shape
    for k in range(iterations):
        t = schedule[min(k * len(schedule) // iterations, len(schedule) - 1)]
        a = sfft.rfftn(x, workers=-1)
        mag = np.abs(a)
        a[mag <= t * mag.max()] = 0
        y = sfft.irfftn(a, s=shape, workers=-1)
        x[m] = np.maximum(y[m], 0.0)
    return x


def tukey_window(shape, alpha: float = TUKEY_ALPHA) -> np.ndarray:
    """Separable Tukey window (scipy.signal.windows.tukey per axis): 1 in the middle, cosine tapers to 0 at the ends."""
    from scipy.signal.windows import tukey

    w = np.ones(shape, np.float32)
    for axis, n in enumerate(shape):
        w *= tukey(n, alpha).astype(np.float32).reshape([-1 if j == axis else 1 for j in range(len(shape))])
    return w


def autocorrelation(intensity: np.ndarray, mask: np.ndarray | None = None, window: float = 0.0) -> np.ndarray:
    """|inverse FFT| of the intensity, centred (zero shift at n//2); masked voxels are filled first (fill_masked),
    because a zeroed gap band would spread the autocorrelation along the gap's axis. window > 0: the filled
    intensity is multiplied by a Tukey window of that alpha first (against the side lobes of a truncated pattern)."""
    data = fill_masked(intensity, mask)
    if window:
        data = data * tukey_window(data.shape, window)
    return np.abs(sfft.fftshift(sfft.ifftn(sfft.ifftshift(data), workers=-1))).astype(np.float32)


@dataclass(frozen=True)
class Oversampling:
    """Per-axis oversampling of a pattern, with what it was measured from."""

    ratio: tuple[float, ...]  # N_i / crystal extent_i
    extent: tuple[int, ...]  # autocorrelation support extent per axis (voxels)
    undersampled: tuple[bool, ...]  # the autocorrelation fills the axis: oversampling <= ~2, phasing cannot work
    threshold: tuple[float, ...]  # absolute autocorrelation level of the support per axis (noise floor + k sigma)
    plain: tuple[float, ...] = ()  # the plain autocorrelation's ratio per axis (ratio: the larger of it and the
    # windowed one); well below ratio where the pattern is truncated

    @property
    def truncated(self) -> tuple[bool, ...]:
        """Per axis: the pattern is still bright at the array's ends (the plain estimate reads TRUNCATED x lower)."""
        return tuple(bool(p > 0 and r > TRUNCATED * p) for r, p in zip(self.ratio, self.plain))

    def describe(self) -> str:
        return " x ".join(f"{r:.2f}" + ("(<=2: undersampled)" if u else "") for r, u in zip(self.ratio,
                                                                                         self.undersampled))


def _extent(comp: np.ndarray, axis: int) -> int:
    idx = np.nonzero(comp.any(axis=tuple(j for j in range(comp.ndim) if j != axis)))[0]
    return int(idx.max() - idx.min() + 1)


def estimate_oversampling(intensity: np.ndarray, mask: np.ndarray | None = None, k: float = 8.0,
                          smooth: float = 1.0) -> Oversampling:
    """Oversampling per axis from the extent of the autocorrelation support above the noise floor, measured on
    the plain and on the Tukey-windowed autocorrelation; each axis keeps the smaller extent (module doc)."""
    data = np.asarray(intensity, dtype=np.float32)
    if data.ndim != 3 or min(data.shape) < 8:
        raise InputError(f"oversampling needs a 3D intensity of at least 8 voxels per axis, got {data.shape}")
    if not np.any(data > 0):
        raise InputError("intensity is zero everywhere: no oversampling to measure")
    m = None if mask is None else np.asarray(mask, dtype=bool)
    filled = fill_masked(data, m)  # once for both autocorrelations (m still tells per_axis where gap planes are)
    plain = per_axis(autocorrelation(filled), m, k, smooth)
    windowed = per_axis(autocorrelation(filled, window=TUKEY_ALPHA), m, k, smooth)
    pick = [w if w[0] > p[0] else p for p, w in zip(plain, windowed)]
    return Oversampling(*(tuple(v[j] for v in pick) for j in range(4)), plain=tuple(p[0] for p in plain))


def per_axis(a: np.ndarray, m: np.ndarray | None = None, k: float = 8.0, smooth: float = 1.0) -> list[tuple]:
    """(ratio, extent, undersampled, level) per axis from one centred autocorrelation ``a`` (of the intensity with
    mask ``m``): the estimate_oversampling of one autocorrelation, plain or windowed."""
    if smooth:
        a = ndimage.gaussian_filter(a, smooth, mode="wrap")
    shape = np.array(a.shape)
    centre = tuple(int(c) for c in shape // 2)
    outer = np.zeros(a.shape, bool)
    for axis, n in enumerate(shape):
        rel = np.abs(np.arange(n) - n // 2) / n
        outer |= (rel >= OUTER).reshape([-1 if j == axis else 1 for j in range(3)])
    floor = a[outer]
    mu = float(np.median(floor))
    sd = float(1.4826 * np.median(np.abs(floor - mu)))
    level = mu + k * max(sd, 1e-12 * float(a[centre]))
    slab_max = []
    for axis, n in enumerate(shape):
        rel = np.abs(np.arange(n) - n // 2) / n
        slab = np.broadcast_to((rel >= OUTER).reshape([-1 if j == axis else 1 for j in range(3)]), a.shape)
        slab_max.append(float(a[slab].max()))
    log_slab = np.log10(np.maximum(slab_max, 1e-30) / max(float(a[centre]), 1e-30))
    out = []
    for axis, n in enumerate(shape):
        n = int(n)
        others = tuple(j for j in range(3) if j != axis)
        gap_planes = m is not None and bool(np.any(m.mean(axis=others) > 0.5))
        # The support must also stand above everything in the outer slab |shift_axis| >= OUTER * n: real data
        # carry a slowly decaying pedestal there (diffuse background, zero-filled aliens), and a masked gap band
        # normal to the axis (imperfectly filled) leaves a streak along it.
        lev = max(level, slab_max[axis])
        lab, _ = ndimage.label(a > lev)
        ext = _extent(lab == lab[centre], axis)
        # Aliasing (oversampling <= 2) wraps the autocorrelation around: the outer slab of that axis then stands
        # out (measured: 1-2 decades above the other axes for 1.8 and 1.2; within 0.3 for sampled data).
        excess = log_slab[axis] - float(np.median(log_slab[list(others)]))
        wrapped = not gap_planes and excess > ALIAS_DECADES
        out.append((float(2.0 * n / (n + 1) if wrapped else 2.0 * n / (ext + 1)), n if wrapped else ext,
                    bool(wrapped or ext >= n - 1), float(lev)))
    return out
