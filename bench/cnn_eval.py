"""The paper's comparison: (a) CNN only, (b) CNN + border-restricted ER, (c) the standard multi-run recipe.

(b+) is our variant of (b): RAAR**200 before the same 400 ER cycles, with the same border-only support
updates (`reconstruct --pre-recipe RAAR**200`); from a weak CNN start, ER alone stagnates.
(b*) replaces the CNN by the true reciprocal phase (a perfect CNN) and runs (b)'s refinement: the upper bound
of (b), which separates what the network misses from what the refinement misses.
adaptive (workers/strategy.py, the default method) runs (b+), judges it by the data-only quality gate and falls
back to standard runs one at a time until one passes; its records also hold the verdict (ok / uncertain), the
number of candidates and whether the fallback ran (bench/adaptive_eval.py reports those per bin).

Held-out simulated crystals (test seeds, never used in training or validation) are reconstructed by each
method; every result is compared with the truth after twin / sub-voxel shift / phase alignment. Results are
appended per crystal to JSON-lines files under bench/results/, so an interrupted run resumes where it stopped,
and (c), which does not depend on the model, is computed once and reused across model versions.
The same free voxels are withheld from (b) and (c), so their free LLKs are comparable.

`run --size 128` (or 128x256x256) runs the same crystals as a detector writes them (physics.detector_sim: that
array size, oversampling 3-6), so the front end (measured oversampling -> crop -> 64³ CNN grid, chosen by physics
in workers.pipeline / workers.strategy) is measured with the network; each result is compared with the truth on
its own crop's grid (physics.detector_sim.truth_on_crop), and records carry the front end's decisions. Those
results go to files named with the size (eval_<method>_<tag>_128.jsonl), and the report checks each against the
64³ file of the same method on the same crystals. There the crop is the front end's choice, so each method draws
its own free voxels on it; (b*) needs the true phase on the CNN grid and runs at 64³ only.

    python -m bench.cnn_eval run --n-high 100 --n-low 30            # compute (resumable)
    python -m bench.cnn_eval run --n-high 8 --n-low 0 --size 128 --methods cnn_er adaptive
    python -m bench.cnn_eval report                                # write the docs/benchmarks.md sections
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import model_tag
from physics.success import SUCCESS, is_success  # the one success criterion

RESULTS = Path(__file__).parent / "results"
SECTION = "CNN + ER against the standard recipe (simulated, held-out crystals)"
REAL = Path(__file__).parents[2] / "shared" / "data" / "aps_34idc_crystal_64" / "ft_crop_64.tif"
STANDARD = "HIO**400,RAAR**1000,ER**300"
LOW_SEED0 = 500_000  # offset of the low-strain test seeds inside the test seed range
FRESH_FIRST = 200  # the second held-out set starts at this index (seeds 2,000,200+ and 2,500,200+; the first set's
# 100 + 30 crystals and the tests' seeds 2,000,100-2,000,105 lie below it)
THIRD_FIRST = 400  # the third held-out set (seeds 2,000,400+ and 2,500,400+): first run after the gate's
# confirmation zone, which was added once the first two sets' silent failures had been seen
WIDE_FIRST = 600  # the wide held-out set (seeds 2,000,600+ and 2,500,600+): the shape and strain families the
# evaluation sets never drew (physics.simulate.EXTRA_SHAPES, EXTRA_FIELDS: dislocations, faults, inclusions, twins...)
# and the wide scan conditions (WIDE: oversampling 2-5, 1e3-1e7 counts, detector gaps, bad pixels, background);
# neither the CNN nor the gate was fitted on them
SET_FIRST = {"held-out": 0, "fresh": FRESH_FIRST, "third": THIRD_FIRST, "wide": WIDE_FIRST}  # first seed's index
SET_LABEL = {"held-out": "", "fresh": " (second held-out set)", "third": " (third held-out set)",
             "wide": " (wide held-out set: unseen shape and strain families, wide scan conditions)"}
BINS = (("< π", 0.0, math.pi), ("π–2π", math.pi, 2 * math.pi), ("2π–5π", 2 * math.pi, 5 * math.pi + 1e-3))
PRE_RECIPE = "RAAR**200"  # (b+): cycles run from the CNN object before the ER refinement
CNN_METHODS = ("cnn", "cnn_er", "cnn_raar_er")
TIMING = "timing_same_load.txt"  # lines written by `timing`
METHODS = (*CNN_METHODS, "oracle_er", "standard", "adaptive")
SIZE_SECTION = "Front end on larger simulated patterns (128³, 128×256×256 at oversampling 3–6)"
DETECTOR_OVERSAMPLING = (3.0, 6.0)  # the per-axis oversampling range of the detector-sized patterns
_SIZE_SUFFIX = re.compile(r"_(\d+(?:x\d+x\d+)?)$")  # eval_<method>_<tag>_<size>.jsonl; none for 64³


def parse_size(text: str) -> tuple[int, int, int]:
    """The pattern shape of `--size`: "64" (the CNN's own grid), "128" (cubic) or "128x256x256" (per axis)."""
    try:
        shape = tuple(int(v) for v in str(text).split("x"))
    except ValueError:
        shape = ()
    if len(shape) == 1:
        shape = shape * 3
    if len(shape) != 3 or min(shape) < 64:
        from physics.errors import InputError

        raise InputError(f"--size {text!r}: expected N or AxBxC with every size >= 64, e.g. 128 or 128x256x256")
    return shape


def size_of(path: Path) -> str:
    """The pattern size a results file holds ("64" for the files without a size suffix)."""
    m = _SIZE_SUFFIX.search(path.stem)
    return m.group(1) if m else "64"


def sample_for(seed: int, params, size: str = "64") -> dict:
    """The held-out crystal of `seed`: simulate_sample's 64³ pattern, or the same crystal as a detector writes it
    at `size` (physics.detector_sim.detector_sample, oversampling DETECTOR_OVERSAMPLING)."""
    from physics.simulate import simulate_sample

    shape = parse_size(size)
    if shape == (64, 64, 64):
        return simulate_sample(seed, params)
    from physics.detector_sim import detector_sample

    return detector_sample(seed, shape, DETECTOR_OVERSAMPLING, params)


class TruePhase:
    """A perfect 'CNN' for one simulated crystal: predicts its true reciprocal phase (64³ inputs are not cropped)."""

    def __init__(self, sample: dict):
        self.phase = sample["phase"]

    def predict_phase(self, i64: np.ndarray) -> np.ndarray:
        if i64.shape != self.phase.shape:
            raise ValueError(f"the true phase is {self.phase.shape}, the CNN input {i64.shape}")
        return self.phase


def set_params(crystals: str = "held-out"):
    """The SimParams a held-out set draws from: the paper's families (SimParams()) except for the wide set."""
    from physics.simulate import WIDE, SimParams

    return WIDE if crystals == "wide" else SimParams()


def test_crystals(n_high: int, n_low: int, first: int = 0, base=None):
    """(seed, SimParams) of the held-out set: n_high with the training range 2π-5π, n_low under π; first: the
    index of the first seed (FRESH_FIRST: the second held-out set, kept unseen until a change is final); base: the
    SimParams of the set (set_params; default the paper's families)."""
    from dataclasses import replace

    from models.data import TEST_SEED0
    from physics.simulate import SimParams

    base = base or SimParams()
    high = [(TEST_SEED0 + first + i, replace(base, phase_range=(2 * math.pi, 5 * math.pi))) for i in range(n_high)]
    low = [(TEST_SEED0 + LOW_SEED0 + first + i, replace(base, phase_range=(0.2, math.pi))) for i in range(n_low)]
    # interleaved (about n_high/n_low high-strain crystals per low-strain one), so partial runs cover both sets
    out, step = [], max(1, round(n_high / max(n_low, 1)))
    while high or low:
        out += high[:step] + low[:1]
        high, low = high[step:], low[1:]
    return out


def _jsonl(path: Path) -> dict:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["seed"]] = rec
    return out


