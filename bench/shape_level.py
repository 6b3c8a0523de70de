"""Choose the crystal-shape isosurface (physics.shape) on calibration crystals, not on any evaluation set.

Each row runs the adaptive method (the product's default) on one calibration crystal, both the paper-family set
and the wide-condition set of bench.calibrate_gate (their seeds, which no evaluation set draws), and scores the
result's shape against the truth for every setting of the grid: level x reference (max or a percentile of the
amplitude in the support) x cavities filled or not, beside the phasing support itself.

    python -m bench.shape_level run --crystals paper --n 32     # resumable; one torch thread
    python -m bench.shape_level run --crystals wide --n 32 [--shard K/N]
    python -m bench.shape_level report [--print]               # docs/benchmarks.md section

The rule, fixed before any result was seen: among the crystals whose phase is right (RMSE <= 0.5 rad), the
setting that brings the most of them to IoU >= 0.7 over both sets together; ties go to the highest median IoU.
"""
from __future__ import annotations

import itertools
import sys

import numpy as np

from bench.cnn_eval import RESULTS, SUCCESS, _append, _jsonl, _shard, free_mask_for
from bench.common import add_report_parser, add_run_parser, bench_parser, dispatch, machine, model_tag

SECTION = "Crystal shape level (calibration crystals)"
FILE = "shape_level_{tag}.jsonl"
LEVELS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
REFERENCES = ("max", "q99", "q95")
FILLS = (True, False)
GRID = list(itertools.product(REFERENCES, LEVELS, FILLS))


def key(reference: str, level: float, fill: bool) -> str:
    return f"{reference}@{level:g}{'+fill' if fill else ''}"


def moved_iou(shape: np.ndarray, truth_support: np.ndarray, info: dict) -> float:
    """IoU of a reconstruction-grid mask with the truth after the alignment compare_to_truth found (twin, shift)."""
    from physics.metrics import moved_mask, support_iou

    return support_iou(moved_mask(shape, info), truth_support)


def score(obj, support, truth, truth_support) -> dict:
    """Phase RMSE and IoU of the phasing support, then the IoU of every shape setting of GRID."""
    from physics.metrics import compare_to_truth
    from physics.shape import crystal_shape

    m = compare_to_truth(obj, truth, truth_support=truth_support, recon_support=support)
    out = {"phase_rmse": m["phase_rmse"], "iou_support": m["iou"], "volume_ratio_support": m["volume_ratio"]}
    for ref, level, fill in GRID:
        shape = crystal_shape(obj, support, level=level, reference=ref, fill_holes=fill)
        out[key(ref, level, fill)] = moved_iou(shape, truth_support, m)
    return out


