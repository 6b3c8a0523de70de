"""One standard phasing run from a chosen start, in one of two of the field's recipe styles.

- "pynx": PyNX's runner conventions (as phase_runs): support update every 20 cycles, rms threshold 0.25,
  Gaussian smoothing 2 -> 0.5 over the HIO+RAAR cycles;
- "cohere": cohere-core's default flow as its configuration describes it: shrink-wrap on every iteration
  (Gaussian sigma 1, threshold 0.1 x max of the smoothed modulus), a twin-removal step at iteration 2 that
  zeroes the object outside one half along each of the first two axes (breaks the object/twin symmetry early),
  400 HIO + 1000 RAAR + 300 ER. Its 0.1 x max support keeps the crystal's soft fringe (IoU ~0.6 with the true
  support on a run whose phase was right to 0.07 rad), so the run ends with one PyNX-rule support update (rms
  0.25, sigma 0.5) and 20 ER cycles: both styles report their support by the same rule. Cycles are this
  engine's (HIO and RAAR with PyNX's beta = 0.9; cohere's own RAAR uses another parametrisation), so it is
  "cohere-style", not cohere.

The start is the autocorrelation support with a random object (PyNX's default), or a given support and/or
object (e.g. the CNN's), so that an adaptive strategy can seed some runs from a network. Used by
workers/strategy.py (the adaptive fallback) and bench/calibrate_gate.py. New operators live here, so the engine's
own files stay as they are.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from physics.errors import InputError
from physics.phasing.cdi import CDI, SupportTooLarge, SupportTooSmall
from physics.phasing.operators import AutoCorrelationSupport, InitObjRandom, Operator, ScaleObj, SupportUpdate
from physics.phasing.recipe import parse_recipe
from physics.phasing.schedule import run_recipe

STYLES = ("pynx", "cohere")
DEFAULT_RECIPES = {"pynx": "HIO**400,RAAR**1000,ER**300", "cohere": "HIO**400,RAAR**1000,ER**300"}


def _gaussian_transfer(shape, sigma: float, device) -> torch.Tensor:
    """rfft transfer function of the periodic, sampled Gaussian kernel (truncated at 4 sigma, normalised), i.e.
    scipy.ndimage.gaussian_filter's kernel, the one CDI.smoothed_modulus uses; built once per run."""
    radius = int(4.0 * sigma + 0.5)
    j = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (j / sigma) ** 2)
    w /= w.sum()
    g = None
    for axis, n in enumerate(shape):
        kern = np.zeros(n)
        np.add.at(kern, j % n, w)
        tf = np.fft.rfft(kern).real if axis == len(shape) - 1 else np.fft.fft(kern).real
        dims = [1] * len(shape)
        dims[axis] = tf.size
        gi = torch.from_numpy(tf.astype(np.float32)).to(device).reshape(dims)
        g = gi if g is None else g * gi
    return g


class ShrinkWrapMax(Operator):
    """cohere-style shrink-wrap: support = Gaussian-smoothed |obj| > threshold x its maximum over the whole array.

    A support outside [min_fraction, max_fraction] of the array retunes the threshold by 1.1 (up to max_retune
    times) and then raises SupportTooSmall / SupportTooLarge, as the engine's SupportUpdate does.
    """

    def __init__(self, threshold: float = 0.1, sigma: float = 1.0, min_fraction: float = 1e-4,
                 max_fraction: float = 0.7, max_retune: int = 20):
        if not 0 < threshold < 1:
            raise InputError(f"shrink-wrap threshold must be in (0, 1), got {threshold}")
        if not sigma >= 0:
            raise InputError(f"shrink-wrap sigma must be >= 0, got {sigma}")
        self.threshold, self.sigma = float(threshold), float(sigma)
        self.min_fraction, self.max_fraction, self.max_retune = min_fraction, max_fraction, int(max_retune)

    def op(self, cdi):
        if self.sigma > 0:
            key = (cdi.shape, str(cdi.device))
            if getattr(self, "_tf_key", None) != key:
                self._tf, self._tf_key = _gaussian_transfer(cdi.shape, self.sigma, cdi.device), key
            a = torch.fft.irfftn(torch.fft.rfftn(torch.abs(cdi._obj)) * self._tf, s=cdi.shape)
        else:
            a = torch.abs(cdi._obj)
        amax = a.max()
        size = a.numel()
        for attempt in range(self.max_retune + 1):
            new = a > self.threshold * amax
            nb = int(new.sum())
            if nb <= self.min_fraction * size:
                if attempt < self.max_retune:
                    self.threshold /= 1.1
                    continue
                raise SupportTooSmall(f"support too small: {nb} voxels at threshold {self.threshold:.3f} x max")
            if nb >= self.max_fraction * size:
                if attempt < self.max_retune:
                    self.threshold *= 1.1
                    continue
                raise SupportTooLarge(f"support too large: {nb} voxels at threshold {self.threshold:.3f} x max")
            break
        cdi._set_support_tensor(new)
        cdi.support_threshold = self.threshold
        return cdi


