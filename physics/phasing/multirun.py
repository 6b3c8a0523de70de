"""Several independent phasing runs on the same data, selection by free LLK, and mode decomposition (PyNX-like).

Each run: same free-voxel mask, autocorrelation support, random object, ScaleObj('F'), a random shrink-wrap
threshold in threshold_range, the recipe with support updates; runs with obj2_out > max_obj2_out are dropped,
the nb_keep best by free Poisson LLK are aligned on the best one and decomposed into orthogonal modes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from physics.align import align
from physics.errors import InputError
from physics.phasing.cdi import CDI, SupportTooLarge, SupportTooSmall, torch_threads
from physics.phasing.operators import (AutoCorrelationSupport, InitObjRandom, ScaleObj, SupportUpdate,
                                       free_pixel_mask)
from physics.phasing.recipe import count_cycles, run_recipe


@dataclass
class MultiRunResult:
    """Outcome of phase_runs. obj: first mode scaled to the best run's norm (centred complex64);
    support: the best run's support (the frame every kept run was aligned to); runs: one dict per run;
    kept: run indices kept, best first; modes: (k, *shape) orthonormal modes; mode_weights: their weights."""

    obj: np.ndarray
    support: np.ndarray
    runs: list
    kept: list
    modes: np.ndarray
    first_mode_weight: float
    mode_weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    free_mask: np.ndarray | None = None
    best_obj: np.ndarray | None = None
    warnings: list = field(default_factory=list)


def center_on_support(obj: np.ndarray, support: np.ndarray):
    """Roll obj and support (periodically, whole voxels) so the support's circular centre of mass sits at n//2.

    Phasing solutions are translation invariant and may wrap across the box edges; this puts them back in the
    middle without interpolation. Returns (obj, support, roll).
    """
    if not support.any():
        return obj, support, (0,) * obj.ndim
    roll = []
    for axis, n in enumerate(support.shape):
        profile = support.sum(axis=tuple(i for i in range(support.ndim) if i != axis))
        angle = np.angle(np.sum(profile * np.exp(2j * np.pi * np.arange(n) / n)))
        com = (angle % (2 * np.pi)) * n / (2 * np.pi)
        roll.append(int(round(n // 2 - com)))
    axes = tuple(range(obj.ndim))
    return np.roll(obj, roll, axes), np.roll(support, roll, axes), tuple(roll)


def ortho_modes(objs) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal modes of a set of objects from the eigen-decomposition of their Gram matrix <x_i, x_j>.

    Returns (modes (k, *shape), weights (k,)), sorted by decreasing weight; weights sum to 1 and
    weight[0] is the fraction of the total squared norm carried by the first mode.
    """
    x = np.stack([np.asarray(o).ravel() for o in objs]).astype(np.complex128)
    gram = x.conj() @ x.T  # G_ij = <x_i, x_j>
    w, v = np.linalg.eigh(gram)
    order = np.argsort(w)[::-1]
    w, v = np.clip(w[order], 0, None), v[:, order]
    keep = w > w[0] * 1e-12
    modes = (v[:, keep].T @ x) / np.sqrt(w[keep])[:, None]
    modes = modes.reshape((-1,) + np.asarray(objs[0]).shape).astype(np.complex64)
    return modes, (w[keep] / w.sum()).astype(np.float64)


def phase_runs(iobs, mask=None, recipe: str = "HIO**400,RAAR**1000,ER**300", nb_run: int = 20, nb_keep: int = 5,
               threshold_range=(0.15, 0.40), seed: int = 0, device="cpu", update_period: int = 20,
               border_n: int = 0, progress=None, should_cancel=None, method: str = "rms",
               smooth_width=(2.0, 0.5, None), force_shrink: bool = False, max_obj2_out: float = 0.10,
               autocorrelation_range=(0.09, 0.11), free_mask=None, free_ratio: float = 0.05,
               max_restart: int = 5, upsample: int = 20, zero_mask=False, center: bool = True,
               num_threads: int | None = None) -> MultiRunResult:
    """Run nb_run independent reconstructions of iobs (centred) and combine the nb_keep best into modes.

    progress(done, total) counts cycles over all runs; should_cancel() is checked between cycles.
    A run whose support update still diverges after in-place retuning is restarted with the threshold
    retuned by 1.1 (at most max_restart times), then recorded as failed. center=True rolls the best run so its
    support is centred (whole voxels) before the others are aligned on it. num_threads: torch intra-op threads
    for the call (None: leave torch's setting; 1 is best on a shared, busy CPU). zero_mask: see run_recipe.
    Default False (masked voxels free, PyNX's generic default): "auto" (PyNX's ID01 runner) helped a 32³ crystal
    with a 6-voxel gap band (free LLK 23 -> 1.9) but hurt one with isolated masked voxels near the peak under
    a short recipe (free LLK 4-87 -> 22-350), so it is an option, not the default.
    """
    with torch_threads(num_threads):
        return _phase_runs(iobs, mask, recipe, nb_run, nb_keep, threshold_range, seed, device, update_period,
                           border_n, progress, should_cancel, method, smooth_width, force_shrink, max_obj2_out,
                           autocorrelation_range, free_mask, free_ratio, max_restart, upsample, center, zero_mask)