def run(args) -> None:
    import torch

    from bench.calibrate_gate import crystals
    from models.predict import load_model
    from physics.simulate import simulate_sample
    from workers.strategy import StrategyOptions, run_method

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    tag = model_tag(model)
    out = RESULTS / FILE.format(tag=tag)
    done = _jsonl(out)
    n_low = max(1, args.n // 4)
    k, n = args.shard
    for seed, params in crystals(args.n - n_low, n_low, wide=args.crystals == "wide")[k::n]:
        if seed in done:
            continue
        sample = simulate_sample(seed, params)
        res = run_method("adaptive", sample["intensity"], sample["mask"], model.predict_phase, StrategyOptions(),
                         free_mask=free_mask_for(sample, seed))
        rec = {"seed": seed, "crystals": args.crystals, "shape": str(sample["shape_kind"]),
               "truth_voxels": int(sample["support"].sum()), "peak_counts": float(sample["peak_counts"]),
               "status": res.confidence["status"], "winner": res.confidence["winner"], "model": tag,
               **score(res.result.obj, res.result.support, sample["object"], sample["support"])}
        _append(out, rec)
        print(f"seed {seed} ({args.crystals}): {rec['status']} RMSE {rec['phase_rmse']:.2f} IoU support "
              f"{rec['iou_support']:.2f}, max@0.35+fill {rec[key('max', 0.35, True)]:.2f}", flush=True)


def choose(recs: list[dict]):
    """The rule of the module docstring: (setting key, successes, median IoU) over the phase-right crystals."""
    right = [r for r in recs if r["phase_rmse"] <= SUCCESS["phase_rmse"]]
    best = None
    for g in GRID:
        k = key(*g)
        vals = np.array([r[k] for r in right])
        cand = (int((vals >= SUCCESS["iou"]).sum()), float(np.median(vals)) if len(vals) else 0.0)
        if best is None or cand > best[1:]:
            best = (k, *cand)
    return best


def report(args) -> str:
    from physics.shape import SHAPE_FILL_HOLES, SHAPE_LEVEL, SHAPE_REFERENCE

    files = sorted(RESULTS.glob(FILE.format(tag="*")))
    if not files:
        raise SystemExit("no shape_level results: run `python -m bench.shape_level run` first")
    shipped = key(SHAPE_REFERENCE, SHAPE_LEVEL, SHAPE_FILL_HOLES)
    lines = ["Commands: `nice -n 10 .venv/bin/python -m bench.shape_level run --crystals paper --n 32`, the same with "
             "`--crystals wide`, then `... report`; machine: " + machine() + ". Each row runs the adaptive method on "
             "one calibration crystal (bench.calibrate_gate's seeds: the paper families and the wide conditions; no "
             "evaluation set draws them) and scores its result's shape against the truth for every setting: "
             "physics.shape.crystal_shape, the amplitude isosurface inside the phasing support at a level of its "
             "maximum or of a percentile, enclosed cavities filled or not. The rule, fixed before the results: "
             f"among the crystals whose phase is right (RMSE ≤ {SUCCESS['phase_rmse']} rad), the setting that "
             f"brings the most of them to IoU ≥ {SUCCESS['iou']} over both sets together, ties to the highest "
             "median IoU.", ""]
    for f in files:
        recs = list(_jsonl(f).values())
        right = [r for r in recs if r["phase_rmse"] <= SUCCESS["phase_rmse"]]
        k, n_ok, med = choose(recs)
        lines += [f"**{f.stem}**: {len(recs)} crystals ("
                  + ", ".join(f"{sum(r['crystals'] == c for r in recs)} {c}" for c in ("paper", "wide")) + f"), "
                  f"{len(right)} with a right phase. Chosen: **{k}** (IoU ≥ {SUCCESS['iou']} on {n_ok}, median "
                  f"{med:.3f}); shipped: {shipped}.", "",
                  "| setting | set | phase-right crystals | IoU ≥ 0.7 | median IoU | 10th-percentile IoU | "
                  "crystals whose IoU it lowers by > 0.05 |", "|---|---|---:|---:|---:|---:|---:|"]
        shown = ["iou_support"] + sorted({k, shipped, key("max", 0.25, True), key("max", 0.5, True),
                                          key("q99", 0.5, True), key("max", 0.35, False)})
        for s in shown:
            for c in ("paper", "wide", "both"):
                rr = [r for r in right if c == "both" or r["crystals"] == c]
                if not rr:
                    continue
                v = np.array([r[s] for r in rr])
                lower = sum(r[s] < r["iou_support"] - 0.05 for r in rr)
                name = "phasing support" if s == "iou_support" else s
                lines.append(f"| {name} | {c} | {len(rr)} | {int((v >= SUCCESS['iou']).sum())} | "
                             f"{np.median(v):.3f} | {np.percentile(v, 10):.3f} | {lower} |")
        lines.append("")
    return "\n".join(lines)


def build_parser():
    p, sub = bench_parser("python -m bench.shape_level", __doc__)
    r = add_run_parser(sub, "run the adaptive method on calibration crystals and score every shape setting")
    r.add_argument("--crystals", choices=("paper", "wide"), default="paper")
    r.add_argument("--n", type=int, default=32, help="crystals (a quarter of them under pi; default 32)")
    r.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N",
                   help="run every N-th crystal from the K-th: processes split the work (appends are line-atomic)")
    add_report_parser(sub)
    return p


def main(argv=None) -> int:
    return dispatch(build_parser().parse_args(argv), {"run": run}, SECTION, report)


if __name__ == "__main__":
    sys.exit(main())
