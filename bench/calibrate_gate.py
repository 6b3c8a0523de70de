"""Calibrate the quality gate (physics/quality.py) and compare the fallback recipes, on simulated crystals that are
not the evaluation's (seeds 5,000,000+ for 2π–5π and 5,500,000+ under π; bench/cnn_eval.py uses 2,000,000+).

For each crystal the candidates of the adaptive strategy are computed once and kept (JSON lines, one per crystal,
resumable): (b) CNN + ER, (b+) CNN + RAAR + ER, one PyNX-style and one cohere-style standard run from the
autocorrelation (physics/phasing/single_run.py), all on the same free voxels. Each candidate records the gate's
values (data only) and the truth (success as bench/cnn_eval.py defines it); every pair records its mismatch after
alignment. `report` then picks the gate thresholds (precision >= 95 % at the highest recall), compares the two
recipes by success per second, and replays the adaptive order on the records.

    python -m bench.calibrate_gate run --n-high 60 --n-low 20 --pynx-high 40   # compute (resumable)
    python -m bench.calibrate_gate report                          # docs/benchmarks.md sections
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from bench.cnn_eval import BINS, PRE_RECIPE, _append, _jsonl, _shard, _success, _truth_metrics, free_mask_for
from bench.common import model_tag
from physics.quality import GateThresholds

RESULTS = Path(__file__).parent / "results"
FILE = "gate_calibration.jsonl"
TIMING = "recipe_timing.txt"  # lines written by `timing`
COHERE_OVER_PYNX = 2.03  # CPU time of a cohere-style run over a PyNX-style one (`timing`, in recipe_timing.txt)
HIGH_SEED0, LOW_SEED0 = 5_000_000, 5_500_000
WIDE_HIGH_SEED0, WIDE_LOW_SEED0 = 5_200_000, 5_700_000  # --crystals wide: physics.simulate.WIDE, outside every set
WIDE_FILE = "gate_calibration_wide.jsonl"
WIDE_SECTION = "Quality gate on wide-condition calibration crystals (measured, not shipped)"
CANDIDATES = ("cnn_er", "cnn_raar_er", "std_pynx", "std_cohere", "fb_cnn_object", "fb_cnn_support")
# fb_*: the adaptive strategy's own fallback runs seeded from (b+)'s object (its short seeded recipe) or support
# (workers.strategy.fallback_run); std_cohere is its run from the autocorrelation (random object, full recipe)
REPLAY_ORDER = ("cnn_raar_er", "fb_cnn_object", "std_cohere", "fb_cnn_support")  # the strategy's default order
SAME_START = {"cnn_er": "cnn", "cnn_raar_er": "cnn", "fb_cnn_object": "cnn"}  # refined from the CNN's start
SECTION = "Quality gate calibration and fallback recipe (simulated crystals outside the evaluation set)"
TARGET_PRECISION, TARGET_RECALL = 0.95, 0.90
STRICT_PRECISION = 1.0  # no false 'ok' among the calibration's candidates
PREVIOUS_GATE = GateThresholds(max_llk_free=50.0, max_obj2_out=0.05, min_support_ratio=0.08,
                               max_support_ratio=0.20, max_mean_to_max=0.55, confirm_mean_to_max=None,
                               obj2_out_noise_weight=0.0)  # the default fitted on 30 crystals
GATE_UNTIL_1207 = GateThresholds(max_obj2_out=0.02,
                                 obj2_out_noise_weight=0.0)  # the rule's choice on the first 53 crystals (old bound)
ZONE_STEP = 0.01  # the confirmation zone's lower edge is sought on this mean_to_max grid
ZONE_MISMATCHES = (0.05, 0.08, 0.10, 0.12, 0.15, 0.20, 0.30)
FLOORS = (1.0, 0.99, 0.98, 0.97, 0.96, 0.95)  # the shipping rule: the highest floor that keeps recall >= 90 %


def crystals(n_high: int, n_low: int, wide: bool = False):
    """(seed, SimParams) interleaved: about n_high/n_low high-strain crystals per low-strain one. wide: the wide
    conditions of physics.simulate.WIDE (every shape and strain family, oversampling 2-5, faint peaks, gaps, bad
    pixels, background) on their own seeds, which no evaluation set draws."""
    from dataclasses import replace

    from physics.simulate import WIDE, SimParams

    base = WIDE if wide else SimParams()
    h0, l0 = (WIDE_HIGH_SEED0, WIDE_LOW_SEED0) if wide else (HIGH_SEED0, LOW_SEED0)
    high = [(h0 + i, base) for i in range(n_high)]
    low = [(l0 + i, replace(base, phase_range=(0.2, math.pi))) for i in range(n_low)]
    out, step = [], max(1, round(n_high / max(n_low, 1)))
    while high or low:
        out += high[:step] + low[:1]
        high, low = high[step:], low[1:]
    return out


def candidate(name: str, sample: dict, seed: int, free, model, er_cycles: int, recipe: str | None, ref=None):
    """Compute one candidate: (obj, support, llk dict, seconds, extra info); ref: (b+)'s (obj, support), which
    the fb_* runs start from."""
    if name.startswith("fb_"):
        from workers.strategy import StrategyOptions, fallback_plan, fallback_run

        opts = StrategyOptions() if recipe is None else StrategyOptions(fallback_recipe=recipe)
        kind = name.removeprefix("fb_")
        k = opts.seedings.index(kind)
        run_recipe = fallback_plan(k, opts)[1]
        t = time.perf_counter()
        r = fallback_run(sample["intensity"], sample["mask"], free, kind, run_recipe, k, opts, *ref)
        return r["obj"], r["support"], r["llk"], time.perf_counter() - t, {
            "threshold": r["threshold"], "restarts": r["restarts"], "recipe": run_recipe, "seeding": kind}
    if name in ("cnn_er", "cnn_raar_er"):
        from workers.pipeline import ReconOptions, reconstruct

        t = time.perf_counter()
        r = reconstruct(sample["intensity"], sample["mask"], model.predict_phase,
                        ReconOptions(er_cycles=er_cycles, pre_recipe=PRE_RECIPE if name == "cnn_raar_er" else ""),
                        free_mask=free)
        return r.obj, r.support, r.llk, time.perf_counter() - t, {}
    from physics.phasing.single_run import single_run

    style = name.removeprefix("std_")
    r = single_run(sample["intensity"], sample["mask"], style=style, recipe=recipe, free_mask=free, seed=seed)
    return r["obj"], r["support"], r["llk"], r["seconds"], {"threshold": r["threshold"], "restarts": r["restarts"],
                                                            "recipe": r["recipe"]}


def run(args) -> None:
    """Compute every missing crystal (all its candidates), one JSON line per crystal."""
    import torch

    from models.predict import load_model
    from physics.errors import InputError
    from physics.quality import agreement, autocorrelation_support_size, gate_values, photon_noise_fraction
    from physics.simulate import simulate_sample
    from workers.pipeline import crop_for_cnn

    torch.set_num_threads(args.threads)
    wide = args.crystals == "wide"
    out = Path(args.out) / (WIDE_FILE if wide else FILE)
    done = _jsonl(out)
    model = load_model(args.model)
    tag = model_tag(model)
    k, n = args.shard
    for seed, params in crystals(args.n_high, args.n_low, wide)[k::n]:
        old = done.get(seed)
        todo = [n for n in args.candidates if old is None or n not in old["candidates"]]
        if "std_pynx" in todo and not (HIGH_SEED0 <= seed < HIGH_SEED0 + args.pynx_high):
            todo.remove("std_pynx")  # the recipe comparison's PyNX-style run only on the first --pynx-high crystals
        sample = simulate_sample(seed, params)
        ac = autocorrelation_support_size(sample["intensity"], sample["mask"])
        noise = photon_noise_fraction(sample["intensity"], sample["mask"])
        if old is not None and (rebound(old, ac) | renoise(old, noise, sample["intensity"].size)):  # `|`: both
            _append(out, old)  # the same candidates, against today's bound and photon-noise estimate
            print(f"seed {seed}: support ratios against today's autocorrelation bound ({ac} voxels), photon-noise "
                  f"share {noise:.3g}", flush=True)
        if not todo:
            continue
        try:  # data the front end refuses (e.g. oversampling <= 2, wide conditions) give the product no candidate
            crop_for_cnn(sample["intensity"], sample["mask"])
        except InputError as exc:
            print(f"seed {seed}: refused by the front end, no candidate: {exc}", flush=True)
            continue
        free = free_mask_for(sample, seed)
        rec = old or {"seed": seed, "phase_range": float(sample["phase_range"]), "shape": str(sample["shape_kind"]),
                      "field": str(sample["field_kind"]), "model": tag, "er_cycles": args.er_cycles,
                      "recipe": args.recipe, "candidates": {}, "mismatch": {}, "ac_size": ac, "noise_fraction": noise}
        if rec["model"] != tag:
            raise SystemExit(f"seed {seed} was calibrated with {rec['model']}, not {tag}: use another --out")
        if any(n.startswith("fb_") for n in todo) and "cnn_raar_er" not in todo:
            todo.insert(0, "cnn_raar_er")  # recomputed (deterministic) as the fb_* runs' start
        todo.sort(key=lambda n: n.startswith("fb_"))  # (b+) before the runs that start from it
        objs, ref = {}, None
        for name in todo:
            try:
                obj, sup, llk, sec, extra = candidate(name, sample, seed, free, model, args.er_cycles, args.recipe,
                                                      ref)
            except RuntimeError as exc:  # a diverging support after every restart: recorded, not fatal
                rec["candidates"][name] = {"error": str(exc)}
                continue
            if name == "cnn_raar_er":
                ref = (obj, sup)
            vals = gate_values(obj, sup, sample["intensity"], sample["mask"], free, llk=llk, ac_size=ac,
                               noise_fraction=noise)
            truth = _truth_metrics(obj, sup, sample)
            rec["candidates"][name] = {**vals, **truth, "success": _success(truth), "seconds": sec, **extra}
            objs[name] = obj
        for a, b in itertools.combinations(objs, 2):  # pairs with an earlier session's candidates stay unknown
            if _mismatch(rec, a, b) is None:
                t = time.perf_counter()
                rec["mismatch"][f"{a}|{b}"] = agreement(objs[a], objs[b])
                rec["mismatch_seconds"] = time.perf_counter() - t
        _append(out, rec)  # the last line of a seed is its record (_jsonl)
        ok = {k: v.get("success") for k, v in rec["candidates"].items()}
        print(f"seed {seed} range {rec['phase_range']:.1f}: {ok}", flush=True)


def rebound(rec: dict, ac: int) -> bool:
    """Bring a crystal's record to today's autocorrelation bound `ac` (physics.quality.autocorrelation_support_size:
    it changed on 2026-12-07 to stand above the Poisson noise floor): each candidate's support ratio is its
    recorded support size over `ac`, nothing else moves. True when the record changed."""
    if rec.get("ac_size") == ac:
        return False
    for c in rec["candidates"].values():
        if "support_size" in c:
            c["support_ratio"] = c["support_size"] / max(ac, 1)
    rec["ac_size"] = ac
    return True


def renoise(rec: dict, noise: float, size: int) -> bool:
    """Give a crystal's record today's photon-noise share of obj2_out (physics.quality.obj2_out_noise, added to the
    gate on 2026-12-07; `noise`: photon_noise_fraction of its data, `size`: voxels): nothing else moves. True
    when the record changed."""
    from physics.quality import obj2_out_noise

    if rec.get("noise_fraction") == noise:
        return False
    for c in rec["candidates"].values():
        if "support_size" in c:
            c["obj2_out_noise"] = obj2_out_noise(noise, c["support_size"], size)
    rec["noise_fraction"] = noise
    return True


def timing(args) -> str:
    """CPU and wall seconds of one PyNX-style and one cohere-style run on the same crystal, back to back in the
    order A B B A (the calibration's wall times come from a machine whose load varied 5-15x while it ran)."""
    import torch

    from physics.phasing.single_run import single_run
    from physics.simulate import simulate_sample

    torch.set_num_threads(args.threads)
    sample = simulate_sample(HIGH_SEED0, crystals(1, 0)[0][1])
    out = {"pynx": [], "cohere": []}
    for style in ("pynx", "cohere", "cohere", "pynx"):
        c, w = time.process_time(), time.perf_counter()
        single_run(sample["intensity"], sample["mask"], style=style, recipe=args.recipe, seed=1)
        out[style].append((time.process_time() - c, time.perf_counter() - w))
    cpu = {k: float(np.mean([x[0] for x in v])) for k, v in out.items()}
    wall = {k: float(np.mean([x[1] for x in v])) for k, v in out.items()}
    line = (f"{time.strftime('%Y-%m-%d %H:%M')} one run, {args.threads} thread(s), order A B B A: CPU s PyNX-style "
            f"{cpu['pynx']:.1f}, cohere-style {cpu['cohere']:.1f} (cohere/PyNX {cpu['cohere'] / cpu['pynx']:.2f}); "
            f"wall s {wall['pynx']:.1f} and {wall['cohere']:.1f}")
    with open(Path(args.out) / TIMING, "a") as f:
        f.write(line + "\n")
    print(line)
    return line


# ------------------------------------------------------------------------------------------------ analysis
def _mismatch(rec: dict, a: str, b: str):
    m = rec["mismatch"]
    return m.get(f"{a}|{b}", m.get(f"{b}|{a}"))


def _judge_crystal(rec: dict, names, thr) -> dict:
    """Gate status of each candidate in names, agreement sought among the names only (as the strategy does), with
    the strategy's own judge (physics.quality.judge_set) on the recorded mismatches."""
    from physics.quality import judge_set

    c = [n for n in names if n in rec["candidates"] and "error" not in rec["candidates"][n]]
    cache = {(i, j): m for i, j in itertools.combinations(range(len(c)), 2)
             if (m := _mismatch(rec, c[i], c[j])) is not None}
    verdicts = judge_set(None, [rec["candidates"][n] for n in c], thr, cache,
                         groups=[SAME_START.get(n, n) for n in c])
    return {n: v["status"] == "ok" for n, v in zip(c, verdicts)}


def _timing_cpu(path: Path) -> dict:
    """CPU seconds per run of each style from the last `timing` line, {} if none."""
    import re

    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    m = re.search(r"CPU s PyNX-style ([\d.]+), cohere-style ([\d.]+)", lines[-1]) if lines else None
    return {"pynx": float(m.group(1)), "cohere": float(m.group(2))} if m else {}


def confusion(recs: list[dict], thr, names=CANDIDATES) -> dict:
    """Precision / recall of 'ok' for 'success' over every candidate of every crystal."""
    tp = fp = fn = tn = 0
    for rec in recs:
        st = _judge_crystal(rec, names, thr)
        for n, ok in st.items():
            s = rec["candidates"][n]["success"]
            tp += ok and s
            fp += ok and not s
            fn += (not ok) and s
            tn += (not ok) and not s
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec_ = tp / (tp + fn) if tp + fn else float("nan")
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": prec, "recall": rec_}


MODES = (False, True, "independent")  # no agreement, agreement with any other candidate, between independent starts
AMPLITUDES = ("support", "shape")  # where mean_to_max is judged (GateThresholds.amplitude_on); 'shape' only on
# records that have mean_to_max_shape (calibrations recorded from 2026-12-07 on)
MEAN_TO_MAX_GRID = (0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 1.0)  # 0.30, 0.35 added with the shape's values,
# which sit lower than the support's (no border slack)


def grid_confusions(recs: list[dict], modes=MODES) -> list[tuple]:
    """Every threshold setting of the grid with its confusion over the records: [(mode, GateThresholds, conf)];
    modes: the agreement modes to search (the shipping rule needs single checks only, MODES[0]). obj2_out is
    searched as measured (obj2_out_noise_weight 0), as when the rule was fixed; the shipped gate adds its
    photon-noise allowance on top (GateThresholds.obj2_out_noise_weight), which moves nothing on these bright
    crystals and was chosen on the wide-condition ones."""
    from physics.quality import GateThresholds

    vals = [v for r in recs for v in r["candidates"].values() if "error" not in v]
    amps = [a for a in AMPLITUDES if all(GateThresholds(amplitude_on=a).amplitude_key in v for v in vals)]
    lf = sorted({round(float(q), 3) for q in np.quantile([v["llk_free"] for v in vals], np.linspace(0.05, 0.95, 19))}
                | {1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 50.0})
    out = []
    for agree in modes:
        for mlf in lf:
            for o2, m2m, amp in itertools.product((0.02, 0.05, 0.10, 0.20), MEAN_TO_MAX_GRID, amps):
                for lo, hi in ((0.0, 1.0), (0.05, 0.25), (0.08, 0.2), (0.10, 0.20)):
                    for mm in ((0.05, 0.1, 0.15, 0.2, 0.3) if agree else (1.0,)):
                        thr = GateThresholds(max_llk_free=mlf, max_obj2_out=o2, max_mean_to_max=m2m,
                                             min_support_ratio=lo, max_support_ratio=hi, max_mismatch=mm,
                                             require_agreement=bool(agree), independent_partners=agree == "independent",
                                             confirm_mean_to_max=None, amplitude_on=amp, obj2_out_noise_weight=0.0)
                        out.append((agree, thr, confusion(recs, thr)))
    return out


def choose_thresholds(recs: list[dict], min_precision: float = TARGET_PRECISION, evaluated: list | None = None):
    """Grid search: the setting with the highest recall among those with precision >= min_precision, per agreement
    mode; ties go to the tightest limits (a new failure is likelier to fall outside them). Returns (best
    GateThresholds overall, its confusion, {mode: (key, thr, conf) or None}). evaluated: grid_confusions' output,
    to choose at several precisions without recomputing."""
    evaluated = grid_confusions(recs) if evaluated is None else evaluated
    best_per_mode = {m: None for m in MODES}
    for agree, thr, c in evaluated:
        if not c["precision"] >= min_precision:
            continue
        span = -1 if thr.max_support_ratio - thr.min_support_ratio > 0.9 else -(thr.max_support_ratio
                                                                                 - thr.min_support_ratio)
        key = (c["recall"], c["precision"], -thr.max_llk_free, -thr.max_mean_to_max, -thr.max_obj2_out, span,
               -thr.max_mismatch)
        if best_per_mode[agree] is None or key > best_per_mode[agree][0]:
            best_per_mode[agree] = (key, thr, c)
    cands = [b for b in best_per_mode.values() if b is not None]
    if not cands:
        return None, None, best_per_mode
    top = max(cands, key=lambda b: b[0])
    return top[1], top[2], best_per_mode


def shipping_choice(recs: list[dict], evaluated: list | None = None):
    """The rule the shipped gate follows (fixed before it was applied): single-candidate checks only (agreement
    costs a run per crystal), at the highest precision floor in FLOORS whose best setting keeps recall >= 90 %.
    Returns (floor, GateThresholds, confusion) or None."""
    evaluated = grid_confusions(recs) if evaluated is None else evaluated
    single = [e for e in evaluated if e[0] is False]
    for floor in FLOORS:
        _, _, per_mode = choose_thresholds(recs, floor, single)
        best = per_mode[False]
        if best is not None and best[2]["recall"] >= TARGET_RECALL:
            return floor, best[1], best[2]
    return None


def confirm_zone_choice(recs: list[dict], single: GateThresholds):
    """The confirmation zone of the gate `single` (single checks), by a fixed rule (written after the held-out
    sets' silent failures had been seen, so the third held-out set is its clean check): its lower
    edge is the largest mean_to_max limit (ZONE_STEP grid), every other limit as `single`, at which no wrong
    candidate passes; its agreement limit is the largest of ZONE_MISMATCHES at which the gate with the zone still
    marks no wrong candidate ok. Returns (GateThresholds with the zone, its confusion, the strict tier's
    confusion) or None when no edge qualifies."""
    from dataclasses import replace

    base = replace(single, confirm_mean_to_max=None, require_agreement=False)
    edge, strict = None, None
    for m in np.arange(round(0.10 / ZONE_STEP), round(single.max_mean_to_max / ZONE_STEP) + 1) * ZONE_STEP:
        c = confusion(recs, replace(base, max_mean_to_max=float(round(m, 4))))
        if c["fp"] == 0:
            edge, strict = float(round(m, 4)), c
    if edge is None:
        return None
    best = None
    for mm in ZONE_MISMATCHES:
        thr = replace(base, confirm_mean_to_max=edge, max_mismatch=mm)
        c = confusion(recs, thr)
        if c["fp"] == 0:
            best = (thr, c)
    if best is None:
        return None
    return best[0], best[1], strict


def replay_adaptive(rec: dict, thr, order=REPLAY_ORDER) -> dict:
    """The adaptive strategy replayed on one crystal's records: add candidates in order, stop at the first 'ok';
    the result is the ok candidate with the best free LLK (else the best free LLK overall, 'uncertain')."""
    used, secs = [], 0.0
    status = {}
    for n in order:
        v = rec["candidates"].get(n)
        if v is None or "error" in v:
            continue
        used.append(n)
        secs += v["seconds"]
        status = _judge_crystal(rec, used, thr)
        if any(status.values()):
            break
    oks = [n for n in used if status.get(n)]
    pool = oks or used
    win = min(pool, key=lambda n: rec["candidates"][n]["llk_free"])
    std = rec["candidates"].get("std_pynx", {}).get("seconds")
    if std is None and rec["candidates"].get("std_cohere", {}).get("seconds"):
        std = rec["candidates"]["std_cohere"]["seconds"] / COHERE_OVER_PYNX
    return {"winner": win, "ok": bool(oks), "success": rec["candidates"][win]["success"], "seconds": secs,
            "vs_c": secs / (20 * std) if std else None,
            "nb": len(used), "fallback": any(n.startswith("std_") for n in used)}


def _limits(t, agree=None) -> str:
    """The limits of a gate setting, in words."""
    noise = f" + {t.obj2_out_noise_weight:g} × its photon-noise share" if t.obj2_out_noise_weight else ""
    return (f"free LLK ≤ {t.max_llk_free:g}, obj2_out ≤ {t.max_obj2_out:g}{noise}, {t.amplitude_key} ≤ "
            f"{t.max_mean_to_max:g}, "
            f"support ratio in [{t.min_support_ratio:g}, {t.max_support_ratio:g}]"
            + (f", mismatch ≤ {t.max_mismatch:g}" if (t.require_agreement if agree is None else agree) else ""))


def report(args) -> str:
    from bench.common import machine
    from physics.quality import GateThresholds

    recs = list(_jsonl(Path(args.out) / FILE).values())
    if not recs:
        return "No calibration results yet."
    nb = {name: sum(lo <= r["phase_range"] < hi for r in recs) for name, lo, hi in BINS}
    lines = [f"Commands: `nice -n 10 .venv/bin/python -m bench.calibrate_gate run --n-high {args.n_high} "
             f"--n-low {args.n_low} --pynx-high {args.pynx_high}` (resumable), then "
             "`.venv/bin/python -m bench.calibrate_gate report`; "
             f"machine: {machine()}, 1 torch thread, shared with other benchmarks and tests.", "",
             f"Crystals: {len(recs)} simulated 64³ crystals ("
             + ", ".join(f"{n} at {b}" for b, n in nb.items() if n) + "), seeds 5,000,000+ (2π–5π) and 5,500,000+ "
             "(under π), outside the evaluation's 2,000,000+; model " + recs[0]["model"] + ". Candidates per crystal: "
             "(b) CNN + ER 400, (b+) CNN + RAAR 200 + ER 400, one cohere-style run (HIO 400 + RAAR 1000 + ER 300, "
             "shrink-wrap every cycle at 0.1 × max with σ 1, twin removal at cycle 2, then one rms-0.25 support "
             "update and 20 ER) and, on the recipe-comparison crystals, one PyNX-style run (same cycles, support "
             "update every 20 cycles, rms threshold 0.25, smoothing 2 → 0.5), both from the autocorrelation with a "
             "random object; the strategy's own two CNN-seeded fallback runs (workers.strategy.fallback_run): "
             "fb_cnn_object from (b+)'s object with the short seeded recipe, fb_cnn_support from (b+)'s support "
             "(dilated) with the full recipe; same free voxels for all (the first two under-π crystals, computed before the "
             "cohere-style recipe was chosen, have the PyNX-style run instead). Success = phase RMSE ≤ 0.5 rad and "
             "IoU ≥ 0.7 after alignment (bench/cnn_eval.py).", ""]
    # recipe comparison: crystals that have both standard runs; cost from the back-to-back CPU timing
    per_cpu = {}  # (bin, style) -> (successes per CPU second, successes, runs)
    both = [r for r in recs if {"std_pynx", "std_cohere"} <= set(r["candidates"])]
    cpu = _timing_cpu(Path(args.out) / TIMING)
    lines += [f"**Fallback recipe, one start each, on the same {len(both)} crystals** (success per second = "
              "successes / "
              "(runs × CPU seconds per run, measured back to back below); wall times in the other columns were taken "
              "under a load that varied 5-15x):", "",
              "| bin | recipe | n | success | CPU s per run | successes per 100 CPU s | median wall s per run |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for b, lo, hi in BINS:
        sel = [r for r in both if lo <= r["phase_range"] < hi]
        for n, style in (("std_pynx", "pynx"), ("std_cohere", "cohere")):
            vs = [r["candidates"][n] for r in sel]
            if not vs:
                continue
            ok = sum(bool(v.get("success")) for v in vs)
            c = cpu.get(style)
            per_cpu[(b, style)] = (ok / (len(vs) * c) if c else None, ok, len(vs))
            per = f"{100 * ok / (len(vs) * c):.2f}" if c else "n/a"
            lines.append(f"| {b} | {n.removeprefix('std_')}-style | {len(vs)} | {ok}/{len(vs)} "
                         f"({100 * ok / len(vs):.0f} %) | {c if c else float('nan'):.1f} | {per} | "
                         f"{np.median([v['seconds'] for v in vs if 'seconds' in v]):.0f} |")
    lines += ["", "Every candidate on every crystal (success / crystals that have it):", ""]
    for b, lo, hi in BINS:
        sel = [r for r in recs if lo <= r["phase_range"] < hi]
        parts = []
        for n in CANDIDATES:
            vs = [r["candidates"][n] for r in sel if n in r["candidates"]]
            if vs:
                parts.append(f"{n} {sum(bool(v.get('success')) for v in vs)}/{len(vs)}")
        if parts:
            lines.append(f"- {b}: " + ", ".join(parts))
    tfile = Path(args.out) / TIMING
    if tfile.exists():
        lines += ["", "Run cost measured back to back (`.venv/bin/python -m bench.calibrate_gate timing`):", ""]
        lines += [f"- {ln}" for ln in tfile.read_text().splitlines() if ln.strip()]
    lines.append("")
    # gate
    evaluated = grid_confusions(recs)
    lines += [f"**Gate thresholds** chosen by grid search at the highest recall, over every candidate of every crystal "
              f"({sum(len(r['candidates']) for r in recs)} candidates), under two precision floors: the issue's "
              f"{TARGET_PRECISION:.0%}, and {STRICT_PRECISION:.0%} (no false 'ok' in the sample: the aim is never "
              f"silently wrong; target recall ≥ {TARGET_RECALL:.0%}); agreement is sought among the other candidates "
              "of the same crystal that pass the single checks:", ""]
    for floor in (TARGET_PRECISION, STRICT_PRECISION):
        _, _, per_mode = choose_thresholds(recs, floor, evaluated)
        lines.append(f"- precision ≥ {floor:.0%}:")
        for agree, best in per_mode.items():
            label = {False: "single-candidate checks only", True: "with agreement (any other candidate)",
                     "independent": "with agreement between independent starts (candidates refined from the CNN's "
                                    "start do not vouch for each other)"}[agree]
            if best is None:
                lines.append(f"  - {label}: no setting reaches it.")
                continue
            _, t, c = best
            lines.append(f"  - {label}: {_limits(t, agree)}: precision {c['precision']:.1%}, recall "
                         f"{c['recall']:.1%} (tp {c['tp']}, fp {c['fp']}, fn {c['fn']}, tn {c['tn']}).")
    choice = shipping_choice(recs, evaluated)
    if choice is None:
        lines.append(f"- the shipping rule (single checks, highest floor in {FLOORS} with recall ≥ "
                     f"{TARGET_RECALL:.0%}): no setting qualifies.")
    else:
        floor, t, c = choice
        lines.append(f"- the shipping rule (single checks, the highest precision floor of "
                     f"{', '.join(f'{f:.0%}' for f in FLOORS)} whose best setting keeps recall ≥ {TARGET_RECALL:.0%}): "
                     f"floor {floor:.0%}: {_limits(t, False)}: precision {c['precision']:.1%}, recall "
                     f"{c['recall']:.1%}.")
    if choice is not None:
        zone = confirm_zone_choice(recs, choice[1])
        if zone is None:
            lines.append("- confirmation zone: no mean_to_max limit gives a strict tier without a wrong 'ok'.")
        else:
            zt, zc, sc = zone
            lines.append(f"- the confirmation zone (rule, written after the held-out sets' silent failures had been "
                         f"seen and after a look at these records, so not blind: the largest mean_to_max limit, "
                         f"on a {ZONE_STEP:g} grid, at which the single checks mark no wrong candidate ok, the other "
                         f"limits as the shipping rule's; above it an independent start must agree, at the largest "
                         f"mismatch limit of {', '.join(f'{m:g}' for m in ZONE_MISMATCHES)} that keeps precision "
                         f"100 %): mean_to_max ≤ {zt.confirm_mean_to_max:g} passes alone (precision "
                         f"{sc['precision']:.1%}, recall {sc['recall']:.1%}); in ({zt.confirm_mean_to_max:g}, "
                         f"{zt.max_mean_to_max:g}] with agreement ≤ {zt.max_mismatch:g}: precision "
                         f"{zc['precision']:.1%}, recall {zc['recall']:.1%} (tp {zc['tp']}, fp {zc['fp']}, "
                         f"fn {zc['fn']}, tn {zc['tn']}).")
    default = GateThresholds()
    c0 = confusion(recs, default)
    lines += ["", f"- the shipped default (physics.quality.GateThresholds: free LLK ≤ {default.max_llk_free:g}, "
              f"obj2_out ≤ {default.max_obj2_out:g} + {default.obj2_out_noise_weight:g} × its photon-noise share, "
              f"mean_to_max ≤ {default.max_mean_to_max:g}, "
              f"ratio [{default.min_support_ratio:g}, "
              f"{default.max_support_ratio:g}], "
              + (f"confirmation zone mean_to_max > {default.confirm_mean_to_max:g} with agreement ≤ "
                 f"{default.max_mismatch:g}, " if default.confirm_mean_to_max is not None else "")
              + f"agreement {'required' if default.require_agreement else 'not required'} elsewhere): "
              f"precision {c0['precision']:.1%}, "
              f"recall {c0['recall']:.1%} (tp {c0['tp']}, fp {c0['fp']}, fn {c0['fn']}, tn {c0['tn']}).",
              "- the thresholds are fitted on these crystals: the figures are in-sample, an optimistic estimate."]
    # replay
    lines += ["", "**The adaptive order replayed on these records** with the shipped default gate and the strategy's "
              "order (b+, then the run from its object, the run from the autocorrelation, the run from its support; "
              "stop at the first 'ok'; "
              "time = sum of the candidates' "
              "run times, alignment not counted; the machine was loaded 5-15x, so times are long: the last column "
              "divides each crystal's time by 20 × its own PyNX-style run (or its cohere-style run / "
              f"{COHERE_OVER_PYNX}, the measured cost ratio, where no PyNX-style run was made), the cost of (c)'s "
              "20-run recipe measured in the same process):", "",
              "| gate | bin | n | success | marked ok | wrong and marked ok | fallback ran | median s | p90 s | "
              "median time / (c) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    from dataclasses import replace

    gates = [("shipped", default)]
    if default.confirm_mean_to_max is not None:
        gates.append(("shipped without the confirmation zone", replace(default, confirm_mean_to_max=None)))
    gates += [(name, g) for name, g in (("until 2026-12-07", GATE_UNTIL_1207),
                                         ("previous (until 2026-12-01)", PREVIOUS_GATE)) if g != default]
    for (gname, gate), (b, lo, hi) in itertools.product(gates, BINS):
        sel = [replay_adaptive(r, gate) for r in recs if lo <= r["phase_range"] < hi]
        if not sel:
            continue
        n = len(sel)
        lines.append(f"| {gname} | {b} | {n} | {sum(s['success'] for s in sel)}/{n} | {sum(s['ok'] for s in sel)} | "
                     f"{sum(s['ok'] and not s['success'] for s in sel)} | {sum(s['fallback'] for s in sel)} | "
                     f"{np.median([s['seconds'] for s in sel]):.1f} | "
                     f"{np.percentile([s['seconds'] for s in sel], 90):.1f} | "
                     f"1/{1 / np.median([s['vs_c'] for s in sel if s['vs_c']]):.0f} |")
    lines += ["", "Decisions and limits:", "",
              "- Photon noise (2026-12-07): the shipped gate judges obj2_out less half its photon-noise share "
              "(physics.quality.photon_noise_fraction; GateThresholds.obj2_out_noise_weight 0.5), chosen on the "
              "wide-condition calibration crystals, where faint patterns put right and wrong candidates alike at "
              "obj2_out 0.06-0.10 (section 'Quality gate on wide-condition calibration crystals'): 0.5, 0.7 and 1.0 "
              "gave the same verdicts on both calibration sets, 0.5 is the most conservative; on these crystals it "
              "changes no verdict. The grid above searches obj2_out as measured, as when the rule was fixed.",
              recipe_line(per_cpu, recs, default),
              "- Shipped gate (physics.quality.GateThresholds): the shipping rule's choice on the support-scored "
              "records (below), its free-LLK limit rounded (same verdicts); the rule was written before it was "
              "applied; plus the confirmation zone "
              "above (mean_to_max above its edge needs an independent start that agrees), added after the two "
              "held-out sets had shown four silent failures at mean_to_max 0.50-0.53. The strategy runs (b+) alone "
              "before the fallback: (b) produced every false 'ok' of the previous calibration and rescued no crystal. "
              "Agreement (`require_agreement=True`, optionally between independent starts) is the more conservative "
              "setting, at the cost of at least one more run per crystal.",
              (f"- {len(recs)} crystals: the run was stopped when its time was up (the command asks for "
               f"{args.n_high} + {args.n_low}; it resumes where it stopped). Thresholds and replay are in-sample."
               if len(recs) < args.n_high + args.n_low else
               f"- {len(recs)} crystals, the set the command asks for: 53 until 2026-12-07, when the run was resumed "
               "to its end (27 added) and the rules, unchanged, were applied again: the shipping rule moved from "
               "the 98 % floor (obj2_out ≤ 0.02) to the 97 % floor (obj2_out ≤ 0.05); the zone's edge and agreement "
               "limit did not move. Thresholds and replay are in-sample."),
              *rule_vs_shipped(recs, choice, default, Path(args.out)),
              "- The gate's autocorrelation bound changed on 2026-12-07 (masked voxels filled; a Poisson noise "
              "floor, which moved the bound of 12 of these crystals, by more than 20 % on the 4 faintest); a resumed "
              "run moves every record's support ratios to today's bound (`rebound`: recorded support size / today's "
              "bound), the runs unchanged. On 2026-12-08 masked voxels came to be extrapolated "
              "(physics.oversampling.fill_compact): these crystals have no mask, so it moved none of them.",
              "- Mismatches between a resumed crystal's new runs (fb_*) and its earlier candidates (cnn_er, std_*) "
              "were not computed (their objects were not kept): on those crystals agreement is sought among the "
              "candidates of the same session only.",
              "- Out of sample: the adaptive method on the evaluation's held-out crystals and on a second held-out "
              "set, section 'Adaptive reconstruction on the held-out crystals' (bench/adaptive_eval.py)."]
    lines.append("")
    return "\n".join(lines)


SUPERSEDED_SUPPORT_SCORED = "superseded_gate_calibration_support-scored.jsonl"


def recipe_line(per_cpu: dict, recs: list, gate) -> str:
    """The fallback recipe's decision line, from the recipe comparison above (2π–5π, where the fallback runs) and the
    adaptive order replayed with the PyNX-style run in the cohere-style run's place, on the crystals with both."""
    hi = BINS[-1][0]
    p, c = per_cpu.get((hi, "pynx")), per_cpu.get((hi, "cohere"))
    if not p or not c or not p[0] or not c[0]:
        return "- Fallback recipe: cohere-style (StrategyOptions.fallback_style); no comparison with CPU costs here."
    both = [r for r in recs if {"std_pynx", "std_cohere"} <= set(r["candidates"])]
    swapped = tuple("std_pynx" if n == "std_cohere" else n for n in REPLAY_ORDER)
    rep = {k: [replay_adaptive(r, gate, order) for r in both] for k, order in (("cohere", REPLAY_ORDER),
                                                                                 ("pynx", swapped))}
    say = {k: (f"{sum(x['success'] for x in v)} right, {sum(x['ok'] for x in v)} ok, "
               f"{sum(x['ok'] and not x['success'] for x in v)} wrong ok, mean "
               f"{np.mean([x['seconds'] for x in v]):.1f} s, p90 {np.percentile([x['seconds'] for x in v], 90):.0f} s")
           for k, v in rep.items()}
    return (f"- Fallback recipe: cohere-style (StrategyOptions.fallback_style). At 2π–5π one start succeeded on {c[1]} "
            f"of {c[2]} crystals against {p[1]} of {p[2]} for the PyNX-style run: {c[0] / p[0]:.2f}x its successes "
            f"per CPU second (the choice was made on the first 10 of these, 8/10 against 1/10, before they were "
            f"recomputed). In the adaptive order (the autocorrelation's run comes third) on these {len(both)} "
            f"crystals: cohere-style {say['cohere']}; PyNX-style in its place {say['pynx']}. "
            + ("By success per CPU second the PyNX-style run is now ahead; switching would change the fallback of "
               "every evaluation (rerun): open." if c[0] < p[0] else ""))


def rule_vs_shipped(recs: list, choice, default, out: Path) -> list[str]:
    """Lines on the shipping rule's choice where it is not the shipped gate: both replayed in the adaptive order, on
    these records and on the wide-condition calibration (the zone kept), so that a refit is judged by what it
    changes per crystal, not per candidate."""
    from dataclasses import replace

    lines = []
    if (out / SUPERSEDED_SUPPORT_SCORED).exists():
        lines.append("- On 2026-12-08 the 80 crystals were recomputed whole (the same seeds and candidates, new "
                     "random starts), scoring IoU on the crystal's shape (physics.shape) as the evaluations have since "
                     "2026-12-07; the rule was applied to the support-scored records (bench/results/"
                     f"{SUPERSEDED_SUPPORT_SCORED}) when the shipped limits were chosen.")
    if choice is None:
        return lines
    t = choice[1]
    rule = replace(default, max_llk_free=t.max_llk_free, max_obj2_out=t.max_obj2_out,
                   max_mean_to_max=t.max_mean_to_max, min_support_ratio=t.min_support_ratio,
                   max_support_ratio=t.max_support_ratio)
    if rule == default:
        return lines
    sets = [("these crystals", recs)]
    wide = list(_jsonl(out / WIDE_FILE).values())
    if wide:
        sets.append(("the wide-condition calibration", wide))
    parts, worse = [], True  # worse: the rule's pick marks no fewer crystals wrongly ok and no more right ones ok
    for name, rs in sets:
        got = {}
        for label, g in (("shipped", default), ("rule", rule)):
            rep = [replay_adaptive(r, g) for r in rs]
            got[label] = (sum(x["ok"] and x["success"] for x in rep), sum(x["ok"] and not x["success"] for x in rep))
        worse &= got["rule"][1] >= got["shipped"][1] and got["rule"][0] <= got["shipped"][0]
        parts.append(f"{name} ({len(rs)}): {got['shipped'][0]} right ok, {got['shipped'][1]} wrong ok, against "
                     f"{got['rule'][0]} right ok, {got['rule'][1]} wrong ok")
    lines.append(f"- Today the rule picks {_limits(t, False)} at the {choice[0]:.0%} floor, not the shipped limits. "
                 "Replayed in the adaptive order with the confirmation zone (per crystal, shipped against the rule's "
                 "pick): " + "; ".join(parts) + ". "
                 + ("Not shipped: it marks no fewer crystals wrongly ok and no more right ones ok; the rule's pick "
                    "moves with the sample (53 crystals: obj2_out ≤ 0.02 at the 98 % floor; 80 support-scored: the "
                    "shipped limits; 80 shape-scored before the PyNX-style run was added on 30 more of them: "
                    "obj2_out ≤ 0.02 at 98 % again), and a refit would need every held-out set replayed under it."
                    if worse else
                    "It would do better on a calibration set: a refit (every held-out set replayed under it) is "
                    "open."))
    return lines


def _conf_text(c: dict) -> str:
    return (f"precision {100 * c['precision']:.1f} %, recall {100 * c['recall']:.1f} % ({c['tp']} right ok, "
            f"{c['fp']} wrong ok, {c['fn']} right uncertain)")


PEAK_BANDS = ((0.0, 1e4), (1e4, 1e5), (1e5, 1e6), (1e6, float("inf")))  # peak photon counts
OVERSAMPLING_BANDS = ((0.0, 2.7), (2.7, 3.5), (3.5, float("inf")))  # mean oversampling: large to small crystals


def params_of(seed: int):
    """The SimParams crystals() gives a calibration seed (either set, either phase-range bin)."""
    wide = WIDE_HIGH_SEED0 <= seed < LOW_SEED0 or seed >= WIDE_LOW_SEED0
    low = seed >= LOW_SEED0
    first = (WIDE_LOW_SEED0 if wide else LOW_SEED0) if low else (WIDE_HIGH_SEED0 if wide else HIGH_SEED0)
    n = seed - first + 1
    return dict(crystals(0 if low else n, n if low else 0, wide))[seed]


def _band_label(lo: float, hi: float, fmt) -> str:
    return f"< {fmt(hi)}" if lo == 0 else (f"{fmt(lo)}–{fmt(hi)}" if np.isfinite(hi) else f"≥ {fmt(lo)}")


def mean_to_max_by_condition(wide: list[dict], paper: list[dict]) -> list[str]:
    """mean_to_max of right and wrong candidates of both calibration sets by the crystal's peak photon count and
    by its mean oversampling (both recomputed from its seed, physics.simulate): whether the amplitude check's
    limit should follow the noise or the crystal's size in voxels."""
    from physics.simulate import simulate_sample

    groups = {"peak counts": (PEAK_BANDS, lambda x: f"1e{round(math.log10(x))}", {}),
              "mean oversampling": (OVERSAMPLING_BANDS, lambda x: f"{x:g}", {})}
    for r in wide + paper:
        sample = simulate_sample(r["seed"], params_of(r["seed"]))
        value = {"peak counts": float(sample["peak_counts"]),
                 "mean oversampling": float(np.mean(sample["oversampling"]))}
        for name, (bands, _, out) in groups.items():
            band = next(b for b in bands if b[0] <= value[name] < b[1])
            for v in r["candidates"].values():
                if "error" not in v:
                    out.setdefault(band, {True: [], False: []})[bool(v["success"])].append(v["mean_to_max"])
    limit = GateThresholds().max_mean_to_max
    lines = ["", f"mean_to_max of the candidates of both calibration sets ({len(wide) + len(paper)} crystals; the "
             f"shipped limit is {limit:g}), by the crystal's peak photon count and by its mean oversampling (the "
             "larger, the smaller the crystal in voxels):", "",
             "| grouped by | band | right candidates | their median | right above the limit | wrong candidates | "
             "their median | wrong at or under the limit |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, (bands, fmt, out) in groups.items():
        for band in bands:
            if band not in out:
                continue
            r, w = np.array(out[band][True]), np.array(out[band][False])
            med = lambda a: f"{np.median(a):.2f}" if len(a) else "–"  # noqa: E731
            pct = lambda m: f"{100 * np.mean(m):.0f} %" if len(m) else "–"  # noqa: E731
            lines.append(f"| {name} | {_band_label(*band, fmt)} | {len(r)} | {med(r)} | {pct(r > limit)} | {len(w)} | "
                         f"{med(w)} | {pct(w <= limit)} |")
    return lines + [""]


def scoring_text(recs: list[dict], label: str) -> str:
    """What the records' success labels were scored on: the crystal's shape (physics.shape, today's criterion) or
    the phasing support (records from before 2026-12-07: a right result on a loose support can count as wrong, so
    their precision is conservative and their recall pessimistic)."""
    n = sum(len([v for v in r["candidates"].values() if "error" not in v]) for r in recs)
    shape = sum(v.get("scored_on") == "shape" for r in recs for v in r["candidates"].values() if "error" not in v)
    if not n:
        return ""
    if shape == n:
        return f"The {label} records' IoU is scored on the crystal's shape (physics.shape), as the evaluations'."
    return (f"The {label} records' IoU is scored on the phasing support in {n - shape} of {n} candidates (recorded "
            "before 2026-12-07; not rerun): a right result on a loose support counts as wrong there.")


def replay_lines(wide: list[dict], paper: list[dict]) -> list[str]:
    """The adaptive order replayed with the shipped gate on both calibration sets: crystals marked ok, wrong ok,
    and right but uncertain (the gate's cost in recall, per crystal rather than per candidate)."""
    out = ["", "The adaptive order replayed on these records with the shipped gate (bench.calibrate_gate."
           "replay_adaptive; per crystal):", ""]
    for label, recs in (("wide", wide), ("paper families", paper)):
        rp = [replay_adaptive(r, GateThresholds()) for r in recs]
        if rp:
            out.append(f"- {label} ({len(rp)} crystals): {sum(x['success'] for x in rp)} right, "
                       f"{sum(x['ok'] for x in rp)} marked ok, {sum(x['ok'] and not x['success'] for x in rp)} "
                       f"wrong and marked ok, {sum(x['success'] and not x['ok'] for x in rp)} right but uncertain.")
    return out + [""]


def amplitude_lines(recs: list[dict], grid: list, label: str) -> list[str]:
    """Where mean_to_max separates right from wrong better: over the phasing support or over the crystal's shape
    (GateThresholds.amplitude_on), compared at each precision floor by the best single-check setting of each."""
    amps = sorted({t.amplitude_on for _, t, _ in grid})
    if len(amps) < 2:
        return [f"- mean_to_max on the crystal's shape against on the support, on {label}: not comparable "
                "(some records have no mean_to_max_shape, recorded from 2026-12-07 on)."]
    parts, shape_wins = [], 0
    for floor in FLOORS:
        best = {}
        for a in amps:
            _, _, per_mode = choose_thresholds(recs, floor, [e for e in grid if e[1].amplitude_on == a])
            best[a] = per_mode[False]
        shape_wins += bool(best["shape"]) and (not best["support"]
                                                or best["shape"][2]["recall"] > best["support"][2]["recall"])
        parts.append(f"{100 * floor:.0f} %: " + ", ".join(
            f"{a} {100 * b[2]['recall']:.1f} %" if b else f"{a} none" for a, b in best.items()))
    return [f"- mean_to_max on the crystal's shape against on the support, on {label}: the best single-check "
            "recall at each precision floor, " + "; ".join(parts) + ". "
            + (f"The shape's value separates better at {shape_wins} of {len(FLOORS)} floors." if shape_wins else
               "The support's value separates better at every floor: mean_to_max stays judged on the support "
               "(GateThresholds.amplitude_on 'support'); the shape takes the slack off right results, but it also "
               "drops the low-amplitude voxels that give wrong ones away (the likely reason).")]


def wide_report(args) -> str:
    """The shipped gate on the wide-condition calibration crystals, beside the paper-family ones, and what the
    shipping rule would choose on the wide crystals alone and on both: measured for the next calibration, not
    shipped (a refit would need every held-out set replayed or rerun under it)."""
    import collections
    from dataclasses import replace

    from bench.common import machine
    from physics.quality import single_checks

    wide = list(_jsonl(Path(args.out) / WIDE_FILE).values())
    paper = list(_jsonl(Path(args.out) / FILE).values())
    if not wide:
        return "No wide-condition calibration results yet."
    shipped = GateThresholds()
    single = replace(shipped, confirm_mean_to_max=None)
    nb = {name: sum(lo <= r["phase_range"] < hi for r in wide) for name, lo, hi in BINS}
    n_c = sum(len([v for v in r["candidates"].values() if "error" not in v]) for r in wide)
    lines = [f"Commands: `nice -n 10 .venv/bin/python -m bench.calibrate_gate run --crystals wide --n-high N "
             f"--n-low M` (resumable), then `.venv/bin/python -m bench.calibrate_gate wide-report`; machine: "
             f"{machine()}, 1 torch thread. Crystals: {len(wide)} simulated 64³ crystals under the wide conditions "
             "of physics.simulate.WIDE (" + ", ".join(f"{n} at {b}" for b, n in nb.items() if n) + "), seeds "
             f"{WIDE_HIGH_SEED0:,}+ and {WIDE_LOW_SEED0:,}+, which no evaluation set draws; the same candidates as the "
             f"shipped calibration (section above), {n_c} in all (a crystal whose data the front end refuses, measured "
             "oversampling ≤ 2 on an axis, has no candidate and no record: the run prints it). Nothing here is "
             "shipped but the photon-noise allowance of obj2_out (GateThresholds.obj2_out_noise_weight 0.5, chosen "
             "on these crystals, section above): the thresholds stay the ones the paper-family calibration chose. "
             + scoring_text(wide, "wide") + " " + scoring_text(paper, "paper-family") + "", "",
             "| crystals | gate | precision, recall (per candidate) |", "|---|---|---|"]
    for label, recs in (("wide", wide), ("paper families", paper)):
        if recs:
            lines.append(f"| {label} ({len(recs)}) | shipped, single checks | {_conf_text(confusion(recs, single))} |")
            lines.append(f"| {label} ({len(recs)}) | shipped, with the confirmation zone | "
                         f"{_conf_text(confusion(recs, shipped))} |")
    lines.append("")
    refused = collections.Counter(reason.split(" ")[0] if not reason.startswith("free") else "free LLK"
                                  for r in wide for v in r["candidates"].values()
                                  if "error" not in v and v["success"] for reason in single_checks(v, single))
    lines.append("- Right wide candidates that the shipped single checks refuse, by check (a candidate can fail "
                 "several): " + (", ".join(f"{k} {n}" for k, n in refused.most_common()) or "none") + ".")
    lines += mean_to_max_by_condition(wide, paper)
    lines += replay_lines(wide, paper)
    for label, recs in (("the wide crystals alone", wide), ("both sets together", wide + paper)):
        grid = grid_confusions(recs, modes=(False,))
        lines += amplitude_lines(recs, grid, label)
        choice = shipping_choice(recs, grid)
        if choice is None:
            _, _, per_mode = choose_thresholds(recs, TARGET_PRECISION, grid)
            best = per_mode[False]
            lines.append(f"- The shipping rule on {label}: no setting keeps recall ≥ 90 % at any floor"
                         + (f"; at precision ≥ 95 % the best reaches {_conf_text(best[2])} with "
                            f"{_limits(best[1], False)}." if best else "; none reaches precision 95 %."))
        else:
            floor, thr, c = choice
            lines.append(f"- The shipping rule on {label}: the {100 * floor:.0f} % floor, {_limits(thr, False)}; "
                         f"in sample {_conf_text(c)}.")
    return "\n".join(lines + [""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "report", "timing", "wide-report"):
        p = sub.add_parser(name)
        p.add_argument("--n-high", type=int, default=60)
        p.add_argument("--n-low", type=int, default=20)
        p.add_argument("--out", default=str(RESULTS), help="results folder (default bench/results)")
        if name in ("run", "timing"):
            p.add_argument("--recipe", default=None, help="standard runs' recipe (default HIO**400,RAAR**1000,ER**300)")
            p.add_argument("--threads", type=int, default=1)
        if name == "run":
            p.add_argument("--crystals", default="paper", choices=("paper", "wide"),
                           help="paper: the paper's families (the shipped calibration, default); wide: the wide "
                                "conditions on seeds 5,200,000+ / 5,700,000+ (file %s; `wide-report`)" % WIDE_FILE)
            p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
            p.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N",
                           help="compute every N-th crystal from the K-th (0-based), to run N processes side by side")
            p.add_argument("--model", default=None, help="weights (default: the shipped model)")
            p.add_argument("--er-cycles", type=int, default=400)
        if name in ("run", "report"):
            p.add_argument("--pynx-high", type=int, default=40,
                           help="run the PyNX-style candidate (recipe comparison only; the fallback is cohere-style) "
                                "on the first N 2π–5π crystals only")
        if name in ("report", "wide-report"):
            p.add_argument("--print", action="store_true", help="print instead of writing docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run(args)
        return 0
    if args.cmd == "timing":
        timing(args)
        return 0
    from bench.common import print_or_write_section

    if args.cmd == "wide-report":
        print_or_write_section(WIDE_SECTION, wide_report(args), args.print)
        return 0
    print_or_write_section(SECTION, report(args), args.print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
