"""The front end of a measured Bragg peak: photon scale, background, peak, crop and the CNN's 64³ grid, by physics.

Pure numpy/scipy functions, no I/O. Arrays are (z, y, x) = (rocking, detector row, detector column);
masks are bool with True = bad/unknown voxel (project convention).

Physics of the crop and the resize (per axis). Cropping reciprocal space N -> C voxels keeps the q-step, so it
keeps the oversampling O and only lowers the resolution. Bringing C voxels to the CNN's 64 over the same q-range
keeps the real-space voxel size and shrinks the field of view: the oversampling becomes O x 64 / C. ``plan_crop``
chooses C so that O x 64 / C lands in the model's training range (2.2-4 for the shipped model), near a target
(``cnn_target``: ReconOptions.cnn_oversampling, else CNN_TARGET_POSITION of the way up the range, log scale):
  - the FFT-friendly C whose O x 64 / C is closest to the target, brought to 64 by Fourier resampling
    (``fourier_resample``);
  - unless a multiple C = 64 b lands inside the range, 8 % away from its edges, and within 15 % of as close to the
    target: then the 64³ grid is an integer binning by b, a sum (Poisson counts stay Poisson counts). On the
    held-out 128³ crystals the network's coherence was the same on both (bench/cnn_input.py).
Fourier resampling, not spline zoom: the inverse FFT of the intensity is the object's autocorrelation, which
for O x 64 / C >= 2 fits inside the 64-voxel field of view, so cropping (or zero-padding) it to 64 voxels and
transforming back is the exact band-limited resampling; it drops only noise. Linear interpolation
(``scipy.ndimage.zoom``) instead samples the fringes without averaging them (aliasing), and a Gaussian prefilter
would damp the finest fringes (by ~0.4 at 2.2 voxels per fringe). The ringing Fourier resampling can give at
the crop edges is clipped at 0. The 64³ object maps back to the crop grid by a centred zero-pad
(``fit_object_to``), since the voxel size is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from physics.errors import InputError
from physics.oversampling import Oversampling, estimate_oversampling, fill_masked

__all__ = [
    "find_peak",
    "fft_friendly_size",
    "crop_box",
    "crop",
    "crop_like",
    "bin_array",
    "resize_to",
    "fit_object_to",
    "fourier_resample",
    "photon_scale",
    "subtract_background",
    "FrontEndOptions",
    "FrontEnd",
    "plan_crop",
    "to_cnn_grid",
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




CNN_SIZE = 64
EDGE_MIN = 8  # a peak closer than this to an array edge cannot be centred in a useful crop
OVERSAMPLING_BOX = 256  # the oversampling is measured on at most this many voxels per axis around the peak
INNER = 1.08  # a binned crop must land in [lo x INNER, hi / INNER]: the range's edges are where the network saw least
BIN_SLACK = 1.15  # ... and within 15 % of as near the target as the best FFT-friendly crop, else Fourier resampling
CNN_TARGET_POSITION = 0.5  # where in the training range (log scale) the CNN's grid is aimed: 0.5 = geometric centre
RESAMPLING = "fourier"  # how a non-multiple of 64 is brought to 64 (see the module docstring)


def oversampling_box(shape: Sequence[int], peak: Sequence[int], bound: int = OVERSAMPLING_BOX) -> tuple[slice, ...]:
    """Where the oversampling is measured: the whole axis up to `bound` voxels, else `bound` voxels around the peak,
    clipped to the array. The autocorrelation's extent does not depend on where the peak sits (a shift of the
    pattern only changes its phase), so the box need not be centred on the peak: a centred box would cut the
    pattern of a peak off the array's centre (a strained crystal's strongest voxel often is) and read the
    truncation's ringing as an extent filling the box, i.e. as undersampled data."""
    out = []
    for n, c in zip(shape, peak):
        start = 0 if n <= bound else int(np.clip(int(c) - bound // 2, 0, n - bound))
        out.append(slice(start, start + min(n, bound)))
    return tuple(out)


def fourier_resample(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Band-limited resampling of an intensity to ``shape`` over the same q-range, sum preserved, clipped at 0.

    Per axis: FFT (to the autocorrelation), centred crop or zero-pad to the new size, inverse FFT. The centre n//2
    (the Bragg peak) maps to the new centre. The sum of the array is kept (photons per coarser voxel).
    """
    out = np.asarray(array, dtype=np.float64)
    shape = _as_tuple(shape, out.ndim, "shape")
    for axis, m in enumerate(shape):
        n = out.shape[axis]
        if n == m:
            continue
        f = sfft.fftshift(sfft.fft(sfft.ifftshift(out, axes=axis), axis=axis, workers=-1), axes=axis)
        g_shape = list(f.shape)
        g_shape[axis] = m
        g = np.zeros(g_shape, dtype=np.complex128)
        k = min(n, m)
        src = [slice(None)] * out.ndim
        dst = [slice(None)] * out.ndim
        src[axis] = slice(n // 2 - k // 2, n // 2 - k // 2 + k)
        dst[axis] = slice(m // 2 - k // 2, m // 2 - k // 2 + k)
        g[tuple(dst)] = f[tuple(src)]
        out = sfft.fftshift(sfft.ifft(sfft.ifftshift(g, axes=axis), axis=axis, workers=-1), axes=axis).real
    return np.clip(out, 0.0, None).astype(np.float32)


def photon_scale(intensity: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, str]:
    """Photons per intensity unit, and how it was found: 1 for integer counts, else 1 / the one-photon level.

    Normalised or flat-fielded data (monitor-normalised frames, PyNX-prepared CXI files) are counts times a
    factor g (per pixel for a flat field). Their lowest positive values are small multiples n g: g is the
    largest min / k (k <= 20) that makes the 2000 lowest values integers within 0.08 on average, else the
    lowest value (one photon assumed). The Poisson LLK is computed on intensity x
    scale, so that its normalisation (~1 for an ideal fit) holds whatever the units.
    """
    data = np.asarray(intensity, dtype=np.float64)
    ok = np.isfinite(data) & (data > 0)
    if mask is not None:
        ok &= ~np.asarray(mask, dtype=bool)
    vals = data[ok]
    if vals.size == 0:
        raise InputError("intensity has no positive value outside the mask")
    frac = np.abs(vals - np.rint(vals))
    if np.mean(frac < 1e-3) > 0.999:
        return 1.0, "integer counts"
    # counts x g: the lowest values are n g with small integers n; the largest g = min / k that makes them
    # integers (k <= 20) is the one-photon level (the lowest value need not be one photon in a bright pattern)
    low = np.sort(vals)[:2000]
    g = float(low[0])
    for k in range(1, 21):
        r = low / (low[0] / k)
        if np.mean(np.abs(r - np.rint(r))) < 0.08:
            g = float(low[0] / k)
            break
    return 1.0 / g, f"estimated: one photon = {g:.4g} intensity units (lowest positive values)"


def subtract_background(intensity: np.ndarray, mask: np.ndarray | None = None, background: float = 0.0,
                        threshold: float = 0.0, negative: str = "error") -> tuple[np.ndarray, np.ndarray, dict]:
    """Optional background subtraction, then an optional threshold (values below it -> 0), then negative values.

    ``background``: a constant level per voxel (same units as the data) subtracted everywhere; ``threshold``:
    values below it are set to 0 (a photon threshold, as bcdi does); ``negative``: what to do with values still
    < 0 outside the mask: "error" (refuse, with a hint), "clip" (set to 0) or "mask" (leave them free in the
    fit). Returns (intensity, mask, info) with the counts of what was changed.
    """
    if negative not in ("error", "clip", "mask"):
        raise InputError(f"negative must be error, clip or mask, got {negative!r}")
    if background < 0 or threshold < 0:
        raise InputError(f"background and threshold must be >= 0, got {background} and {threshold}")
    data = np.asarray(intensity, dtype=np.float32)
    mask = np.zeros(data.shape, bool) if mask is None else np.asarray(mask, dtype=bool).copy()
    if background:
        data = data - np.float32(background)
    info = {"background": float(background), "threshold": float(threshold), "negative": negative}
    if threshold:
        low = (data < threshold) & (data > 0)
        info["thresholded_voxels"] = int((low & ~mask).sum())
        data = np.where(low, 0.0, data).astype(np.float32)
    neg = (data < 0) & ~mask
    n_neg = int(neg.sum())
    info["negative_voxels"] = n_neg
    if n_neg:
        after = f" after subtracting the background {background:g}" if background else ""
        if negative == "error":
            raise InputError(f"intensity has {n_neg} negative values{after} (min {float(data[neg].min()):.3g}): "
                             f"clip them to 0 (--negative clip) or leave them out of the fit (--negative mask)")
        if negative == "mask":
            mask |= neg
        data = np.where(neg, 0.0, data).astype(np.float32)
    return np.where(mask, 0.0, data).astype(np.float32), mask, info


@dataclass(frozen=True)
class FrontEndOptions:
    """What a user may choose about the front end (everything else follows from the data and the model).

    The user-facing fields are those of the options schema (contract/options.py, same names and defaults), read
    from it by `from_options`; tolerance is the front end's own constant.
    """

    crop_size: tuple | int | None = None  # override of the crop box; the oversampling checks become warnings
    cnn_oversampling: float | None = None  # what the CNN's grid is aimed at; None: CNN_TARGET within the range
    refine_binned: bool = False  # refine on the binned 64³ grid instead of the crop at full resolution
    photon_scale: float | None = None  # photons per intensity unit; None: 1 for integer counts, else estimated
    background: float = 0.0  # constant background subtracted per voxel
    photon_threshold: float = 0.0  # values below it are set to 0 (after the background)
    negative: str = "error"  # negative values after that: error, clip or mask
    tolerance: float = 0.10  # how far beyond the training range an oversampling is accepted with a warning

    @classmethod
    def from_options(cls, options) -> "FrontEndOptions":
        """The front end's part of a reconstruction's options (contract.options.ReconOptions, read by field name:
        physics/ imports nothing of the project)."""
        return cls(**{f.name: getattr(options, f.name) for f in fields(cls) if f.name != "tolerance"})


@dataclass
class FrontEnd:
    """The front end's decisions, for the CXI / Tiled metadata and the CLI summary (all JSON-friendly)."""

    input_shape: tuple
    peak: tuple  # Bragg peak voxel in the input array
    oversampling: tuple  # measured per axis on the input grid
    training_range: tuple  # the model's training oversampling range
    training_range_source: str
    crop_shape: tuple  # crop box (refinement grid unless refine_binned)
    crop_offsets: tuple  # start of the crop box in the input array
    cnn_binning: tuple  # integer binning per axis to the 64³ grid (1 where resampled or already 64)
    cnn_resampled: tuple  # per axis: True where the crop was Fourier-resampled to 64
    oversampling_cnn: tuple  # what the CNN sees: oversampling x 64 / crop
    resampling: str
    refine_binning: tuple  # binning of the refinement grid (1 = full resolution)
    photon_scale: float
    photon_scale_source: str
    background: dict = field(default_factory=dict)
    crop_source: str = "oversampling"  # "oversampling", "crop_size override", "64³ input used as is"
    warnings: list = field(default_factory=list)
    truncated: tuple = ()  # per axis: the pattern is still bright at the ends of the array (a cut scan)

    def metadata(self) -> dict:
        out = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    def summary(self) -> str:
        """One line for the CLI."""
        os_in = " x ".join(f"{o:.2f}" for o in self.oversampling)
        os_cnn = " x ".join(f"{o:.2f}" for o in self.oversampling_cnn)
        how = ", ".join(("Fourier-resampled" if r else (f"binned x{b}" if b > 1 else "as is"))
                        for r, b in zip(self.cnn_resampled, self.cnn_binning))
        return (f"oversampling {os_in} -> crop {tuple(self.crop_shape)} at {tuple(self.crop_offsets)} -> 64³ "
                f"({how}) at oversampling {os_cnn} (model range {self.training_range[0]:g}-"
                f"{self.training_range[1]:g}); refinement "
                + ("binned" if any(b > 1 for b in self.refine_binning) else "at full resolution")
                + f"; photon scale {self.photon_scale:.4g} ({self.photon_scale_source})")


def _friendly_sizes(lo: int, hi: int, max_prime: int = 7) -> list[int]:
    return [m for m in range(max(2, lo + lo % 2), hi + 1, 2) if _is_smooth(m, max_prime)]


def check_peak_inside(shape: Sequence[int], peak: Sequence[int]) -> None:
    """InputError when the Bragg peak is closer than EDGE_MIN voxels to an edge (it cannot be centred)."""
    for axis, (n, c) in enumerate(zip(shape, peak)):
        edge = min(c, n - 1 - c)
        if edge < EDGE_MIN:
            raise InputError(f"the Bragg peak is on the edge of the array: index {c} on axis {axis} (size {n}) is "
                             f"{edge} voxels from the edge, fewer than {EDGE_MIN}; the peak cannot be centred")


def cnn_target(training_range: Sequence[float], cnn_oversampling: float | None = None) -> float:
    """The oversampling the CNN's grid is aimed at: the given one (inside the training range), else the point
    CNN_TARGET_POSITION of the way up the range on a log scale."""
    lo, hi = (float(v) for v in training_range)
    if cnn_oversampling is None:
        return float(lo * (hi / lo) ** CNN_TARGET_POSITION)
    if not lo <= cnn_oversampling <= hi:
        raise InputError(f"cnn oversampling {cnn_oversampling:g} is outside the model's training range {lo:g}-{hi:g}")
    return float(cnn_oversampling)


def plan_crop(shape: Sequence[int], peak: Sequence[int], oversampling: Oversampling, training_range: Sequence[float],
              crop_size=None, tolerance: float = 0.10, cnn_size: int = CNN_SIZE, max_prime: int = 7,
              target: float | None = None) -> dict:
    """Per axis, the crop C and how it reaches the CNN grid (binning b or Fourier resampling); see module doc.

    Raises InputError (one line, with the numbers) for a peak on the edge, undersampled data (automatic mode) or an
    array too small for any crop in range; a crop_size larger than the array is an error, not a clip.
    Returns dict(crop, offsets, binning, resampled, oversampling_cnn, warnings).
    """
    shape = tuple(int(n) for n in shape)
    lo, hi = (float(v) for v in training_range)
    target = cnn_target(training_range, target)
    override = None if crop_size is None else _as_tuple(crop_size, len(shape), "crop size")
    crop, offsets, binning, resampled, os_cnn, warnings = [], [], [], [], [], []
    check_peak_inside(shape, peak)
    for axis, (n, c, o) in enumerate(zip(shape, peak, oversampling.ratio)):
        avail = fft_friendly_size(2 * min(c, n - c), max_prime)
        under = oversampling.undersampled[axis] or o < 2.0
        if override is not None:
            want = override[axis]
            if want > n:
                raise InputError(f"crop size {want} on axis {axis} is larger than the array ({n} voxels)")
            size = fft_friendly_size(min(want, avail), max_prime)
            if size < 16:
                raise InputError(f"crop size {want} on axis {axis}: the peak at {c} of {n} leaves a crop of {size} "
                                 f"< 16")
            if size != want:
                warnings.append(f"axis {axis}: crop {want} reduced to {size} (FFT-friendly, centred on the peak at "
                                f"{c} of {n})")
            if under:
                warnings.append(f"axis {axis}: the data look undersampled (oversampling {o:.2f} <= 2)")
        else:
            if under:
                raise InputError(f"the data are undersampled along axis {axis}: oversampling {o:.2f} <= 2 "
                                 f"(its autocorrelation wraps around the axis); phase retrieval needs > 2")
            inner_lo, inner_hi = lo * INNER, hi / INNER  # the range's edges are where the network saw fewest cases
            sizes = _friendly_sizes(16, avail, max_prime)
            if not sizes:
                raise InputError(f"axis {axis}: the peak at {c} of {n} leaves no crop of at least 16 voxels")

            def miss(m):
                return abs(np.log(o * cnn_size / m / target))

            size = min(sizes, key=miss)
            # a multiple of 64 (binned: Poisson-preserving and cheap) when it lands almost as near the target
            multiples = [cnn_size * b for b in range(1, avail // cnn_size + 1)
                         if inner_lo <= o / b <= inner_hi and miss(cnn_size * b) <= miss(size) + np.log(BIN_SLACK)]
            if multiples:
                size = min(multiples, key=miss)
            else:
                got = o * cnn_size / size
                if got > hi * (1 + tolerance):
                    need = int(np.ceil(o * cnn_size / hi))
                    raise InputError(f"axis {axis}: oversampling {o:.2f} needs a crop of at least {need} voxels to "
                                     f"reach <= {hi:g} on the {cnn_size}-voxel CNN grid, but the peak at {c} of {n} "
                                     f"allows at most {avail}")
        b = size // cnn_size if size % cnn_size == 0 else 1
        got = o * cnn_size / size
        if override is None and not lo <= got <= hi:
            warnings.append(f"axis {axis}: the CNN sees oversampling {got:.2f}, outside the training range "
                            f"{lo:g}-{hi:g} (within the {tolerance:.0%} tolerance)")
        elif override is not None and not lo <= got <= hi:
            warnings.append(f"axis {axis}: crop {size} gives the CNN oversampling {got:.2f}, outside the training "
                            f"range {lo:g}-{hi:g}")
        crop.append(size)
        offsets.append(c - size // 2)
        binning.append(b)
        resampled.append(size != cnn_size * b)
        os_cnn.append(float(got))
    return {"crop": tuple(crop), "offsets": tuple(offsets), "binning": tuple(binning), "resampled": tuple(resampled),
            "oversampling_cnn": tuple(os_cnn), "warnings": warnings}


def to_cnn_grid(intensity_crop: np.ndarray, mask_crop: np.ndarray | None, binning: Sequence[int] | None = None,
                cnn_size: int = CNN_SIZE) -> np.ndarray:
    """The CNN's cnn_size³ input from a crop: masked voxels filled (fill_masked), summed over ``binning`` per axis,
    then Fourier-resampled on the axes that are not yet cnn_size. binning=None: C // 64 where 64 divides C."""
    data = fill_masked(intensity_crop, mask_crop)
    if binning is None:
        binning = [n // cnn_size if n % cnn_size == 0 and n >= cnn_size else 1 for n in data.shape]
    data = bin_array(data, tuple(int(b) for b in binning), mode="sum")
    return fourier_resample(data, (cnn_size,) * data.ndim)


@dataclass
class Prepared:
    """A measured peak ready for the CNN and the refinement: the refinement grid's data and the decisions."""

    intensity: np.ndarray  # float32, peak at n//2 per axis: the crop (or its binning with refine_binned)
    mask: np.ndarray  # bool, True = bad
    frontend: FrontEnd

    def metadata(self) -> dict:
        return self.frontend.metadata()


def prepare(intensity: np.ndarray, mask: np.ndarray | None, training_range: Sequence[float],
            options: FrontEndOptions = FrontEndOptions(), training_range_source: str = "",
            cnn_size: int = CNN_SIZE) -> Prepared:
    """photon scale -> background/threshold -> peak -> oversampling -> crop plan -> crop (-> binned refinement grid).

    A cnn_size³ input without a crop_size override is used as it is (it is on the model's grid, centred by
    convention); its oversampling is still measured and checked.
    """
    data = np.asarray(intensity, dtype=np.float32)
    if data.ndim != 3:
        raise InputError(f"intensity must be 3D, got shape {data.shape}")
    mask = np.zeros(data.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != data.shape:
        raise InputError(f"mask shape {mask.shape} differs from intensity shape {data.shape}")
    if options.photon_scale is not None:
        if not options.photon_scale > 0:
            raise InputError(f"photon scale must be > 0, got {options.photon_scale}")
        scale, scale_source = float(options.photon_scale), "given"
    else:
        scale, scale_source = photon_scale(data, mask)
    data, mask, bg = subtract_background(data, mask, options.background, options.photon_threshold,
                                       options.negative)
    peak = find_peak(data, mask)
    as_is = options.crop_size is None and data.shape == (cnn_size,) * 3
    if not as_is:
        check_peak_inside(data.shape, peak)
    os_ = estimate_oversampling(*(a[oversampling_box(data.shape, peak)] for a in (data, mask)))
    if as_is:
        warnings = []
        for axis, (o, u) in enumerate(zip(os_.ratio, os_.undersampled)):
            if u or o < 2.0:
                raise InputError(f"the data are undersampled along axis {axis}: oversampling {o:.2f} <= 2 "
                                 f"(its autocorrelation wraps around the axis); phase retrieval needs > 2")
            if not training_range[0] <= o <= training_range[1]:
                warnings.append(f"axis {axis}: the 64³ input has oversampling {o:.2f}, outside the training range "
                                f"{training_range[0]:g}-{training_range[1]:g}")
        plan = {"crop": data.shape, "offsets": (0, 0, 0), "binning": (1, 1, 1), "resampled": (False,) * 3,
                "oversampling_cnn": os_.ratio, "warnings": warnings}
    else:
        plan = plan_crop(data.shape, peak, os_, training_range, options.crop_size, options.tolerance, cnn_size,
                         target=options.cnn_oversampling)
    for axis in (a for a, t in enumerate(os_.truncated) if t):
        plan["warnings"].append(
            f"axis {axis}: the pattern is still bright at the ends of the array (truncated: the plain "
            f"autocorrelation reads oversampling {os_.plain[axis]:.2f}, the windowed one {os_.ratio[axis]:.2f}, "
            f"kept); the fit sees a cut pattern, so a longer scan or a larger detector window along this axis "
            f"would give a better-determined result")
    i_crop = crop_like(data, plan["offsets"], plan["crop"])
    m_crop = crop_like(mask, plan["offsets"], plan["crop"])
    refine_binning = (1, 1, 1)
    if options.refine_binned:
        if any(plan["resampled"]):
            axes = [a for a, r in enumerate(plan["resampled"]) if r]
            raise InputError(f"refinement on the binned grid needs an integer binning on every axis, but axis "
                             f"{axes[0]} was Fourier-resampled (crop {plan['crop'][axes[0]]}, not a multiple of "
                             f"{cnn_size}); refine at full resolution or give --crop-size as a multiple of {cnn_size}")
        refine_binning = plan["binning"]
        i_crop = bin_array(i_crop, refine_binning, mode="sum").astype(np.float32)
        m_crop = bin_array(m_crop, refine_binning, mode="any")
        i_crop[m_crop] = 0
    fe = FrontEnd(input_shape=tuple(data.shape), peak=tuple(int(p) for p in peak),
                  oversampling=tuple(round(float(o), 3) for o in os_.ratio),
                  training_range=tuple(float(v) for v in training_range),
                  training_range_source=training_range_source or "given",
                  crop_shape=tuple(int(c) for c in plan["crop"]), crop_offsets=tuple(int(o) for o in plan["offsets"]),
                  cnn_binning=tuple(int(b) for b in plan["binning"]), cnn_resampled=tuple(plan["resampled"]),
                  oversampling_cnn=tuple(round(float(o), 3) for o in plan["oversampling_cnn"]),
                  resampling=RESAMPLING if any(plan["resampled"]) else "none",
                  refine_binning=tuple(int(b) for b in refine_binning), photon_scale=scale,
                  photon_scale_source=scale_source, background=bg,
                  crop_source="64³ input used as is" if as_is else (
                      "crop_size override" if options.crop_size is not None else "oversampling"),
                  warnings=list(plan["warnings"]), truncated=tuple(bool(t) for t in os_.truncated))
    return Prepared(i_crop.astype(np.float32), m_crop, fe)
