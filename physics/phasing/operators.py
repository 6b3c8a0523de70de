"""PyNX-style operators on a CDI state: small steps that compose (op1 * op2 applies op2 first, op**n repeats).

Example: `(SupportUpdate() * ER()**20)**10 * cdi` runs 10 times (20 ER cycles, then one support update).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from physics.errors import InputError
from physics.phasing.cdi import CDI, DIMS, SupportTooLarge, SupportTooSmall, dilate_box


class Operator:
    """Base class: `op * cdi` applies, `op1 * op2` composes (op2 first), `op ** n` repeats n times."""

    def op(self, cdi: CDI) -> CDI:  # pragma: no cover - abstract
        raise NotImplementedError

    def __mul__(self, other):
        if isinstance(other, Operator):
            return Chain([self, other])
        if isinstance(other, CDI):
            out = self.op(other)
            return other if out is None else out
        return NotImplemented

    def __pow__(self, n: int):
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError(f"operator power must be a non-negative integer, got {n!r}")
        return Repeat(self, int(n))

    def nb_cycles(self) -> int:
        """Number of ER/HIO/RAAR cycles this operator performs (for progress reporting)."""
        return 0


class Chain(Operator):
    """Product of operators, applied right to left."""

    def __init__(self, ops):
        self.ops = []
        for o in ops:
            self.ops.extend(o.ops if isinstance(o, Chain) else [o])

    def op(self, cdi):
        for o in reversed(self.ops):
            cdi = o * cdi
        return cdi

    def nb_cycles(self):
        return sum(o.nb_cycles() for o in self.ops)

    def __repr__(self):
        return "*".join(repr(o) for o in self.ops)


class Identity(Operator):
    """The empty chain: leaves the state as it is."""

    def op(self, cdi):
        return cdi

    def __repr__(self):
        return "1"


class Repeat(Operator):
    """An operator applied n times."""

    def __init__(self, inner: Operator, n: int):
        self.inner, self.n = inner, n

    def op(self, cdi):
        for _ in range(self.n):
            cdi = self.inner * cdi
        return cdi

    def nb_cycles(self):
        return self.n * self.inner.nb_cycles()

    def __repr__(self):
        return f"({self.inner!r})**{self.n}"


class _Cycle(Operator):
    """One iterative phasing cycle; calc_llk=k computes the LLK every k-th global cycle (0: never).

    zero_mask True/False: masked Fourier voxels forced to 0 / left free during this cycle (PyNX's operator
    option); None: the state's cdi.zero_mask.
    """

    kind = ""

    def __init__(self, beta: float = 0.9, calc_llk: int = 0, zero_mask: bool | None = None):
        if not 0 < beta <= 1:
            raise InputError(f"beta must be in (0, 1], got {beta}")
        self.beta = float(beta)
        self.calc_llk = int(calc_llk)
        self.zero_mask = None if zero_mask is None else bool(zero_mask)

    def op(self, cdi):
        want = self.calc_llk > 0 and cdi.nb_cycle % self.calc_llk == 0
        if self.zero_mask is None:
            cdi.cycle(self.kind, self.beta, calc_llk=want)
            return cdi
        before, cdi.zero_mask = cdi.zero_mask, self.zero_mask
        try:
            cdi.cycle(self.kind, self.beta, calc_llk=want)
        finally:
            cdi.zero_mask = before
        return cdi

    def nb_cycles(self):
        return 1

    def __repr__(self):
        return self.kind


class ER(_Cycle):
    """Error reduction: obj <- P_S P_M obj (outside the support set to 0)."""

    kind = "ER"

    def __init__(self, calc_llk: int = 0, zero_mask: bool | None = None):
        super().__init__(0.9, calc_llk, zero_mask)


class HIO(_Cycle):
    """Hybrid input-output: inside S obj <- P_M obj; outside obj <- obj - beta P_M obj (beta 0.9)."""

    kind = "HIO"


class RAAR(_Cycle):
    """Relaxed averaged alternating reflections: inside P_M obj; outside (1-2beta) P_M obj + beta obj (beta 0.9)."""

    kind = "RAAR"


class FourierApplyAmplitude(Operator):
    """obj <- P_M obj: observed amplitudes imposed, masked and free voxels keep the calculated value."""

    def __init__(self, calc_llk: bool = False):
        self.calc_llk = calc_llk

    def op(self, cdi):
        cdi.fourier_apply_amplitude(calc_llk=self.calc_llk)
        return cdi


class LLK(Operator):
    """Compute LLKs, R-factor and obj2_out (after one magnitude projection) into cdi.llk; object unchanged."""

    def op(self, cdi):
        cdi.compute_llk()
        return cdi


class SupportUpdate(Operator):
    """Shrink-wrap: threshold the Gaussian-smoothed |obj| at threshold_relative x (rms|max|average over S).

    smooth_width: float sigma, or (sigma_begin, sigma_end, n): sigma = begin*(end/begin)**(c/n) for global
    cycle c < n, then end (n=None: run_recipe uses its HIO+RAAR cycle count; used alone it means sigma_end).
    threshold_relative: a float, or one value per run for a batched state (each run retunes its own).
    border_n > 0: only voxels in dilate_n(S) & ~erode_n(S) may change. force_shrink: voxels are only removed.
    Guards: if the new support has <= min_fraction or >= max_fraction of the voxels, the threshold is divided
    (resp. multiplied) by 1.1 and the update retried (up to max_retune times, retune=True), else raises
    SupportTooSmall / SupportTooLarge. The retuned threshold is kept for later updates.
    post_expand: e.g. (1, -2, 1): after thresholding, dilate (+k) or erode (-k) by a (2k+1)^3 box, in order
    (PyNX's cleaning option); applied before force_shrink and border_n, so both guarantees still hold.
    """

    def __init__(self, threshold_relative: float = 0.25, method: str = "rms", smooth_width=(2.0, 0.5, None),
                 border_n: int = 0, force_shrink: bool = False, min_fraction: float = 1e-4,
                 max_fraction: float = 0.7, retune: bool = True, max_retune: int = 20, post_expand=None):
        if method not in ("rms", "max", "average"):
            raise InputError(f"support method must be rms, max or average, got {method!r}")
        if not np.all(np.asarray(threshold_relative, dtype=float) > 0):
            raise InputError(f"support threshold must be > 0, got {threshold_relative}")
        if isinstance(smooth_width, (int, float)):
            smooth_width = (float(smooth_width), float(smooth_width), 0)
        if len(smooth_width) != 3:
            raise InputError(f"smooth_width must be a float or (begin, end, n_cycles), got {smooth_width!r}")
        if int(border_n) < 0:
            raise InputError(f"border_n must be >= 0, got {border_n}")
        # one float, or one threshold per run of a batched state
        self.threshold_relative = (float(threshold_relative) if np.ndim(threshold_relative) == 0
                                   else np.asarray(threshold_relative, dtype=float).copy())
        self.method = method
        self.smooth_width = tuple(smooth_width)
        self.border_n = int(border_n)
        self.force_shrink = bool(force_shrink)
        self.min_fraction = float(min_fraction)
        self.max_fraction = float(max_fraction)
        self.retune = bool(retune)
        self.max_retune = int(max_retune)
        self.nb_retune = 0
        try:
            self.post_expand = tuple(int(k) for k in (post_expand or ()))
        except (TypeError, ValueError) as exc:
            raise InputError(f"post_expand must be a sequence of integers, got {post_expand!r}") from exc

    def sigma(self, cycle: int) -> float:
        """Smoothing width (voxels) at a global cycle number."""
        begin, end, n = self.smooth_width
        if not n or cycle >= n or begin <= 0 or end <= 0:
            return float(end)
        return float(begin * (end / begin) ** (cycle / n))

    def op(self, cdi):
        a_all = cdi.smoothed_modulus(self.sigma(cdi.nb_cycle))
        band_all = cdi.border_band(self.border_n) if self.border_n > 0 else None
        nb_runs = cdi.batch or 1
        thr = np.broadcast_to(np.asarray(self.threshold_relative, dtype=float), (nb_runs,)).copy()
        news, sizes = [], []
        for i, (a, old, nb_old) in enumerate(zip(cdi.runs(a_all), cdi.runs(cdi._support), cdi._nb_support)):
            if i in cdi.failed:  # a diverged run of a batch keeps its support until the batch ends
                news.append(old)
                sizes.append(nb_old)
                continue
            band = None if band_all is None else cdi.runs(band_all)[i]
            try:
                new, thr[i], nb = self._update_one(a, old, band, nb_old, float(thr[i]))
            except (SupportTooSmall, SupportTooLarge) as exc:
                if cdi.batch is None:
                    raise
                cdi.failed[i] = exc
                new, nb = old, nb_old
            news.append(new)
            sizes.append(nb)
        if cdi.batch is not None and len(cdi.failed) == cdi.batch:  # every run diverged: stop the batch now
            raise cdi.failed[max(cdi.failed)]
        cdi._set_support_tensor(news[0] if cdi.batch is None else torch.stack(news))
        self.threshold_relative = float(thr[0]) if cdi.batch is None else thr
        cdi.support_threshold = float(thr[0]) if cdi.batch is None else [float(t) for t in thr]
        cdi.history.append({"cycle": cdi.nb_cycle, "support_size": cdi._per_run(sizes),
                            "threshold": cdi.support_threshold})
        return cdi

    def _update_one(self, a, old, band, nb_old: int, threshold: float):
        """New support of one run from its smoothed modulus a: (support, retuned threshold, size)."""
        vals = a[old] if nb_old > 0 else a.reshape(-1)
        if self.method == "rms":
            ref = float(torch.sqrt((vals.double() ** 2).mean()))
        elif self.method == "max":
            ref = float(vals.max())
        else:
            ref = float(vals.double().mean())
        size = a.numel()
        for attempt in range(self.max_retune + 1):
            new = a > threshold * ref
            for k in self.post_expand:
                new = dilate_box(new, k) if k > 0 else ~dilate_box(~new, -k)
            if self.force_shrink:
                new &= old
            if band is not None:
                new = torch.where(band, new, old)
            nb = int(new.sum())
            if nb <= self.min_fraction * size:
                if self.retune and attempt < self.max_retune:
                    threshold /= 1.1
                    self.nb_retune += 1
                    continue
                raise SupportTooSmall(f"support too small: {nb} voxels ({100 * nb / size:.3f} %) at threshold "
                                      f"{threshold:.3f} x {self.method}")
            if nb >= self.max_fraction * size:
                if self.retune and attempt < self.max_retune:
                    threshold *= 1.1
                    self.nb_retune += 1
                    continue
                raise SupportTooLarge(f"support too large: {nb} voxels ({100 * nb / size:.1f} %) at threshold "
                                      f"{threshold:.3f} x {self.method}")
            break
        return new, threshold, nb

    def __repr__(self):
        return "Sup"


class AutoCorrelationSupport(Operator):
    """Initial support = |FFT(Iobs)| > threshold x max, masked and free voxels set to 0 first (PyNX default 0.1)."""

    def __init__(self, threshold: float = 0.1):
        if not 0 < threshold < 1:
            raise InputError(f"autocorrelation threshold must be in (0, 1), got {threshold}")
        self.threshold = float(threshold)

    def op(self, cdi):
        i = cdi._iobs * (~cdi._mask & ~cdi._free)
        ac = torch.abs(torch.fft.fftn(i.to(torch.complex64)))  # data only: one support for every run
        cdi._set_support_tensor(ac > self.threshold * ac.max())
        return cdi


class InitObjRandom(Operator):
    """Random object inside the support: amplitude U(amin, amax) x exp(i U(0, phirange)); seedable.
    On a batched state every run gets the same draw (build distinct starts run by run, as phase_runs does)."""

    def __init__(self, amin: float = 0.0, amax: float = 1.0, phirange: float = 2 * math.pi, seed=None):
        self.amin, self.amax, self.phirange, self.seed = amin, amax, phirange, seed

    def op(self, cdi):
        rng = np.random.default_rng(self.seed)
        amp = rng.uniform(self.amin, self.amax, cdi.shape).astype(np.float32)
        ph = rng.uniform(0, self.phirange, cdi.shape).astype(np.float32)
        obj = torch.from_numpy((amp * np.exp(1j * ph)).astype(np.complex64)).to(cdi.device)
        cdi._obj.copy_(obj * cdi._support_f)
        return cdi


class ScaleObj(Operator):
    """Scale the object by one real factor to match the data: 'F' s = sum|Fc| sqrt(I) / sum |Fc|^2,
    'I' s = sqrt(sum Ic I / sum Ic^2); sums over observed non-free voxels."""

    def __init__(self, method: str = "F"):
        if method not in ("F", "I"):
            raise InputError(f"ScaleObj method must be 'F' or 'I', got {method!r}")
        self.method = method

    def op(self, cdi):
        iobs = cdi._iobs[cdi._observed].double()
        for obj in cdi.runs(cdi._obj):  # one factor per run of a batch
            fc = torch.abs(torch.fft.fftn(obj, dim=DIMS, norm="ortho"))[cdi._observed].double()
            if self.method == "F":
                den = float((fc ** 2).sum())
                s = float((fc * torch.sqrt(iobs)).sum()) / den if den > 0 else 1.0
            else:
                ic = fc ** 2
                den = float((ic ** 2).sum())
                s = math.sqrt(float((ic * iobs).sum()) / den) if den > 0 else 1.0
            obj.mul_(s)
        return cdi


def free_pixel_mask(shape, ratio: float = 0.05, radius: float = 3, exclude_center: float = 0.05,
                    mask=None, seed=None) -> np.ndarray:
    """Centred bool mask of ~ratio of the voxels, as random balls of given radius (periodic), excluding a
    central ellipsoid of relative radius exclude_center and any masked voxel."""
    if not 0 < ratio < 0.5:
        raise InputError(f"free-voxel ratio must be in (0, 0.5), got {ratio}")
    shape = tuple(shape)
    rng = np.random.default_rng(seed)
    r = int(math.ceil(radius))
    grid = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1].reshape(3, -1)
    offsets = grid[:, (grid ** 2).sum(axis=0) <= radius ** 2]
    allowed = np.ones(shape, dtype=bool)
    idx = np.indices(shape, sparse=True)
    rel = sum(((ix - n // 2) / (exclude_center * n)) ** 2 for ix, n in zip(idx, shape)) if exclude_center > 0 else None
    if rel is not None:
        allowed &= rel > 1
    if mask is not None:
        allowed &= ~np.asarray(mask, dtype=bool)
    free = np.zeros(shape, dtype=bool)
    target = ratio * allowed.sum()
    dims = np.array(shape)[:, None]
    for _ in range(100):
        missing = target - (free & allowed).sum()
        if missing <= 0:
            break
        nb = max(1, int(missing / offsets.shape[1]))
        centres = np.stack([rng.integers(0, n, nb) for n in shape])
        pts = (centres[:, :, None] + offsets[:, None, :]).reshape(3, -1) % dims
        free[tuple(pts)] = True
    return free & allowed


class InitFreePixels(Operator):
    """Choose ~5 % free voxels (balls of radius 3, centre and masked voxels excluded) for the free LLK."""

    def __init__(self, ratio: float = 0.05, radius: float = 3, exclude_center: float = 0.05, seed=None):
        self.ratio, self.radius, self.exclude_center, self.seed = ratio, radius, exclude_center, seed

    def op(self, cdi):
        cdi.set_free_mask(free_pixel_mask(cdi.shape, self.ratio, self.radius, self.exclude_center,
                                          mask=cdi.get_mask(), seed=self.seed))
        return cdi