def _phase_runs(iobs, mask, recipe, nb_run, nb_keep, threshold_range, seed, device, update_period, border_n,
                progress, should_cancel, method, smooth_width, force_shrink, max_obj2_out, autocorrelation_range,
                free_mask, free_ratio, max_restart, upsample, center, zero_mask) -> MultiRunResult:
    """Body of phase_runs (see there)."""
    if nb_run < 1 or nb_keep < 1:
        raise InputError(f"nb_run and nb_keep must be >= 1, got {nb_run} and {nb_keep}")
    lo, hi = threshold_range
    if not 0 < lo <= hi:
        raise InputError(f"threshold_range must be 0 < low <= high, got {threshold_range}")
    nb_keep = min(nb_keep, nb_run)
    rng = np.random.default_rng(seed)
    base = CDI(iobs, mask=mask, device=device)
    if free_mask is None:
        free_mask = free_pixel_mask(base.shape, ratio=free_ratio, mask=base.get_mask(), seed=rng.integers(2**32))
    per_run = count_cycles(recipe)
    total = per_run * nb_run
    runs, candidates, warnings = [], [], []

    for irun in range(nb_run):
        thr = float(rng.uniform(lo, hi))
        ac = float(rng.uniform(*autocorrelation_range))
        obj_seed = int(rng.integers(2**32))
        rec = {"run": irun, "threshold_start": thr, "autocorrelation_threshold": ac, "status": "failed"}
        for attempt in range(max_restart + 1):
            cdi = CDI(iobs, mask=mask, device=device, free_mask=free_mask)
            AutoCorrelationSupport(ac) * cdi
            ScaleObj("F") * InitObjRandom(seed=obj_seed) * cdi
            sup = SupportUpdate(threshold_relative=thr, method=method, smooth_width=smooth_width,
                                border_n=border_n, force_shrink=force_shrink)

            def prog(done, _total, _irun=irun):
                if progress is not None:
                    progress(_irun * per_run + done, total)

            try:
                run_recipe(cdi, recipe, sup, update_period=update_period, progress=prog,
                           should_cancel=should_cancel, zero_mask=zero_mask)
            except SupportTooSmall:
                thr /= 1.1
                continue
            except SupportTooLarge:
                thr *= 1.1
                continue
            llk = cdi.compute_llk()
            rec.update(llk)
            rec["threshold"] = cdi.support_threshold if cdi.support_threshold is not None else thr
            rec["restarts"] = attempt
            score = llk["llk_poisson_free"] if cdi.nb_free > 0 else llk["llk_poisson"]
            rec["score"] = score
            if llk["obj2_out"] > max_obj2_out:
                rec["status"] = "rejected_obj2_out"
            else:
                rec["status"] = "ok"
            candidates.append((score, irun, cdi.get_obj(), cdi.get_support(), rec["status"]))
            candidates.sort(key=lambda c: (c[4] != "ok", c[0]))
            del candidates[nb_keep:]
            break
        runs.append(rec)

    if not candidates:
        raise SupportTooSmall(f"all {nb_run} runs failed: the support diverged despite threshold retuning")
    return combine_runs(candidates, runs, free_mask, max_obj2_out, center, upsample, warnings)


def combine_runs(candidates, runs, free_mask, max_obj2_out: float, center: bool = True, upsample: int = 20,
                 warnings=None) -> MultiRunResult:
    """Selection and modes shared by every engine: keep the candidates with obj2_out <= max_obj2_out (all of
    them, with a warning, if none passes), align them on the best (twin, sub-voxel shift, phase), decompose.

    candidates: (score, run index, obj, support, status) sorted best first; runs: one dict per run (updated).
    """
    warnings = list(warnings or [])
    good = [c for c in candidates if c[4] == "ok"]
    if not good:
        warnings.append(f"all runs had obj2_out > {max_obj2_out}; kept the best by free LLK anyway")
        good = candidates
    for r in runs:
        r["kept"] = False
    kept = [c[1] for c in good]
    for c in good:
        runs[c[1]]["kept"] = True
    best_obj, best_support = good[0][2], good[0][3]
    if center:
        best_obj, best_support, _ = center_on_support(best_obj, best_support)
    aligned = [best_obj]
    for c in good[1:]:
        a, info = align(best_obj, c[2], upsample=upsample)
        runs[c[1]]["align"] = info
        aligned.append(a)
    modes, weights = ortho_modes(aligned)
    first = modes[0]
    # scale to the best run's norm and give the mode the best run's global phase
    first = first * (np.linalg.norm(best_obj) / max(np.linalg.norm(first), 1e-30))
    first = first * np.exp(1j * np.angle(np.vdot(first, best_obj)))
    return MultiRunResult(obj=first.astype(np.complex64), support=best_support, runs=runs, kept=kept,
                          modes=modes, first_mode_weight=float(weights[0]), mode_weights=weights,
                          free_mask=free_mask, best_obj=best_obj, warnings=warnings)
