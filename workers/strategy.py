"""Reconstruction strategies: the paper's CNN paths, the standard multi-run recipe, and `adaptive`, which runs the
cheap CNN candidates first, judges them by the quality gate (physics/quality.py) and falls back to standard runs,
one at a time, only until one passes. Every result carries a confidence record (winning method, gate values,
ok | uncertain, number of candidates, time, and a hint of what to try when uncertain).

Pure orchestration on arrays (no I/O): `run_method(method, intensity, mask, predict, ...)` is what the CLI, the
service and the benchmarks call for `--method cnn-er | cnn-raar-er | standard | adaptive`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np

from physics.errors import InputError
from physics.quality import (GateThresholds, autocorrelation_support_size, gate_values, judge, judge_set,
                             photon_noise_fraction, single_checks)
from workers.pipeline import ReconOptions, ReconResult, crop_for_cnn, reconstruct

from contract.options import METHODS  # noqa: E402  (the one list: the options schema validates `method`)
PRE_RECIPE = "RAAR**200"  # (b+): RAAR cycles from the CNN object before the ER refinement
STANDARD_RECIPE = "HIO**400,RAAR**1000,ER**300"
# a run from the CNN's object: chosen on the calibration crystals (bench.adaptive_eval calib-report) among
# RAAR**400,ER**200 (0/22 rescued: RAAR stays in the CNN's basin), HIO**100,RAAR**300,ER**100, this, and the full
# recipe: the same successes as the full recipe (38/40) at half its median time
SEEDED_RECIPE = "HIO**200,RAAR**300,ER**100"
SEEDINGS = ("cnn_object", "autocorrelation", "cnn_support", "autocorrelation")
Progress = Callable[[str, float], None]


def _noop(stage: str, fraction: float) -> None:
    return None


@dataclass
class StrategyOptions:
    """What a strategy may spend and how it judges. recon: the options (device, crop and front end, border_n, ...).

    Fallback (adaptive): runs of `fallback_style` ("cohere" or "pynx", physics/phasing/single_run.py), seeded in
    turn as `seedings` says, with `seeded_recipe` for the first run from the CNN's object (it starts near an
    answer, so a shorter recipe rescues it) and `fallback_recipe` for every other run (a second start from the
    same object, which has no random seed, would repeat the first run); at most `max_runs` runs and `max_seconds`
    in all (a run is not started when the time spent plus the last run's duration would pass max_seconds).
    Standard method: phase_runs with nb_run random starts, nb_keep kept for the modes.
    """

    recon: ReconOptions = field(default_factory=ReconOptions)
    pre_recipe: str = PRE_RECIPE
    cnn_candidates: tuple = ("cnn-raar-er",)  # (b) after (b+) rescued no crystal in the calibration, and added
    # both of the gate's false positives there
    fallback_style: str = "cohere"
    fallback_recipe: str = STANDARD_RECIPE
    seeded_recipe: str = SEEDED_RECIPE
    seedings: tuple = SEEDINGS
    max_runs: int = 6
    max_seconds: float = 600.0
    nb_run: int = 20
    nb_keep: int = 5
    standard_recipe: str = STANDARD_RECIPE
    thresholds: GateThresholds = field(default_factory=GateThresholds)

    def __post_init__(self):
        if self.max_runs < 0:
            raise InputError(f"max runs must be >= 0, got {self.max_runs}")
        if not self.max_seconds > 0:
            raise InputError(f"max seconds must be > 0, got {self.max_seconds}")
        if self.fallback_style not in ("cohere", "pynx"):
            raise InputError(f"fallback style must be cohere or pynx, got {self.fallback_style!r}")
        bad = [m for m in self.cnn_candidates if m not in ("cnn-er", "cnn-raar-er")]
        if bad or not self.cnn_candidates:
            raise InputError(f"CNN candidates must be cnn-er and/or cnn-raar-er, got {self.cnn_candidates}")
        bad = [s for s in self.seedings if s not in ("cnn_object", "cnn_support", "autocorrelation")]
        if bad or not self.seedings:
            raise InputError(f"seedings must be cnn_object, cnn_support or autocorrelation, got {self.seedings}")
        from physics.phasing.recipe import parse_recipe

        for recipe in (self.fallback_recipe, self.seeded_recipe, self.standard_recipe):
            parse_recipe(recipe)  # a bad recipe is an InputError here, not after the CNN stage
        if self.nb_run < 1 or self.nb_keep < 1:
            raise InputError(f"nb_run and nb_keep must be >= 1, got {self.nb_run} and {self.nb_keep}")


@dataclass
class Candidate:
    """One reconstruction considered by a strategy (crop grid)."""

    name: str
    obj: np.ndarray
    support: np.ndarray
    llk: dict
    values: dict
    seconds: float
    info: dict = field(default_factory=dict)
    status: str = "uncertain"
    reasons: list = field(default_factory=list)
    mismatch: float | None = None
    group: str = ""  # the start it was refined from: "cnn" for the CNN paths and CNN-object seeded runs

    def summary(self) -> dict:
        return {"name": self.name, "status": self.status, "reasons": list(self.reasons), "mismatch": self.mismatch,
                "seconds": round(self.seconds, 3), **{k: v for k, v in self.values.items()}, **self.info}


@dataclass
class StrategyResult:
    """Outcome of run_method: `result` is a ReconResult (what the CXI / Tiled writers take) holding the chosen
    object (first mode when several candidates passed) and its LLKs; phase_cnn / intensity_cnn are None for
    the standard method. confidence: the record every output carries. candidates: one summary per candidate."""

    result: ReconResult
    confidence: dict
    candidates: list
    modes: np.ndarray | None = None
    mode_weights: np.ndarray | None = None


def _hint(best: Candidate | None, thr: GateThresholds, budget: str | None, nb_runs: int, masked: float,
          truncated: tuple = ()) -> str:
    """One line: what to try next when nothing passed the gate. truncated: the front end's per-axis flags."""
    tips = []
    if budget:
        tips.append(f"more runs (--max-runs {max(2 * nb_runs, 4)}) or more time (--max-seconds)")
    if best is not None and best.values.get("support_ratio", 0) > thr.max_support_ratio:
        tips.append("a tighter crop (--crop-size) or a mask of aliens: the support outgrew the autocorrelation bound")
    if any(truncated) and best is not None and not single_checks(best.values, thr):  # only an agreement missing
        axes = ", ".join(str(a) for a, t in enumerate(truncated) if t)
        tips.append(f"a longer scan or a larger detector window: the pattern is cut at the ends of the array (axis "
                    f"{axes}), so an 'ok' needs two independent starts that agree")
    if masked > 0.01:
        tips.append("a check of the detector mask (%.1f %% of the voxels are masked)" % (100 * masked))
    if not tips:
        tips = ["more runs (--max-runs)", "a mask of aliens or gaps", "a tighter crop (--crop-size)"]
    why = "; ".join(best.reasons) if best is not None and best.reasons else "no candidate"
    return f"no candidate passed the quality gate ({why}): try " + ", ".join(tips)


def _modes(cands: list[Candidate]):
    """Align the candidates on the first (best) one and decompose into orthogonal modes (PyNX-like)."""
    from physics.align import align
    from physics.phasing import ortho_modes

    best = cands[0].obj
    aligned = [best] + [align(best, c.obj)[0] for c in cands[1:]]
    modes, weights = ortho_modes(aligned)
    first = modes[0] * (np.linalg.norm(best) / max(np.linalg.norm(modes[0]), 1e-30))
    first = first * np.exp(1j * np.angle(np.vdot(first, best)))
    return first.astype(np.complex64), modes, weights


def _finish(method: str, cands: list[Candidate], base: ReconResult, t0: float, thr: GateThresholds,
            budget: str | None, nb_runs: int, timings: dict, fallback_ran: bool) -> StrategyResult:
    """Pick the best passing candidate by free LLK (modes over all passing ones), or the best overall, uncertain."""
    from physics.metrics import data_metrics

    def score(c):
        lf = c.values.get("llk_free")
        return lf if lf is not None and np.isfinite(lf) else float("inf")

    oks = sorted([c for c in cands if c.status == "ok"], key=score)
    if oks:
        pool = oks
    else:  # prefer candidates that at least keep their energy inside the support
        inside = [c for c in cands if c.values.get("obj2_out", 1) <= thr.max_obj2_out]
        pool = sorted(inside or cands, key=score)
    win = pool[0]
    obj, support, modes, weights, first_w = win.obj, win.support, None, None, None
    if len(oks) > 1:
        obj, modes, weights = _modes(oks)
        first_w = float(weights[0])
    if win.name.startswith("standard-run"):  # a run from the autocorrelation may sit anywhere in the periodic box
        from physics.phasing import center_on_support

        obj, support, roll = center_on_support(obj, support)
        if modes is not None:
            modes = np.roll(modes, roll, axis=tuple(range(1, modes.ndim)))
    llk = dict(win.llk) if modes is None else dict(data_metrics(obj, base.intensity_crop, mask=base.mask_crop,
                                                                free_mask=base.free_mask, support=support))
    seconds = time.perf_counter() - t0
    timings = {**base.timings, **timings, "total": seconds}
    status = "ok" if oks else "uncertain"
    masked = float(np.mean(base.mask_crop)) if base.mask_crop is not None else 0.0
    confidence = {"method": method, "winner": win.name, "status": status,
                  "gate": {**win.values, "mismatch": win.mismatch}, "reasons": list(win.reasons),
                  "thresholds": thr.as_dict(), "nb_candidates": len(cands), "nb_passed": len(oks),
                  "fallback_ran": fallback_ran, "budget_exhausted": budget, "seconds": round(seconds, 3),
                  "first_mode_weight": first_w,
                  "hint": None if oks else _hint(win, thr, budget, nb_runs, masked,
                                                base.frontend.truncated if base.frontend is not None else ())}
    recipe = win.info.get("recipe", base.recipe) if win.name.startswith("standard-run") else base.recipe
    result = replace(base, obj=obj, support=support, llk=llk, timings=timings, recipe=recipe,
                     options={**base.options, "method": method, "winner": win.name},
                     warnings=list(base.warnings) + ([] if oks else [confidence["hint"]]))
    return StrategyResult(result=result, confidence=confidence, candidates=[c.summary() for c in cands],
                          modes=modes, mode_weights=weights)


def autocorrelation_bound(i_crop, m_crop, frontend) -> int:
    """The gate's autocorrelation bound of the crop the candidates were refined on, with the front end's photon
    scale (its noise floor is in photons)."""
    scale = frontend.photon_scale if frontend is not None else 1.0
    return autocorrelation_support_size(i_crop, m_crop, photon_scale=scale)


def photon_noise(i_crop, m_crop, frontend) -> float:
    """The gate's photon-noise share of the crop (physics.quality.photon_noise_fraction), in photons by the front
    end's photon scale."""
    scale = frontend.photon_scale if frontend is not None else 1.0
    return photon_noise_fraction(i_crop, m_crop, photon_scale=scale)


def thresholds_for(thr: GateThresholds, frontend) -> GateThresholds:
    """The gate's limits for one pattern: on a pattern the front end reports truncated, an 'ok' needs an independent
    start that agrees (GateThresholds.for_pattern)."""
    return thr.for_pattern(frontend is not None and any(frontend.truncated))


def _cnn_candidate(name: str, intensity, mask, predict, opts: StrategyOptions, progress, should_cancel, free_mask):
    """Run one CNN path (border-only ER refinement as the pipeline does it) and return (ReconResult, seconds)."""
    pre = opts.pre_recipe if name == "cnn-raar-er" else opts.recon.pre_recipe  # cnn-er keeps the user's own
    ro = replace(opts.recon, pre_recipe=pre)
    t = time.perf_counter()
    r = reconstruct(intensity, mask, predict, ro, progress=progress,  # the pipeline's own stage names
                    should_cancel=should_cancel, free_mask=free_mask)
    return r, time.perf_counter() - t


def _judge(cands: list[Candidate], thr: GateThresholds, cache: dict) -> bool:
    """Judge every candidate (agreement among them) in place; True when one passes."""
    verdicts = judge_set([c.obj for c in cands], [c.values for c in cands], thr, cache,
                         groups=[c.group for c in cands])
    for c, v in zip(cands, verdicts):
        c.status, c.reasons, c.mismatch = v["status"], v["reasons"], v["mismatch"]
    return any(c.status == "ok" for c in cands)


def fallback_start(kind: str, ref_obj=None, ref_support=None):
    """(start_obj, start_support, twin_at) of a fallback run: the CNN's object or support, or the autocorrelation."""
    from scipy.ndimage import binary_dilation

    if kind == "autocorrelation" or ref_obj is None:
        return None, None, 2
    sup = binary_dilation(ref_support, iterations=1 if kind == "cnn_object" else 2)
    if kind == "cnn_object":
        return ref_obj, sup, None  # the CNN start has already chosen between the object and its twin
    return None, sup, 2


def fallback_plan(k: int, opts: StrategyOptions) -> tuple[str, str]:
    """(seeding, recipe) of fallback run number k (0-based): the seedings in turn; the CNN's object is a fixed start
    (no random seed), so the first run from it is the short seeded recipe and a later one the full recipe (the same
    deterministic run never repeats)."""
    kind = opts.seedings[k % len(opts.seedings)]
    first_from_obj = kind == "cnn_object" and kind not in opts.seedings[:k]
    return kind, (opts.seeded_recipe if first_from_obj else opts.fallback_recipe)


def fallback_run(intensity, mask, free_mask, kind: str, recipe: str, k: int, opts: StrategyOptions,
                 ref_obj=None, ref_support=None, progress: Progress = _noop, should_cancel=None) -> dict:
    """Fallback run number k (0-based) of the adaptive strategy, seeded as ``kind`` says from the reference CNN
    candidate (its object and support): physics.phasing.single_run's dict. One definition for the strategy and
    the gate's calibration (bench/calibrate_gate.py), so both judge the same runs."""
    from physics.phasing.single_run import single_run

    start_obj, start_sup, twin_at = fallback_start(kind, ref_obj, ref_support)
    return single_run(intensity, mask, style=opts.fallback_style, recipe=recipe, free_mask=free_mask,
                      start_obj=start_obj, start_support=start_sup, seed=opts.recon.seed + 1000 + k,
                      device=opts.recon.device, twin_at=twin_at,
                      progress=lambda d, n: progress(f"fallback run {k + 1}", d / n), should_cancel=should_cancel)


def adaptive(intensity, mask, predict, opts: StrategyOptions = StrategyOptions(), progress: Progress = _noop,
             should_cancel=None, free_mask=None) -> StrategyResult:
    """CNN candidates first; stop at the first that passes the gate; else standard runs one at a time, within
    the budget, stopping at the first that passes. Returns the best by free LLK (modes over those that passed)."""
    t0 = time.perf_counter()
    thr = opts.thresholds
    cands: list[Candidate] = []
    cache: dict = {}
    timings: dict = {}
    base, ac = None, None
    passed = False
    for name in opts.cnn_candidates:
        r, sec = _cnn_candidate(name, intensity, mask, predict, opts, progress, should_cancel,
                                free_mask if base is None else base.free_mask)
        if base is None:
            base = r
            ac = autocorrelation_bound(r.intensity_crop, r.mask_crop, r.frontend)
            noise = photon_noise(r.intensity_crop, r.mask_crop, r.frontend)
            thr = thresholds_for(opts.thresholds, r.frontend)
        timings[name] = sec
        vals = gate_values(r.obj, r.support, r.intensity_crop, r.mask_crop, r.free_mask, llk=r.llk, ac_size=ac,
                           noise_fraction=noise)
        cands.append(Candidate(name, r.obj, r.support, dict(r.llk), vals, sec, group="cnn"))
        if _judge(cands, thr, cache):
            passed = True
            break
    budget, nb_runs, last = None, 0, 0.0
    if not passed:
        ref = min(cands, key=lambda c: c.values.get("llk_free", float("inf")))
        while True:
            if nb_runs >= opts.max_runs:
                budget = "runs"
                break
            if time.perf_counter() - t0 + last > opts.max_seconds:
                budget = "seconds"
                break
            kind, recipe = fallback_plan(nb_runs, opts)
            t = time.perf_counter()
            run = fallback_run(base.intensity_crop, base.mask_crop, base.free_mask, kind, recipe, nb_runs, opts,
                               ref.obj, ref.support, progress, should_cancel)
            last = time.perf_counter() - t
            nb_runs += 1
            timings[f"fallback_{nb_runs}"] = last
            vals = gate_values(run["obj"], run["support"], base.intensity_crop, base.mask_crop, base.free_mask,
                               llk=run["llk"], ac_size=ac, noise_fraction=noise)
            cands.append(Candidate(f"standard-run-{nb_runs}", run["obj"], run["support"], dict(run["llk"]), vals,
                                   last, {"style": opts.fallback_style, "seeding": kind,
                                          "recipe": f"{opts.fallback_style}-style {recipe}",
                                          "threshold": run["threshold"], "restarts": run["restarts"]},
                                   group="cnn" if kind == "cnn_object" else f"run-{nb_runs}"))
            if _judge(cands, thr, cache):
                break
    return _finish("adaptive", cands, base, t0, thr, budget, nb_runs, timings, fallback_ran=nb_runs > 0)


def cnn_only(method: str, intensity, mask, predict, opts: StrategyOptions = StrategyOptions(),
             progress: Progress = _noop, should_cancel=None, free_mask=None) -> StrategyResult:
    """The paper's (b) ("cnn-er") or (b+) ("cnn-raar-er"), unchanged, with the gate's verdict on its one candidate."""
    t0 = time.perf_counter()
    r, sec = _cnn_candidate(method, intensity, mask, predict, opts, progress, should_cancel, free_mask)
    ac = autocorrelation_bound(r.intensity_crop, r.mask_crop, r.frontend)
    vals = gate_values(r.obj, r.support, r.intensity_crop, r.mask_crop, r.free_mask, llk=r.llk, ac_size=ac,
                       noise_fraction=photon_noise(r.intensity_crop, r.mask_crop, r.frontend))
    cands = [Candidate(method, r.obj, r.support, dict(r.llk), vals, sec, group="cnn")]
    thr = thresholds_for(opts.thresholds, r.frontend)
    _judge(cands, thr, {})
    return _finish(method, cands, r, t0, thr, None, 0, {}, fallback_ran=False)


def standard(intensity, mask, opts: StrategyOptions = StrategyOptions(), progress: Progress = _noop,
             should_cancel=None, free_mask=None) -> StrategyResult:
    """The multi-run recipe (phase_runs: nb_run random starts, best nb_keep by free LLK, first mode) on the same
    crop as the CNN paths; its agreement is the smallest mismatch of a kept run with the best one."""
    from physics.phasing import free_pixel_mask, phase_runs

    t0 = time.perf_counter()
    ro = opts.recon
    i_crop, m_crop, offsets, fe = crop_for_cnn(np.asarray(intensity, np.float32), mask, ro)
    if free_mask is None:
        free_mask = free_pixel_mask(i_crop.shape, ratio=ro.free_ratio, mask=m_crop, seed=ro.seed)
    from physics.phasing import PhaseConfig, resolve_device

    config = PhaseConfig(recipe=opts.standard_recipe, nb_run=opts.nb_run, nb_keep=opts.nb_keep, seed=ro.seed,
                         device=str(resolve_device(ro.device)))
    res = phase_runs(i_crop, mask=m_crop, config=config, free_mask=free_mask,
                     progress=lambda d, n: progress("standard", d / n), should_cancel=should_cancel)
    sec = time.perf_counter() - t0
    ac = autocorrelation_bound(i_crop, m_crop, fe)
    vals = gate_values(res.obj, res.support, i_crop, m_crop, free_mask, ac_size=ac,
                       noise_fraction=photon_noise(i_crop, m_crop, fe))
    ms = [res.runs[k]["align"]["mismatch"] for k in res.kept[1:] if "align" in res.runs[k]]
    mismatch = min(ms) if ms else None
    thr = thresholds_for(opts.thresholds, fe)  # the kept runs are independent random starts
    status, why = judge(vals, thr, mismatch)
    from physics.metrics import data_metrics

    llk = dict(data_metrics(res.obj, i_crop, mask=m_crop, free_mask=free_mask, support=res.support))
    base = ReconResult(obj=res.obj, support=res.support, intensity_crop=i_crop, mask_crop=m_crop, phase_cnn=None,
                       recipe=f"{opts.nb_run} runs of {opts.standard_recipe}, best {opts.nb_keep}, first mode",
                       intensity_cnn=None, crop_offsets=tuple(int(o) for o in offsets),
                       input_shape=tuple(np.shape(intensity)), llk=llk, timings={"standard": sec},
                       options={**asdict(ro), "recipe": opts.standard_recipe, "nb_run": opts.nb_run,
                                "nb_keep": opts.nb_keep}, free_mask=free_mask,
                       warnings=list(fe.warnings) + list(res.warnings), frontend=fe)
    cand = Candidate("standard", res.obj, res.support, llk, vals, sec,
                     {"nb_run": opts.nb_run, "nb_kept": len(res.kept), "first_mode_weight": res.first_mode_weight})
    cand.status, cand.reasons, cand.mismatch = status, why, mismatch
    out = _finish("standard", [cand], base, t0, thr, None, 0, {"standard": sec}, fallback_ran=False)
    out.confidence["first_mode_weight"] = res.first_mode_weight
    out.modes, out.mode_weights = res.modes, res.mode_weights
    return out


def run_method(method: str, intensity, mask, predict, opts: StrategyOptions | None = None,
               progress: Progress = _noop, should_cancel=None, free_mask=None) -> StrategyResult:
    """Dispatch `--method`: cnn-er (the paper's (b)), cnn-raar-er ((b+)), standard (multi-run), adaptive.

    predict(i64) -> 64³ phase is the CNN (unused by standard). free_mask (crop grid): voxels withheld for the
    free LLK (default: drawn with the recon seed).
    """
    opts = opts or StrategyOptions()
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if method == "standard":
        return standard(intensity, mask, opts, progress, should_cancel, free_mask)
    if predict is None:
        raise InputError(f"method {method} needs the CNN (a phase predictor)")
    if method in ("adaptive", "cnn-raar-er") and opts.recon.er_cycles == 0:
        raise InputError(f"er_cycles 0 (the CNN-only object) is for method cnn-er; {method} refines the CNN's "
                         "object with RAAR and ER cycles: give er_cycles > 0 or method cnn-er")
    if method == "adaptive":
        return adaptive(intensity, mask, predict, opts, progress, should_cancel, free_mask)
    return cnn_only(method, intensity, mask, predict, opts, progress, should_cancel, free_mask)


def summary_line(res: StrategyResult) -> str:
    """The CLI's one-line summary of the confidence record."""
    c = res.confidence
    g = c["gate"]
    line = (f"{c['method']}: {c['status']} (winner {c['winner']}, {c['nb_candidates']} candidate(s), "
            f"{c['seconds']:.1f} s; free LLK {g.get('llk_free', float('nan')):.3g}, "
            f"obj2_out {g.get('obj2_out', float('nan')):.3g}, support/autocorrelation "
            f"{g.get('support_ratio', float('nan')):.3g}"
            + (f", mismatch {g['mismatch']:.3g}" if g.get("mismatch") is not None else "") + ")")
    return line


def flat_confidence(confidence: dict) -> dict:
    """The confidence record flattened to scalars (str, int, float, bool) for CXI process attributes and Tiled
    metadata: gate values become gate_<name>, thresholds threshold_<name>, None becomes "", lists are joined."""
    out = {}
    for k, v in confidence.items():
        if isinstance(v, dict):
            prefix = "threshold" if k == "thresholds" else k
            for k2, v2 in v.items():
                out[f"{prefix}_{k2}"] = "" if v2 is None else v2
        elif isinstance(v, (list, tuple)):
            out[k] = "; ".join(str(x) for x in v)
        else:
            out[k] = "" if v is None else v
    return out