def _append(path: Path, rec: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _truth_metrics(obj, support, sample, frontend=None) -> dict:
    """Truth metrics of a result on its own grid: the sample's, or the front end's crop of a larger pattern. The
    IoU is the crystal shape's (physics.metrics.score_result; `iou_support` the phasing support's, which rows
    without `scored_on` were scored with)."""
    from physics.metrics import score_result

    truth, truth_support = sample["object"], sample["support"]
    if np.shape(obj) != np.shape(truth):
        if frontend is None:
            raise ValueError(f"result {np.shape(obj)} and truth {np.shape(truth)} differ and no crop is known")
        from physics.detector_sim import truth_on_crop

        truth, truth_support = truth_on_crop(sample, frontend.crop_offsets, frontend.crop_shape)
    m = score_result(obj, support, truth, truth_support=truth_support)
    return {k: m[k] for k in ("phase_rmse", "phase_rmse_weighted", "iou", "iou_support", "volume_ratio",
                              "complex_error", "twin", "scored_on")}


def free_mask_for(sample: dict, seed: int) -> np.ndarray:
    """The free voxels of a 64³ crystal, shared by every method; None for a larger pattern, whose crop is the
    front end's choice (each method then draws its own on that crop)."""
    from physics.phasing import free_pixel_mask

    if sample["intensity"].shape != (64, 64, 64):
        return None
    return free_pixel_mask(sample["intensity"].shape, mask=sample["mask"], seed=seed)


def method_options(method: str, er_cycles: int | None = None):
    """The reconstruction options of a CNN method: the schema's defaults (the same as a default REST job or CLI
    run), with (a) no refinement and (b+) PRE_RECIPE before the ER cycles."""
    from contract.options import DEFAULTS, ReconOptions

    cycles = DEFAULTS.er_cycles if er_cycles is None else er_cycles
    if method == "cnn":
        return ReconOptions(er_cycles=0)
    if method in ("cnn_er", "oracle_er"):
        return ReconOptions(er_cycles=cycles)
    if method == "cnn_raar_er":
        return ReconOptions(er_cycles=cycles, pre_recipe=PRE_RECIPE)
    raise ValueError(f"{method!r} is not a CNN method ({', '.join(CNN_METHODS)}, oracle_er)")


def run_cnn(sample: dict, seed: int, model, options) -> dict:
    """(a), (b), (b+) or (b*) on one crystal, with that method's options (method_options)."""
    from workers.pipeline import reconstruct

    t = time.perf_counter()
    r = reconstruct(sample["intensity"], sample["mask"], model.predict_phase, options,
                    free_mask=free_mask_for(sample, seed))
    wall = time.perf_counter() - t
    rec = {**_truth_metrics(r.obj, r.support, sample, r.frontend), "llk": r.llk.get("llk_poisson"),
           "llk_free": r.llk.get("llk_poisson_free"), "r_factor": r.llk.get("r_factor"), "wall_s": wall,
           "timings": r.timings, "recipe": r.recipe, "frontend": r.frontend.metadata()}
    if r.phase_cnn.shape == sample["phase"].shape:  # the network's own figure, beside the WCA loss
        from physics.coherence import phase_coherence

        rec["coherence"] = phase_coherence(r.phase_cnn, sample["phase"], intensity=r.intensity_cnn)
    return rec


def run_standard(sample: dict, seed: int, nb_run: int, nb_keep: int, recipe: str) -> dict:
    """(c) nb_run random starts of the recipe, best nb_keep by free LLK, first mode; on a larger pattern, on the
    front end's crop (workers.strategy.standard)."""
    from physics.metrics import data_metrics

    if sample["intensity"].shape != (64, 64, 64):
        from workers.strategy import StrategyOptions

        opts = StrategyOptions(nb_run=nb_run, nb_keep=nb_keep, standard_recipe=recipe)
        return run_strategy(sample, seed, None, "standard", opts)
    from physics.phasing import PhaseConfig, phase_runs

    free = free_mask_for(sample, seed)
    t = time.perf_counter()
    res = phase_runs(sample["intensity"], mask=sample["mask"],
                     config=PhaseConfig(recipe=recipe, nb_run=nb_run, nb_keep=nb_keep, seed=seed), free_mask=free)
    wall = time.perf_counter() - t
    d = data_metrics(res.obj, sample["intensity"], mask=sample["mask"], free_mask=free, support=res.support)
    return {**_truth_metrics(res.obj, res.support, sample), "llk": d.get("llk_poisson"),
            "llk_free": d.get("llk_poisson_free"), "r_factor": d.get("r_factor"), "wall_s": wall,
            "first_mode_weight": res.first_mode_weight, "nb_kept": len(res.kept)}


def run_strategy(sample: dict, seed: int, model, method: str = "adaptive", opts=None) -> dict:
    """One gated strategy of workers/strategy.py (adaptive by default) on one crystal: the truth metrics, as for
    the other methods, plus its confidence record (verdict, winner, candidates, fallback, gate values)."""
    from workers.strategy import StrategyOptions, run_method

    t, cpu = time.perf_counter(), time.process_time()
    res = run_method(method, sample["intensity"], sample["mask"], model.predict_phase if model else None,
                     opts or StrategyOptions(), free_mask=free_mask_for(sample, seed))
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    c = res.confidence
    fe = res.result.frontend
    return {**_truth_metrics(res.result.obj, res.result.support, sample, fe),
            **({"frontend": fe.metadata()} if fe is not None else {}),
            "llk": res.result.llk.get("llk_poisson"), "llk_free": res.result.llk.get("llk_poisson_free"),
            "r_factor": res.result.llk.get("r_factor"), "wall_s": wall, "cpu_s": cpu, "method": method,
            "status": c["status"], "winner": c["winner"], "nb_candidates": c["nb_candidates"],
            "fallback_ran": c["fallback_ran"], "budget_exhausted": c["budget_exhausted"], "gate": c["gate"],
            "thresholds": c["thresholds"],
            "candidates": [{k: v for k, v in x.items() if k != "reasons"} for x in res.candidates]}


SCORED_ON = "shape"  # what a row's IoU measures today (physics.metrics.score_result); older rows: the support


def scored_today(rec: dict) -> bool:
    """Whether a row's IoU was scored as today (on the crystal's shape); an older row, scored on the phasing
    support, is recomputed on resume."""
    return rec.get("scored_on") == SCORED_ON


def scoring_note(recs) -> str:
    """One line saying what the rows' IoU was scored on, when some still carry the phasing support's."""
    recs = list(recs)
    old = sum(not scored_today(r) for r in recs)
    if not old:
        return ""
    if old == len(recs):
        return (f"IoU scored on the phasing support in all {old} rows (measured before 2026-12-07 and not rerun "
                "since), not on the crystal's shape (physics.shape).")
    return (f"IoU scored on the phasing support in {old} of {len(recs)} rows (measured before 2026-12-07 and not "
            "rerun since); the others on the crystal's shape (physics.shape).")


def row_truncated(rec: dict) -> bool:
    """Whether a row's pattern was reported truncated by the front end (older rows: from its warning text)."""
    fe = rec.get("frontend") or {}
    return any(fe["truncated"]) if "truncated" in fe else any("truncated" in w for w in fe.get("warnings", ()))


RECORDED_BEFORE = {"amplitude_on": "support", "obj2_out_noise_weight": 0.0}  # limits added to GateThresholds later:
# what a record without them ran under (until 2026-12-07 mean_to_max on the phasing support, obj2_out as measured)


def verdict_stands(rec: dict, thr=None) -> bool:
    """Whether a recorded gated result (run_strategy's record) is what today's gate would produce, so a resumed
    run keeps it: true when its candidates, replayed in run order with single checks only, stop at the same
    one, i.e. every candidate before the last fails them, and the last passes below the confirmation zone
    (recorded ok) or fails them too (recorded uncertain, budget spent). Anything that would need an agreement
    not recorded is recomputed. The limits are those of the record's pattern (GateThresholds.for_pattern: a pattern
    the front end reports truncated needs an agreeing independent start); a record that carries the limits it ran
    under stands when they are today's (its confirmed agreements included), and otherwise is replayed as above."""
    from physics.quality import GateThresholds, single_checks

    thr = (thr or GateThresholds()).for_pattern(row_truncated(rec))  # the strategy's own rule (workers.strategy)
    if rec.get("thresholds") is not None:
        ran = {**RECORDED_BEFORE, **rec["thresholds"]}
        if ran == thr.as_dict():
            return True  # recorded under today's limits
        if ran == {**thr.as_dict(), "obj2_out_noise_weight": ran["obj2_out_noise_weight"]} and all(
                c.get("obj2_out_noise") is not None for c in rec.get("candidates") or ()):
            # today's limits but for the photon-noise share of obj2_out: the same run when no candidate's single
            # checks change with it (then every agreement sought is the same too)
            before = GateThresholds(**ran)
            return all(bool(single_checks(c, before)) == bool(single_checks(c, thr)) for c in rec["candidates"])
    cands = rec.get("candidates") or []
    if not cands or thr.require_agreement:
        return False
    if any(not single_checks(c, thr) for c in cands[:-1]):
        return False
    last = cands[-1]
    passes = not single_checks(last, thr)
    if rec.get("status") == "ok":
        return passes and not thr.in_confirm_zone(last) and len(cands) == rec.get("nb_candidates", len(cands))
    if passes:
        return False
    return rec.get("method") != "adaptive" or bool(rec.get("budget_exhausted"))  # adaptive stops only when spent


def on_bound(values: dict, ac: int) -> bool:
    """Whether gate values (a candidate's, or a record's gate) carry a support ratio measured against the
    autocorrelation bound `ac`: the bound they were divided by is support_size / support_ratio."""
    return bool(values.get("support_ratio")) and abs(ac - values["support_size"] / values["support_ratio"]) < 0.5


def rebound_row(rec: dict, crop) -> dict | None:
    """A gated row with its support ratios against today's autocorrelation bound of its crop (crop: crop_for_cnn's
    intensity, mask, offsets and FrontEnd; workers.strategy.autocorrelation_bound) and its candidates' photon-noise
    share of obj2_out (workers.strategy.photon_noise, added to the gate on 2026-12-07), or None when the row has
    both already (or has no candidates). physics.quality changed the bound on 2026-12-07 (masked
    voxels filled, a Poisson noise floor) and on 2026-12-08 (masked voxels extrapolated,
    physics.oversampling.fill_compact); the runs do not depend on it, only the verdicts, so the returned row
    stands when verdict_stands, replaying today's gate on it, says so (it carries no thresholds for that check)."""
    import copy

    from physics.quality import obj2_out_noise
    from workers.strategy import autocorrelation_bound, photon_noise

    c = next((c for c in rec.get("candidates") or () if c.get("support_ratio") and c.get("support_size")), None)
    if c is None:
        return None
    ac = autocorrelation_bound(crop[0], crop[1], crop[3])
    same_bound = on_bound(c, ac)
    if same_bound and all("obj2_out_noise" in v for v in rec["candidates"] if v.get("support_size")):
        return None
    noise = photon_noise(crop[0], crop[1], crop[3])
    new = copy.deepcopy(rec)
    for v in [*new["candidates"], new.get("gate") or {}]:
        if v.get("support_size") is not None:
            v["support_ratio"] = v["support_size"] / max(ac, 1)
            v["obj2_out_noise"] = obj2_out_noise(noise, v["support_size"], crop[0].size)
    if not same_bound:
        new.pop("thresholds", None)  # on its own bound it kept the limits it ran under (verdict_stands)
    return new | {"ac_size": ac, "rebound": "bound" if not same_bound else "noise"}


def resumed_row(rec: dict, crop, thr=None) -> tuple[bool, dict | None]:
    """(stands, row to append) for a recorded gated row on resume: it stands when today's gate would stop at the
    same candidate on today's bound (verdict_stands after rebound_row); a rebounded row that stands is appended,
    with the limits it was judged under, so that the next resume takes it as it is."""
    from physics.quality import GateThresholds

    new = rebound_row(rec, crop)
    if new is None:
        return verdict_stands(rec, thr), None
    if not verdict_stands(new, thr):
        return False, None
    return True, new | {"thresholds": (thr or GateThresholds()).for_pattern(row_truncated(rec)).as_dict()}


FRONTEND_DECISIONS = ("crop_shape", "crop_offsets", "cnn_binning", "cnn_resampled", "refine_binning")


def set_prefix(crystals: str) -> str:
    """The results files' prefix of a held-out set: eval_ for the evaluation's, <set>_ for the later ones."""
    return "eval_" if crystals == "held-out" else f"{crystals}_"


def frontend_decisions(meta: dict | None) -> tuple | None:
    """What the front end decided for a pattern (crop, CNN grid, refinement grid), from its metadata: two records
    with the same decisions ran on the same data; None when a record has none."""
    if not meta:
        return None
    return tuple(tuple(meta.get(k) or ()) for k in FRONTEND_DECISIONS)


def run(args) -> None:
    """Compute every missing (crystal, method) result, and at sizes other than 64 every one whose front-end
    decisions differ from today's (recomputed, appended: the report reads the last row); append as it goes."""
    import torch

    from workers.pipeline import crop_for_cnn

    from models.predict import load_model
    from physics.errors import InputError

    shape = parse_size(args.size)
    size = "64" if shape == (64, 64, 64) else (str(shape[0]) if len(set(shape)) == 1 else "x".join(map(str, shape)))
    if size == "64" and args.crystals in ("fresh", "third"):
        raise InputError(f"--crystals {args.crystals} runs at a --size other than 64 here; the later held-out sets "
                         "at 64³ are bench.adaptive_eval's (--crystals fresh|third)")
    methods = list(METHODS if args.methods is None else args.methods)
    if size != "64" and "oracle_er" in methods:
        if args.methods is not None:
            raise InputError("oracle_er needs the true phase on the CNN's 64³ grid: it runs at --size 64 only")
        methods.remove("oracle_er")
    torch.set_num_threads(args.threads)
    model = load_model(args.model) if {*CNN_METHODS, "adaptive"} & set(methods) else None
    tag = model_tag(model) if model else ""
    std_tag = f"standard-{args.nb_run}x{args.nb_keep}-{STANDARD if args.recipe is None else args.recipe}"
    sfx = "" if size == "64" else f"_{size}"
    files = {"cnn": f"cnn_{tag}", "cnn_er": f"cnn_er_{tag}", "cnn_raar_er": f"cnn_raar_er_{tag}",
             "oracle_er": "oracle_er", "standard": std_tag.replace('*', '').replace(',', '_'),
             "adaptive": f"adaptive_{tag}"}
    files = {m: RESULTS / f"{set_prefix(args.crystals)}{stem}{sfx}.jsonl" for m, stem in files.items()}
    done = {m: _jsonl(files[m]) for m in methods}
    crystals = test_crystals(args.n_high, args.n_low, SET_FIRST[args.crystals], set_params(args.crystals))
    k, n = args.shard
    crystals = crystals[k::n]  # shard k of n: several processes split the crystals (appends are line-atomic)
    from tqdm import tqdm

    for seed, params in tqdm(crystals, desc="crystals", unit="crystal"):
        todo = [m for m in methods if seed not in done[m] or not scored_today(done[m][seed])
                or (m == "adaptive" and not verdict_stands(done[m][seed]))]
        gated = "adaptive" in methods and "adaptive" not in todo
        if not todo and size == "64" and not gated:  # a 64³ pattern is used as it is: no front-end decision to check
            continue
        sample = sample_for(seed, params, size)
        crop = crop_for_cnn(sample["intensity"], sample["mask"], predict=model.predict_phase if model else None)
        fe = crop[3].metadata()
        if gated:  # measured against another autocorrelation bound: kept when today's gate stops at the same run
            stands, row = resumed_row(done["adaptive"][seed], crop)
            if row is not None:
                _append(files["adaptive"], row)
                done["adaptive"][seed] = row
            elif not stands:
                todo.append("adaptive")
        if size != "64":  # a row stands only when today's front end decides the same crop and CNN grid for it,
            # and a gated row only when today's gate, with today's front end (a truncated pattern), would stop there
            todo += [m for m in methods if m not in todo and (
                frontend_decisions(done[m][seed].get("frontend")) != frontend_decisions(fe)
                or (m == "adaptive" and not verdict_stands({**done[m][seed], "frontend": fe})))]
        if not todo:
            continue
        base = {"seed": seed, "phase_range": float(sample["phase_range"]), "shape": str(sample["shape_kind"]),
                "field": str(sample["field_kind"])}
        if size != "64":
            base |= {"size": size, "true_oversampling": [float(v) for v in sample["oversampling"]]}
        for m in todo:
            if m in CNN_METHODS:
                rec = run_cnn(sample, seed, model, method_options(m, args.refine))
            elif m == "oracle_er":
                rec = run_cnn(sample, seed, TruePhase(sample), method_options(m, args.refine))
            elif m == "adaptive":
                rec = run_strategy(sample, seed, model)
            else:
                rec = run_standard(sample, seed, args.nb_run, args.nb_keep, args.recipe or STANDARD)
            _append(files[m], {**base, **rec, "model": tag if m in (*CNN_METHODS, "adaptive") else None})


def _success(rec: dict) -> bool:
    """The issue's success criterion for one reconstruction: phase RMSE and support IoU both within bounds."""
    return is_success(rec)


def _bin_rows(recs: list[dict]) -> list[tuple]:
    rows = []
    for name, lo, hi in BINS:
        sel = [r for r in recs if lo <= r["phase_range"] < hi]
        if not sel:
            continue
        ok = [_success(r) for r in sel]
        def med(k):
            vals = [r[k] for r in sel if r.get(k) is not None]
            return float(np.median(vals)) if vals else float("nan")  # e.g. no free LLK in converted records
        coh = [r["coherence"] for r in sel if r.get("coherence") is not None]
        rows.append((name, len(sel), 100 * np.mean(ok), med("phase_rmse"), med("iou"), med("llk_free"),
                     med("wall_s"), float(np.median(coh)) if coh else None))
    return rows


def report(args) -> str:
    """Markdown tables from whatever has been computed (counts are stated, nothing is extrapolated)."""
    from bench.common import machine

    lines = [f"Command: `.venv/bin/python -m bench.cnn_eval report` over results computed by "
             "`.venv/bin/python -m bench.cnn_eval run ...` (the run's options are in each file name); "
             f"machine: {machine()}.", "",
             f"Success = phase RMSE ≤ {SUCCESS['phase_rmse']} rad and shape IoU ≥ {SUCCESS['iou']} after "
             "twin / sub-voxel shift / global-phase alignment (the IoU of the crystal's shape the product reports, "
             "physics.shape; rows measured before 2026-12-07 were scored on the phasing support, and each table says "
             "how many); medians per bin; free LLK on the same withheld "
             "voxels for every method. CNN-only LLKs are ~0 by construction (its object is the inverse FFT of the "
             "measured modulus itself, with no support imposed), so compare CNN-only on the truth metrics only. "
             "The CNN phase coherence (physics/coherence.py) is the shift- and twin-blind weighted coherence of the "
             "network's reciprocal phase with the truth: 1 perfect, about 0.6 for a smooth 1 rad rms error, about "
             "0.05-0.08 for a constant phase; it is recorded wherever the network ran on the 64³ truth grid.",
             ""]
    for f in sorted(f for f in RESULTS.glob("eval_*.jsonl") if size_of(f) == "64"):
        recs = list(_jsonl(f).values())
        if not recs:
            continue
        lines += [f"**{f.stem.removeprefix('eval_')}** ({len(recs)} crystals)", "",
                  "| phase-range bin | n | success % | median phase RMSE (rad) | median IoU | median free LLK "
                  "| median wall s | median CNN phase coherence |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {b} | {n} | {s:.0f} | {p:.3f} | {i:.3f} | {llk:.3g} | {w:.2f} | "
                  + ("—" if coh is None else f"{coh:.3f}") + " |"
                  for b, n, s, p, i, llk, w, coh in _bin_rows(recs)]
        lines += [note, ""] if (note := scoring_note(recs)) else [""]
    from models.predict import DEFAULT_WEIGHTS, file_sha256

    shipped = file_sha256(DEFAULT_WEIGHTS)[:8]
    lines += [f"The shipped model is `{DEFAULT_WEIGHTS.name}` (sha256 {shipped}...); tables of earlier models are kept "
              "for comparison.", ""]
    lines += target_lines(shipped)
    if (RESULTS / TIMING).exists():
        lines += ["**Wall time under the same load** (`.venv/bin/python -m bench.cnn_eval timing --n 2 --shard K/2`, "
                  "two processes at once, one per core, as the (c) column above was computed; the (b) and (b+) columns "
                  "come from other runs, at other machine loads, so their ratios to (c) above are only indicative):",
                  ""]
        lines += [f"- {ln}" for ln in (RESULTS / TIMING).read_text().splitlines() if ln.strip()]
        lines.append("")
    lines += ["Where the shipped model misses a target, models/weights/MODEL_CARD.md (\"Closing the gap\", written by "
              "`bench/model_card.py` from the model file and these results) says by how much and what would close it.",
              ""]
    return "\n".join(lines)


def _files64(pattern: str) -> list[Path]:
    """The 64³ results files matching a glob pattern (sorted), without the larger sizes' files."""
    return sorted(f for f in RESULTS.glob(pattern) if size_of(f) == "64")


def size_report(model_tag: str | None = None) -> str:
    """The larger sizes' section: per size and method, the success table on the crystals run, and the target
    line against the 64³ results of the same method on the same crystals (within 10 points)."""
    from bench.common import machine

    prefixes = {set_prefix(c): c for c in SET_FIRST}
    files = sorted((f for p in prefixes for f in RESULTS.glob(f"{p}*.jsonl") if size_of(f) != "64"
                    and (model_tag is None or model_tag in f.stem or "_standard-" in f"_{f.stem}")),
                   key=lambda f: (parse_size(size_of(f)), not f.stem.startswith("eval_"), f.stem))
    rows, targets = [], []
    for f in files:
        size, recs = size_of(f), _jsonl(f)
        ref_file = f.with_name(f.stem.removesuffix(f"_{size}") + ".jsonl")
        ref = _jsonl(ref_file)
        prefix = next(p for p in prefixes if f.stem.startswith(p))
        name = f.stem.removeprefix(prefix).removesuffix(f"_{size}") + SET_LABEL[prefixes[prefix]]
        if any(r.get("source") for r in recs.values()):
            name += " †"  # records converted from an earlier harness (bench/frontend_eval.py)
        crops = [r["frontend"]["crop_shape"] for r in recs.values() if r.get("frontend")]
        binned = sum(max(r["frontend"]["cnn_binning"]) > 1 or any(r["frontend"]["cnn_resampled"])
                     for r in recs.values() if r.get("frontend"))
        med = lambda k, rs: float(np.median([r[k] for r in rs]))  # noqa: E731
        rs = list(recs.values())
        rows.append(f"| {size} | {name} | {len(rs)} | {100 * np.mean([_success(r) for r in rs]):.0f} | "
                    f"{med('phase_rmse', rs):.2f} | {med('iou', rs):.2f} | {med('wall_s', rs):.0f} | "
                    f"{binned}/{len(crops)} | " + (", ".join("×".join(map(str, c)) for c in crops[:3])
                                                   + (", ..." if len(crops) > 3 else ""))
                    + f" | {sum(scored_today(r) for r in rs)}/{len(rs)} |")
        seeds = [s for s in recs if s in ref]
        if not seeds:
            targets.append(f"- size {size}, {name}: no 64³ result on the same crystals ({ref_file.name}): not checked.")
            continue
        sx = 100 * np.mean([_success(recs[s]) for s in seeds])
        sy = 100 * np.mean([_success(ref[s]) for s in seeds])
        only_big = [s for s in seeds if _success(recs[s]) and not _success(ref[s])]
        only_64 = [s for s in seeds if _success(ref[s]) and not _success(recs[s])]
        targets.append(f"- size {size} vs 64³ on the same crystals, {name} ({len(seeds)} crystals, one is "
                       f"{100 / len(seeds):.1f} points): success {sx:.0f} % vs {sy:.0f} %, within 10 points: "
                       f"**{'met' if sx >= sy - 10 else 'missed'}** (only at {size}: "
                       f"{', '.join(map(str, only_big)) or 'none'}; only at 64³: {', '.join(map(str, only_64)) or 'none'}).")
    head = ("Held-out crystals (bench.cnn_eval test seeds) as a detector writes them (physics.detector_sim: the "
            f"size's array, per-axis oversampling {DETECTOR_OVERSAMPLING[0]:g}–{DETECTOR_OVERSAMPLING[1]:g}; "
            "128×256×256 is the centred crop of the 256³ pattern, a short rocking curve), through the real front "
            "end (measured oversampling -> crop -> 64³ CNN grid by binning or Fourier resampling; "
            "workers.pipeline.reconstruct, workers.strategy), each method as in the 64³ section above. Success: "
            f"phase RMSE ≤ {SUCCESS['phase_rmse']} rad and IoU ≥ {SUCCESS['iou']} against the truth on "
            "the crop's grid (physics.detector_sim.truth_on_crop); the IoU is the crystal shape's (physics.shape) in "
            "rows measured since 2026-12-07, the phasing support's before (last column). Counts are the crystals actually run; the "
            "target compares each with the 64³ results of the same method on the same crystals "
            "(met: at most 10 points below).\n\n"
            f"Command: `.venv/bin/python -m bench.cnn_eval run --size SIZE ...`, then `... report`; machine at "
            f"report time: {machine()}. Per-crystal lines (with the front end's decisions: crop, binning, "
            "resampling, measured oversampling per axis) in bench/results/eval_<method>_<tag>_<size>.jsonl. A rerun "
            "recomputes every row whose front-end decisions (crop, CNN grid, refinement grid) differ from what the "
            "front end decides today (bench.cnn_eval.frontend_decisions), e.g. after a change of the oversampling "
            "estimate, and every adaptive row whose verdict today's gate would not reproduce with today's front end "
            "(bench.cnn_eval.verdict_stands; on a pattern reported truncated, an 'ok' needs an independent start "
            "that agrees); the earlier rows stay in the file and the table reads the last row of each crystal.\n\n")
    table = ["| size | method | crystals | success % | median phase RMSE (rad) | median IoU | median wall s "
             "| CNN input binned or resampled | crops | IoU on the shape |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    if not rows:
        return head + "No larger-size results yet."
    note = ("\n\n† Records computed by the former bench/frontend_eval.py (commit 985b714: the same crystals, "
            "front end, model and truth comparison, without free voxels; its standard runs: one run of "
            f"{STANDARD}), converted to these files; each record names its source."
            if any("†" in r for r in rows) else "")
    return head + "\n".join(table + rows) + "\n\n" + "\n".join(targets) + note


def target_lines(model_tag: str | None = None) -> list[str]:
    """The issue's targets, checked on the crystals that both (b) and (c) have (nothing extrapolated);
    the same figures for our variant (b+), where it has been run."""
    std_files = _files64("eval_standard-*.jsonl")
    std_files.sort(key=lambda f: len(_jsonl(f)))  # (c) is the standard file with the most crystals
    out = []
    for method, label in (("cnn_er", "(b)"), ("cnn_raar_er", "(b+)")):
        files = _files64(f"eval_{method}_*.jsonl")
        if model_tag:
            files = [f for f in files if model_tag in f.stem]
        if not files or not std_files:
            if method == "cnn_er":
                return ["Targets: not checked (need both the CNN + ER and the standard-recipe results)."]
            continue
        out += _method_against_standard(_jsonl(files[-1]), _jsonl(std_files[-1]), label, files[-1], std_files[-1])
    ad_files = _files64("eval_adaptive_*.jsonl")
    if model_tag:
        ad_files = [f for f in ad_files if model_tag in f.stem]
    if ad_files and std_files:
        out += adaptive_target_lines(_jsonl(ad_files[-1]), _jsonl(std_files[-1]), ad_files[-1], std_files[-1])
    oracle = _jsonl(RESULTS / "eval_oracle_er.jsonl")
    if oracle:
        out += ["**Upper bound (b\\*)**: (b)'s refinement started from the true reciprocal phase (a perfect CNN):", ""]
        out += [f"- {name} ({n} crystals): success {succ:.0f} %, median phase RMSE {rmse:.3f} rad."
                for name, n, succ, rmse, *_ in _bin_rows(list(oracle.values()))]
        out.append("")
    return out


def _method_against_standard(b_all: dict, c_all: dict, label: str, b_file: Path, c_file: Path) -> list[str]:
    """Target lines for one CNN method (label "(b)" or "(b+)") against (c), on the crystals both have."""
    title = "Targets" if label == "(b)" else "Our variant (b+) against the same targets"
    out = [f"**{title}** ({b_file.stem.removeprefix('eval_')} against {c_file.stem.removeprefix('eval_')}, "
           "on the crystals both have):", ""]
    for name, lo, hi in BINS:
        seeds = [s for s, r in b_all.items() if s in c_all and lo <= r["phase_range"] < hi]
        if not seeds:
            continue
        b, c = [b_all[s] for s in seeds], [c_all[s] for s in seeds]
        ok = _success
        sb, sc = 100 * np.mean([ok(r) for r in b]), 100 * np.mean([ok(r) for r in c])
        rb, rc = np.median([r["phase_rmse"] for r in b]), np.median([r["phase_rmse"] for r in c])
        wb, wc = np.median([r["wall_s"] for r in b]), np.median([r["wall_s"] for r in c])
        both = sum(ok(x) and ok(y) for x, y in zip(b, c))
        only_b = sum(ok(x) and not ok(y) for x, y in zip(b, c))
        only_c = sum(ok(y) and not ok(x) for x, y in zip(b, c))
        out.append(f"- {name} ({len(seeds)} crystals): {label} succeeds on {sb:.0f} %, (c) on {sc:.0f} % "
                   f"(both {both}, only {label} {only_b}, only (c) {only_c}); median phase RMSE {rb:.3f} vs "
                   f"{rc:.3f} rad; median wall time {wb:.2f} s vs {wc:.1f} s per crystal, (c)/{label} = {wc / wb:.0f}x.")
        if lo >= 2 * math.pi:
            out.append(f"  - {label} ≥ 90 % on 2π–5π: **{'met' if sb >= 90 else 'missed'}** ({sb:.0f} %"
                       + ("" if sb >= 90 else f", {90 - sb:.0f} points short") + ").")
            out.append(f"  - {label} beats (c) on 2π–5π: **{'met' if sb > sc else 'missed'}** (success {sb:.0f} % "
                       f"vs {sc:.0f} %, median RMSE {rb:.3f} vs {rc:.3f} rad).")
            out.append(f"  - {label} at most 1/50 of (c)'s wall time: **{'met' if wc / wb >= 50 else 'missed'}** "
                       f"({wc / wb:.0f}x faster).")
    cnn_t = [r["timings"]["cnn"] for r in b_all.values() if r.get("timings", {}).get("cnn") is not None]
    if cnn_t and label == "(b)":
        med = float(np.median(cnn_t))
        out.append(f"- CNN inference ≤ 0.5 s per pattern: **{'met' if med <= 0.5 else 'missed'}** (median {med:.2f} s "
                   f"over {len(cnn_t)} patterns, inside (b), 1 torch thread).")
    out.append("")
    return out


def adaptive_target_lines(a_all: dict, c_all: dict, a_file: Path, c_file: Path) -> list[str]:
    """The adaptive issue's targets against (c), on the crystals both have: success, time ratio, and that every
    failure is marked uncertain (its wall times come from other runs than (c)'s: the ratios are indicative)."""
    out = [f"**The adaptive method against the same targets** ({a_file.stem.removeprefix('eval_')} against "
           f"{c_file.stem.removeprefix('eval_')}, on the crystals both have; wall times from different runs, "
           "under different machine loads):", ""]
    goals = {"< π": (97, 20), "2π–5π": (90, 10)}
    for name, lo, hi in BINS:
        seeds = [s for s, r in a_all.items() if s in c_all and lo <= r["phase_range"] < hi]
        if not seeds or name not in goals:
            continue
        a, c = [a_all[s] for s in seeds], [c_all[s] for s in seeds]
        sa, sc = 100 * np.mean([_success(r) for r in a]), 100 * np.mean([_success(r) for r in c])
        wa, wc = np.median([r["wall_s"] for r in a]), np.median([r["wall_s"] for r in c])
        silent = [r["seed"] for r in a if r.get("status") == "ok" and not _success(r)]
        fallback = sum(bool(r.get("fallback_ran")) for r in a)
        goal, ratio = goals[name]
        met_s = sa >= goal and (sa >= sc or lo < math.pi)
        out.append(f"- {name} ({len(seeds)} crystals): adaptive succeeds on {sa:.0f} %, (c) on {sc:.0f} %; "
                   f"median wall {wa:.1f} s vs {wc:.1f} s, (c)/adaptive = {wc / wa:.1f}x; fallback ran on "
                   f"{fallback}/{len(seeds)}; marked ok but wrong: {len(silent)}"
                   + (f" (seeds {', '.join(map(str, silent))})" if silent else "") + ".")
        out.append(f"  - success ≥ {goal} %" + (" and ≥ (c)'s" if lo >= math.pi else "")
                   + f": **{'met' if met_s else 'missed'}** ({sa:.0f} % vs (c) {sc:.0f} %).")
        out.append(f"  - median wall time ≤ 1/{ratio} of (c)'s: **{'met' if wc / wa >= ratio else 'missed'}** "
                   f"(1/{wc / wa:.1f}).")
        out.append(f"  - every failure marked uncertain: **{'met' if not silent else 'missed'}** "
                   f"({len(silent)} silent failure(s)).")
        old_c = [r for r in c if not scored_today(r)]
        if old_c and any(scored_today(r) for r in a):  # (c) on the support, the adaptive rows on the shape
            lift = sum(r["phase_rmse"] <= SUCCESS["phase_rmse"] and not _success(r) for r in old_c)
            out.append(f"  - (c)'s IoU was scored on the phasing support in {len(old_c)} of its {len(c)} rows (not "
                       f"rerun); scored on the shape, at most {lift} more of them could succeed (phase right, IoU "
                       f"short): (c) ≤ {100 * (sum(map(_success, c)) + lift) / len(c):.0f} %.")
    timed = [r for r in _jsonl(RESULTS / "timing_same_run.jsonl").values()
             if r.get("model") == a_file.stem.removeprefix("eval_adaptive_")]
    for name, lo, hi, ratio, flag in (("< π", 0.0, math.pi, 20, "lt-pi"),
                                      ("2π–5π", 2 * math.pi, math.inf, 10, "2pi-5pi")):
        rows = [r for r in timed if lo <= r["phase_range"] < hi]
        cs = [r for r in rows if r.get("c_s") is not None]
        if not (rows and cs):
            continue
        wa, wc = np.median([r["adaptive_s"] for r in rows]), np.median([r["c_s"] for r in cs])
        per = np.median([r["c_s"] / r["adaptive_s"] for r in cs])
        out.append(f"- Same machine, same run (`bench.cnn_eval timing --bin {flag}`, adaptive on {len(rows)} crystals "
                   f"at {name} and (c) on {len(cs)} of them, interleaved in one process): median wall adaptive "
                   f"{wa:.1f} s, (c) {wc:.1f} s (range {min(r['c_s'] for r in cs):.0f}-{max(r['c_s'] for r in cs):.0f}"
                   f" s), (c)/adaptive = {wc / wa:.1f}x (median of the per-crystal ratios where both ran "
                   f"{per:.1f}x); success there: adaptive {sum(r['adaptive_success'] for r in rows)}/{len(rows)}, "
                   f"(c) {sum(r['c_success'] for r in cs)}/{len(cs)}. Median time ≤ 1/{ratio} of (c)'s in the same "
                   f"run: **{'met' if wc / wa >= ratio else 'missed'}** on these crystals.")
    out.append("")
    return out


def timing(args) -> str:
    """(b), (b+), adaptive and (c) back to back on the same crystals in one process, so that their wall times share
    the same machine load (the full evaluation computes (c) once, at another time); prints and returns a markdown
    line, and appends one JSON line per crystal to timing_same_run.jsonl (the pairs behind the medians).

    --c-every K runs (c) on every K-th crystal only (interleaved, same process): (c)'s time hardly depends on the
    crystal (20 runs of one fixed recipe), while adaptive's median needs many crystals, since its time goes from
    one CNN candidate to seven runs."""
    import torch

    from models.predict import load_model
    from physics.simulate import simulate_sample

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    n_high, n_low = {"2pi-5pi": (100, 0), "lt-pi": (0, 30)}.get(args.bin, (100, 30))
    pool = test_crystals(n_high, n_low)
    crystals = pool[args.shard[0]::args.shard[1]][:args.n]
    t = {"b": [], "b+": [], "adaptive": [], "c": []}
    for i, (seed, params) in enumerate(crystals):
        sample = simulate_sample(seed, params)
        t["b"].append(run_cnn(sample, seed, model, method_options("cnn_er"))["wall_s"])
        t["b+"].append(run_cnn(sample, seed, model, method_options("cnn_raar_er"))["wall_s"])
        ad = run_strategy(sample, seed, model)
        t["adaptive"].append(ad["wall_s"])
        c = run_standard(sample, seed, 20, 5, STANDARD) if i % args.c_every == 0 else None
        if c is not None:
            t["c"].append(c["wall_s"])
        _append(RESULTS / "timing_same_run.jsonl",
                {"seed": seed, "phase_range": float(sample["phase_range"]), "model": model_tag(model),
                 "b_s": t["b"][-1], "b+_s": t["b+"][-1], "adaptive_s": t["adaptive"][-1],
                 "c_s": None if c is None else c["wall_s"], "adaptive_status": ad["status"],
                 "adaptive_success": _success(ad), "c_success": None if c is None else _success(c),
                 "c_every": args.c_every, "when": time.strftime("%Y-%m-%d %H:%M")})
        print(f"seed {seed}: adaptive {t['adaptive'][-1]:.1f} s"
              + ("" if c is None else f", (c) {t['c'][-1]:.1f} s"), flush=True)
    med = {k: float(np.median(v)) for k, v in t.items()}
    line = (f"shard {args.shard[0]}/{args.shard[1]}, {len(crystals)} crystals ({args.bin}; (c) on {len(t['c'])} of "
            f"them), {args.threads} thread(s): "
            f"median wall (b) {med['b']:.2f} s, (b+) {med['b+']:.2f} s, adaptive {med['adaptive']:.1f} s, (c) "
            f"{med['c']:.1f} s; (c)/(b) = {med['c'] / med['b']:.0f}x, (c)/(b+) = {med['c'] / med['b+']:.0f}x, "
            f"(c)/adaptive = {med['c'] / med['adaptive']:.1f}x")
    print(line, flush=True)
    with open(RESULTS / TIMING, "a") as f:  # one line per shard; the report quotes them
        f.write(f"{time.strftime('%Y-%m-%d %H:%M')} {line}\n")
    return line


def _shard(text: str) -> tuple[int, int]:
    """Parse "K/N" (0 <= K < N)."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 0/2, got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"shard {text!r}: need 0 <= K < N")
    return k, n


def build_parser() -> argparse.ArgumentParser:
    """The bench's command line: run, report, timing."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="compute missing results (resumable)")
    r.add_argument("--n-high", type=int, default=100)
    r.add_argument("--n-low", type=int, default=30)
    r.add_argument("--methods", nargs="+", default=None, choices=METHODS,
                   help="default: all (all but oracle_er at a --size other than 64)")
    r.add_argument("--size", default="64", help="pattern size: 64 (default), N (N³) or AxBxC, e.g. 128 or "
                   "128x256x256, as a detector writes it (oversampling 3-6) and cropped by the front end")
    r.add_argument("--model", default=None, help="weights (default: shipped model)")
    r.add_argument("--refine", type=int, default=None, help="ER cycles (default: the options schema's, 400)")
    r.add_argument("--nb-run", type=int, default=20)
    r.add_argument("--nb-keep", type=int, default=5)
    r.add_argument("--recipe", default=None)
    r.add_argument("--crystals", default="held-out", choices=tuple(SET_FIRST),
                   help="held-out: the evaluation's crystals; fresh, third: the second and third held-out sets "
                        "(seeds 2,000,200+ and 2,000,400+), at a --size other than 64 (files fresh_*, third_*); "
                        "wide: the wide set at any size (seeds 2,000,600+: every shape and strain family, the wide "
                        "scan conditions; files wide_*), e.g. a standard reference beside bench.adaptive_eval's")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N",
                   help="process only crystals K, K+N, K+2N, ... (run N processes with K=0..N-1 on N cores)")
    sub.add_parser("report", help="write the docs/benchmarks.md section")
    tm = sub.add_parser("timing", help="(b), (b+), adaptive, (c) back to back on N crystals under the same load")
    tm.add_argument("--n", type=int, default=2)
    tm.add_argument("--model", default=None)
    tm.add_argument("--threads", type=int, default=1)
    tm.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N")
    tm.add_argument("--bin", default="all", choices=("all", "2pi-5pi", "lt-pi"),
                    help="all: the held-out order (both bins interleaved); 2pi-5pi: the high-strain crystals only; "
                         "lt-pi: the crystals under π only")
    tm.add_argument("--c-every", type=int, default=1, metavar="K",
                    help="run (c) on every K-th crystal only (default 1: all); its time hardly depends on the crystal")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "run":
        run(args)
    elif args.cmd == "timing":
        timing(args)
    else:
        from bench.common import write_section

        from models.predict import DEFAULT_WEIGHTS, file_sha256

        write_section(SECTION, report(args))
        write_section(SIZE_SECTION, size_report(file_sha256(DEFAULT_WEIGHTS)[:8]))
        print(f"wrote sections '{SECTION}' and '{SIZE_SECTION}' of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
