"""Several independent phasing runs on the same data, selection by free LLK, and mode decomposition (PyNX-like).

Each run: same free-voxel mask, autocorrelation support, random object, ScaleObj('F'), a random shrink-wrap
threshold in threshold_range, the recipe with support updates, run by an Engine (physics.phasing.engine); runs
with obj2_out > max_obj2_out are dropped, the nb_keep best by free Poisson LLK are aligned on the best one and
decomposed into orthogonal modes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from physics.align import align
from physics.errors import InputError
from physics.phasing.cdi import CDI, SupportTooSmall, torch_threads
from physics.phasing.engine import BuiltinEngine, Engine, PhaseConfig, Problem, RunSpec
from physics.phasing.operators import free_pixel_mask
from physics.phasing.schedule import schedule


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


def phase_runs(iobs, mask=None, config: PhaseConfig | None = None, *, engine: Engine | None = None, free_mask=None,
               progress=None, should_cancel=None) -> MultiRunResult:
    """Run config.nb_run independent reconstructions of iobs (centred) and combine the nb_keep best into modes.

    engine: BuiltinEngine() (default) or any Engine (e.g. workers.engines.pynx_engine.PyNXEngine); every engine
    gets the same free mask, the same per-run draws (threshold, autocorrelation threshold, object seed, in a fixed
    order from config.seed) and the same schedule. progress(done, total) counts cycles over all runs;
    should_cancel() is checked between cycles. A run whose support still diverges after retuning is restarted
    with the threshold retuned by 1.1 (at most max_restart times), then recorded as failed. Runs are scored by
    our LLK code on the engine's final state, those with obj2_out > max_obj2_out rejected, and the best ones
    aligned and decomposed (combine_runs).
    zero_mask default False (masked voxels free, PyNX's generic default): "auto" (PyNX's ID01 runner) helps
    detector-gap bands and can hurt isolated masked voxels near the peak (docs/benchmarks.md), so it is an option.
    """
    config = config or PhaseConfig()
    engine = engine or BuiltinEngine()
    with torch_threads(config.num_threads):
        return _phase_runs(iobs, mask, config, engine, free_mask, progress, should_cancel)


def _phase_runs(iobs, mask, config, engine, free_mask, progress, should_cancel) -> MultiRunResult:
    """Body of phase_runs (see there)."""
    nb_keep = min(config.nb_keep, config.nb_run)
    rng = np.random.default_rng(config.seed)
    base = CDI(iobs, mask=mask, device=config.device)  # validates the data (one-line InputError)
    base_mask = base.get_mask()
    if free_mask is None:
        free_mask = free_pixel_mask(base.shape, ratio=config.free_ratio, mask=base_mask, seed=rng.integers(2**32))
    free_mask = np.asarray(free_mask, dtype=bool)
    if free_mask.shape != base.shape:
        raise InputError(f"free_mask has shape {free_mask.shape}, expected {base.shape} like iobs")
    has_free = bool((free_mask & ~base_mask).any())
    sched = schedule(config.recipe, config.update_period, config.zero_mask, support_update=True,
                     has_mask=bool(base_mask.any()))
    lo, hi = config.threshold_range
    specs, runs = [], []
    for irun in range(config.nb_run):  # the draws, in this order, define every engine's starts
        thr = float(rng.uniform(lo, hi))
        ac = float(rng.uniform(*config.autocorrelation_range))
        specs.append(RunSpec(irun, thr, ac, int(rng.integers(2**32))))
        runs.append({"run": irun, "threshold_start": thr, "autocorrelation_threshold": ac, "status": "failed",
                     "engine": engine.name})
    problem = Problem(np.asarray(iobs), None if mask is None else np.asarray(mask, bool), free_mask, config.device)
    candidates, errors = [], []
    for out in engine.run(problem, specs, sched, config, progress, should_cancel):
        rec = runs[out.run]
        rec["restarts"] = out.restarts
        if out.error is not None:
            rec["error"] = out.error
            errors.append(out.error)
            continue
        llk = out.llk
        if llk is None:
            llk = CDI(iobs, mask=mask, obj=out.obj, support=out.support, free_mask=free_mask,
                      device=config.device).compute_llk()
        rec.update(llk)
        rec.update(out.extra)
        rec["threshold"] = out.threshold
        score = llk["llk_poisson_free"] if has_free else llk["llk_poisson"]
        rec["score"] = score
        rec["status"] = "rejected_obj2_out" if llk["obj2_out"] > config.max_obj2_out else "ok"
        candidates.append((score, out.run, out.obj, out.support, rec["status"]))
        candidates.sort(key=lambda c: (c[4] != "ok", c[0], c[1]))
        del candidates[nb_keep:]
    if not candidates:
        raise SupportTooSmall(f"all {config.nb_run} runs failed: "
                              f"{errors[0] if errors else 'the support diverged despite threshold retuning'}")
    return combine_runs(candidates, runs, free_mask, config.max_obj2_out, config.center, config.upsample)


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