class RemoveTwinHalves(Operator):
    """Zero the object outside one half along each of the first two axes (centred frame): a quarter of the box
    is kept, which removes one of the two mirror solutions (object and conjugate twin) early in a run."""

    def __init__(self, halves=(0, 0)):
        self.halves = tuple(int(h) for h in halves)

    def op(self, cdi):
        keep = torch.zeros(cdi.shape, dtype=torch.bool)
        sl = []
        for axis, h in enumerate(self.halves[:2]):
            half = (cdi.shape[axis] + 1) // 2
            sl.append(slice(0, half) if h == 0 else slice(half, None))
        keep[tuple(sl)] = True
        keep_internal = torch.fft.ifftshift(keep).to(cdi.device)  # the engine stores arrays fft-shifted
        cdi._obj.mul_(keep_internal)
        return cdi


def _run_cohere(cdi: CDI, recipe: str, threshold: float, sigma: float, twin_at: int | None, progress,
                should_cancel, beta: float = 0.9) -> CDI:
    """Apply the recipe's cycles with a shrink-wrap after every cycle and the twin removal at cycle twin_at."""
    from physics.phasing.cdi import Cancelled

    steps = [s for s in parse_recipe(recipe) if s in ("ER", "HIO", "RAAR")]
    if not steps:
        raise InputError(f"recipe {recipe!r} has no ER/HIO/RAAR cycle")
    sw = ShrinkWrapMax(threshold, sigma)
    twin = RemoveTwinHalves()
    for k, step in enumerate(steps, start=1):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"cancelled after {k - 1} of {len(steps)} cycles")
        cdi.cycle(step, beta)
        if twin_at is not None and k == twin_at:
            twin * cdi
        sw * cdi
        if progress is not None:
            progress(k, len(steps))
    cdi.support_threshold = sw.threshold
    return cdi


def single_run(iobs, mask=None, style: str = "cohere", recipe: str | None = None, free_mask=None,
               start_obj=None, start_support=None, seed: int = 0, device="cpu", threshold: float | None = None,
               autocorrelation_threshold: float = 0.1, twin_at: int | None = 2, final_er: int = 20,
               max_restart: int = 5,
               progress=None, should_cancel=None) -> dict:
    """One run of `style` ("pynx" or "cohere") on centred data; returns obj, support, llk (with obj2_out),
    style, recipe, threshold, restarts, start and seconds.

    start_support: bool array (default: autocorrelation > autocorrelation_threshold x max); start_obj: complex
    array (default: random amplitude and phase inside the support, seeded). threshold: shrink-wrap threshold
    (default 0.25 rms for pynx, 0.1 max for cohere). A diverging support restarts the run with the threshold
    retuned by 1.1 (at most max_restart times), then raises. final_er (cohere style): ER cycles after the final
    PyNX-rule support update (0: keep cohere's own support).
    """
    if style not in STYLES:
        raise InputError(f"unknown recipe style {style!r}: use {' or '.join(STYLES)}")
    recipe = recipe or DEFAULT_RECIPES[style]
    parse_recipe(recipe)
    thr = threshold if threshold is not None else (0.25 if style == "pynx" else 0.1)
    t0 = time.perf_counter()
    start = ("object" if start_obj is not None else "random") + "+" + (
        "given-support" if start_support is not None else "autocorrelation")
    last_exc = None
    for attempt in range(max_restart + 1):
        cdi = CDI(iobs, mask=mask, device=device, free_mask=free_mask)
        if start_support is not None:
            cdi.set_support(np.asarray(start_support, bool))
        else:
            AutoCorrelationSupport(autocorrelation_threshold) * cdi
        if start_obj is not None:
            cdi.set_obj(np.where(cdi.get_support(), np.asarray(start_obj), 0).astype(np.complex64))
        else:
            InitObjRandom(seed=seed) * cdi
        ScaleObj("F") * cdi
        try:
            if style == "pynx":
                sup = SupportUpdate(threshold_relative=thr, method="rms", smooth_width=(2.0, 0.5, None))
                run_recipe(cdi, recipe, sup, update_period=20, progress=progress, should_cancel=should_cancel)
                final_thr = cdi.support_threshold if cdi.support_threshold is not None else thr
            else:
                _run_cohere(cdi, recipe, thr, 1.0, twin_at, progress, should_cancel)
                final_thr = cdi.support_threshold
                if final_er:
                    final = SupportUpdate(threshold_relative=0.25, method="rms", smooth_width=0.5)
                    run_recipe(cdi, f"Sup,ER**{int(final_er)}", final)
        except SupportTooSmall as exc:
            thr, last_exc = thr / 1.1, exc
            continue
        except SupportTooLarge as exc:
            thr, last_exc = thr * 1.1, exc
            continue
        llk = cdi.compute_llk()
        return {"obj": cdi.get_obj(), "support": cdi.get_support(), "llk": llk, "style": style, "recipe": recipe,
                "threshold": float(final_thr), "restarts": attempt, "start": start,
                "seconds": time.perf_counter() - t0}
    raise last_exc
