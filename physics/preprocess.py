"""Preprocessing of a measured Bragg peak: find it, crop an FFT-friendly box around it, bin, resize to the CNN grid.

Pure numpy/scipy functions, no I/O. Arrays are (z, y, x) = (rocking, detector row, detector column);
masks are bool with True = bad/unknown voxel (project convention).

Resizing choice: ``resize_to`` uses ``scipy.ndimage.zoom`` with linear interpolation (order 1). Intensities stay
non-negative and there is no Gibbs ringing, which Fourier resampling of a sharp, high-dynamic-range Bragg peak
would give (negative counts, then NaN in log scaling). Zooming reciprocal space keeps the q-range and changes the
q-step, so the real-space voxel size is unchanged and only the field of view changes: the inverse mapping of a
64³ real-space object back to the crop grid is therefore a centred zero-pad/crop (``fit_object_to``), and the
inverse mapping of a 64³ reciprocal-space phase is a wrap-aware interpolation (``resize_phase``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from physics.errors import InputError

__all__ = [
    "find_peak",
    "fft_friendly_size",
    "crop_box",
    "crop",
    "crop_like",
    "bin_array",
    "resize_to",
    "resize_phase",
    "fit_object_to",
    "uncrop_index",
    "prepare",
    "Prepared",
]


def _as_tuple(value, ndim: int, name: str) -> tuple[int, ...]:
    """Broadcast an int or a sequence to one int per axis, naming the option on error."""
    if np.isscalar(value):
        return (int(value),) * ndim
    value = tuple(int(v) for v in value)
    if len(value) != ndim:
        raise InputError(f"{name} needs {ndim} values (one per axis), got {len(value)}")
    return value


def find_peak(intensity: np.ndarray, mask: np.ndarray | None = None, box: int | Sequence[int] = 32,
              com_steps: int = 2) -> tuple[int, ...]:
    """Bragg peak voxel: global maximum, then ``com_steps`` times the centre of mass inside a box around it.

    Max first, then COM inside a box, because hot pixels or aliens break a global COM and a single noisy voxel
    breaks a pure max. ``box`` is the full box size per axis (clipped at the array edges).
    """
    data = np.asarray(intensity, dtype=np.float64)
    if data.ndim != 3:
        raise InputError(f"find_peak needs a 3D intensity, got shape {data.shape}")
    data = np.where(np.isfinite(data), data, 0.0)
    data = np.clip(data, 0.0, None)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != data.shape:
            raise InputError(f"mask shape {mask.shape} differs from intensity shape {data.shape}")
        data = np.where(mask, 0.0, data)
    if not np.any(data > 0):
        raise InputError("intensity is zero everywhere (outside the mask): no Bragg peak to find")
    box = _as_tuple(box, 3, "box")
    centre = np.array(np.unravel_index(int(np.argmax(data)), data.shape))
    for _ in range(com_steps):
        lo = [max(0, c - b // 2) for c, b in zip(centre, box)]
        hi = [min(n, c - b // 2 + b) for c, n, b in zip(centre, data.shape, box)]
        sub = data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        total = sub.sum()
        if total <= 0:
            break
        com = ndimage.center_of_mass(sub)
        centre = np.array([int(round(c + o)) for c, o in zip(com, lo)])
    return tuple(int(c) for c in centre)


def _is_smooth(n: int, max_prime: int) -> bool:
    """True when every prime factor of n is <= max_prime."""
    for p in (2, 3, 5, 7, 11, 13):
        if p > max_prime:
            break
        while n % p == 0:
            n //= p
    return n == 1


def fft_friendly_size(n: int, max_prime: int = 7) -> int:
    """Largest even size <= n whose prime factors are all <= max_prime (FFTs stay fast, PyNX accepts it)."""
    n = int(n)
    if n < 2:
        return 0
    m = n - (n % 2)
    while m >= 2 and not _is_smooth(m, max_prime):
        m -= 2
    return max(m, 0)


def crop_box(shape: Sequence[int], centre: Sequence[int], size: int | Sequence[int] | None = None,
             min_size: int | Sequence[int] = 16, max_prime: int = 7) -> tuple[slice, ...]:
    """Box centred on the peak, of even FFT-friendly size, shrunk symmetrically where the array edge is closer.

    The peak stays at index n//2 of the crop (the project's centred convention). ``size=None`` takes the largest
    symmetric box. Raises InputError naming the axis when the edge leaves less than ``min_size``.
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    centre = _as_tuple(centre, ndim, "centre")
    size = shape if size is None else _as_tuple(size, ndim, "size")
    min_size = _as_tuple(min_size, ndim, "min_size")
    slices = []
    for axis, (n, c, s, smin) in enumerate(zip(shape, centre, size, min_size)):
        if not 0 <= c < n:
            raise InputError(f"peak index {c} on axis {axis} is outside the array (size {n})")
        half = min(s // 2, c, n - c)  # box [c - half, c + half) must fit: c - half >= 0, c + half <= n
        m = fft_friendly_size(2 * half, max_prime)
        if m < smin:
            raise InputError(
                f"Bragg peak at index {c} on axis {axis} is {min(c, n - 1 - c)} voxels from the array edge "
                f"(size {n}): the centred crop would be {m} < minimum {smin}")
        slices.append(slice(c - m // 2, c - m // 2 + m))
    return tuple(slices)


def crop(intensity: np.ndarray, centre: Sequence[int] | None = None, size: int | Sequence[int] | None = None,
         mask: np.ndarray | None = None, min_size: int | Sequence[int] = 16,
         max_prime: int = 7) -> tuple[np.ndarray, tuple[int, ...]]:
    """Crop the intensity around the peak (found with ``find_peak`` when ``centre`` is None).

    Returns (cropped copy, offsets) where offsets are the start indices of the box in the input; crop the mask
    (or any other array) identically with ``crop_like(mask, offsets, cropped.shape)``.
    """
    intensity = np.asarray(intensity)
    if centre is None:
        centre = find_peak(intensity, mask)
    box = crop_box(intensity.shape, centre, size, min_size=min_size, max_prime=max_prime)
    offsets = tuple(s.start for s in box)
    return np.array(intensity[box]), offsets


def crop_like(array: np.ndarray, offsets: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Crop ``array`` with the box given by crop offsets and the cropped shape (used for the mask)."""
    box = tuple(slice(int(o), int(o) + int(n)) for o, n in zip(offsets, shape))
    out = np.asarray(array)[box]
    if out.shape != tuple(shape):
        raise InputError(f"crop box {offsets}+{tuple(shape)} does not fit an array of shape {np.shape(array)}")
    return np.array(out)


def uncrop_index(index: Sequence[float], offsets: Sequence[int], binning: int | Sequence[int] = 1) -> tuple:
    """Map a voxel index in the (cropped, then binned) array back to the full detector stack."""
    binning = _as_tuple(binning, len(offsets), "binning")
    return tuple(o + i * b + (b - 1) / 2 for i, o, b in zip(index, offsets, binning))


def bin_array(array: np.ndarray, factors: int | Sequence[int], mode: str = "sum") -> np.ndarray:
    """Bin by integer factors per axis (trailing voxels that do not fill a bin are dropped).

    mode "sum" for counts (keeps Poisson statistics), "mean", or "any" for a bool mask (a bin with one bad voxel
    is bad).
    """
    array = np.asarray(array)
    factors = _as_tuple(factors, array.ndim, "binning")
    if any(f < 1 for f in factors):
        raise InputError(f"binning factors must be >= 1, got {factors}")
    if all(f == 1 for f in factors):
        return array.copy()
    new_shape = tuple(n // f for n, f in zip(array.shape, factors))
    if any(n == 0 for n in new_shape):
        raise InputError(f"binning {factors} is larger than the array shape {array.shape}")
    trimmed = array[tuple(slice(0, n * f) for n, f in zip(new_shape, factors))]
    split = []
    for n, f in zip(new_shape, factors):
        split += [n, f]
    view = trimmed.reshape(split)
    axes = tuple(range(1, 2 * array.ndim, 2))
    if mode == "sum":
        return view.sum(axis=axes, dtype=np.float64).astype(np.float32 if array.dtype.kind != "f" else array.dtype)
    if mode == "mean":
        return view.mean(axis=axes).astype(np.float32 if array.dtype.kind != "f" else array.dtype)
    if mode == "any":
        return view.astype(bool).any(axis=axes)
    raise InputError(f"unknown binning mode {mode!r} (use 'sum', 'mean' or 'any')")


def resize_to(array: np.ndarray, shape: Sequence[int] = (64, 64, 64), order: int = 1) -> np.ndarray:
    """Resize to ``shape`` by spline interpolation (scipy.ndimage.zoom, linear by default, no ringing).

    A bool array (mask) is resized with nearest-neighbour interpolation and stays bool.
    """
    array = np.asarray(array)
    shape = _as_tuple(shape, array.ndim, "shape")
    if array.shape == shape:
        return array.copy()
    factors = [t / s for t, s in zip(shape, array.shape)]
    if array.dtype == bool:
        out = ndimage.zoom(array.astype(np.uint8), factors, order=0, grid_mode=True, mode="nearest")
        return _fix_shape(out, shape).astype(bool)
    if np.iscomplexobj(array):
        re = ndimage.zoom(array.real, factors, order=order, grid_mode=True, mode="nearest")
        im = ndimage.zoom(array.imag, factors, order=order, grid_mode=True, mode="nearest")
        return _fix_shape(re + 1j * im, shape).astype(np.complex64)
    out = ndimage.zoom(array.astype(np.float32), factors, order=order, grid_mode=True, mode="nearest")
    if order > 1:
        out = np.clip(out, min(0.0, float(array.min())), None)
    return _fix_shape(out, shape).astype(np.float32)


def _fix_shape(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Pad/trim by one voxel where zoom's rounding missed the target shape."""
    if array.shape == shape:
        return array
    pads = [(0, max(0, t - n)) for n, t in zip(array.shape, shape)]
    array = np.pad(array, pads, mode="edge")
    return array[tuple(slice(0, t) for t in shape)]


def resize_phase(phase: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resize a (wrapped) phase map without creating ramps across 2π jumps: interpolate exp(iφ), take the angle."""
    z = np.exp(1j * np.asarray(phase, dtype=np.float64))
    return np.angle(resize_to(z, shape, order=order)).astype(np.float32)


def fit_object_to(obj: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Centred zero-pad or crop of a real-space object to ``shape`` (same voxel size, other field of view).

    This is the inverse of ``resize_to`` on the reciprocal grid: zooming reciprocal space keeps the q-range, so the
    real-space voxel size is unchanged and only the number of voxels (field of view) differs.
    """
    obj = np.asarray(obj)
    shape = _as_tuple(shape, obj.ndim, "shape")
    out = np.zeros(shape, dtype=obj.dtype)
    src, dst = [], []
    for n, t in zip(obj.shape, shape):
        m = min(n, t)
        s0 = n // 2 - m // 2
        d0 = t // 2 - m // 2
        src.append(slice(s0, s0 + m))
        dst.append(slice(d0, d0 + m))
    out[tuple(dst)] = obj[tuple(src)]
    return out


@dataclass
class Prepared:
    """A measured peak ready for phasing: centred FFT-friendly crop (optionally binned) plus how it was made."""

    intensity: np.ndarray  # float32, peak at n//2 per axis
    mask: np.ndarray  # bool, True = bad
    peak: tuple[int, ...]  # peak voxel in the input array
    offsets: tuple[int, ...]  # crop start indices in the input array
    binning: tuple[int, ...]
    crop_shape: tuple[int, ...]  # before binning

    def metadata(self) -> dict:
        """JSON-friendly description (for CXI/Tiled metadata)."""
        return {"peak": list(self.peak), "crop_offsets": list(self.offsets), "crop_shape": list(self.crop_shape),
                "binning": list(self.binning), "shape": list(self.intensity.shape)}


def prepare(intensity: np.ndarray, mask: np.ndarray | None = None, size: int | Sequence[int] | None = None,
            binning: int | Sequence[int] = 1, min_size: int | Sequence[int] = 16, box: int | Sequence[int] = 32,
            max_prime: int = 7) -> Prepared:
    """find_peak -> centred FFT-friendly crop -> optional binning (sum; mask 'any'), keeping sizes FFT-friendly.

    With binning, each cropped axis is first reduced to a multiple of the factor whose quotient is even and
    7-smooth, trimming symmetrically so the peak stays at n//2.
    """
    intensity = np.asarray(intensity)
    if mask is None:
        mask = np.zeros(intensity.shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != intensity.shape:
        raise InputError(f"mask shape {mask.shape} differs from intensity shape {intensity.shape}")
    peak = find_peak(intensity, mask, box=box)
    factors = _as_tuple(binning, intensity.ndim, "binning")
    cropped, offsets = crop(intensity, peak, size, min_size=min_size, max_prime=max_prime)
    shape = list(cropped.shape)
    offsets = list(offsets)
    if any(f > 1 for f in factors):
        for axis, f in enumerate(factors):
            n_binned = fft_friendly_size(shape[axis] // f, max_prime)
            if n_binned < 2:
                raise InputError(f"binning {f} on axis {axis} leaves fewer than 2 voxels of a {shape[axis]}-voxel crop")
            trim = shape[axis] - n_binned * f
            offsets[axis] += trim // 2
            shape[axis] = n_binned * f
    crop_mask = crop_like(mask, offsets, shape)
    cropped = crop_like(intensity, offsets, shape).astype(np.float32)
    binned = bin_array(cropped, factors, mode="sum").astype(np.float32)
    bmask = bin_array(crop_mask, factors, mode="any")
    return Prepared(binned, bmask, tuple(peak), tuple(int(o) for o in offsets), factors, tuple(shape))
