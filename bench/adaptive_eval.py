"""`adaptive` (and any method of workers/strategy.py) on the evaluation's held-out crystals, beside (a), (b), (b+)
and (c) of bench/cnn_eval.py: same crystals, same free voxels, same success criterion, results in the same
JSON-lines format (bench/results/eval_<method>_<model>.jsonl, so `bench.cnn_eval report` tables them too), plus
what only a gated method has: its ok / uncertain verdict, how many candidates ran, whether the fallback ran.

    python -m bench.adaptive_eval run --n-high 100 --n-low 30 [--shard K/N]     # compute (resumable)
    python -m bench.adaptive_eval report                                        # docs/benchmarks.md section
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bench.cnn_eval import BINS, RESULTS, _append, _jsonl, _shard, _success, run_strategy, test_crystals

SECTION = "Adaptive reconstruction on the held-out crystals"


def _file(out: Path, method: str, tag: str) -> Path:
    return out / f"eval_{method.replace('-', '_')}_{tag}.jsonl"


def run(args) -> None:
    import torch

    from models.predict import load_model
    from physics.simulate import simulate_sample
    from workers.strategy import StrategyOptions

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    tag = f"{model.name}-{model.sha256[:8]}"
    path = _file(Path(args.out), args.method, tag)
    done = _jsonl(path)
    opts = StrategyOptions(max_runs=args.max_runs, max_seconds=args.max_seconds, fallback_style=args.fallback_style)
    k, n = args.shard
    for seed, params in test_crystals(args.n_high, args.n_low)[k::n]:
        if seed in done:
            continue
        sample = simulate_sample(seed, params)
        rec = {"seed": seed, "phase_range": float(sample["phase_range"]), "shape": str(sample["shape_kind"]),
               "field": str(sample["field_kind"]), **run_strategy(sample, seed, model, args.method, opts),
               "model": tag}
        _append(path, rec)
        print(f"seed {seed} range {rec['phase_range']:.1f}: {rec['status']} winner {rec['winner']} "
              f"success {_success(rec)} {rec['wall_s']:.1f} s", flush=True)


def report_lines(recs: list[dict], label: str) -> list[str]:
    """Per bin: success, median and p90 time, fallback fraction, gate errors (ok but wrong / uncertain but right)."""
    lines = [f"**{label}** ({len(recs)} crystals)", "",
             "| bin | n | success % | median s | p90 s | fallback ran | marked ok | ok but wrong (silent) | "
             "uncertain but right |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, lo, hi in BINS:
        sel = [r for r in recs if lo <= r["phase_range"] < hi]
        if not sel:
            continue
        n = len(sel)
        ok = [_success(r) for r in sel]
        w = [r["wall_s"] for r in sel]
        lines.append(f"| {name} | {n} | {100 * np.mean(ok):.0f} | {np.median(w):.1f} | {np.percentile(w, 90):.1f} | "
                     f"{sum(r['fallback_ran'] for r in sel)}/{n} | {sum(r['status'] == 'ok' for r in sel)}/{n} | "
                     f"{sum(r['status'] == 'ok' and not s for r, s in zip(sel, ok))} | "
                     f"{sum(r['status'] != 'ok' and s for r, s in zip(sel, ok))} |")
    lines.append("")
    ok = [r for r in recs if r["status"] == "ok"]
    good = [r for r in recs if _success(r)]
    tp = sum(_success(r) for r in ok)
    if ok and good:
        lines += [f"The gate on these held-out crystals (out of sample: its thresholds were fitted on other seeds, "
                  f"bench/calibrate_gate.py): precision {100 * tp / len(ok):.1f} % ({tp} of {len(ok)} results marked ok "
                  f"are right; target ≥ 95 %), recall {100 * tp / len(good):.1f} % ({tp} of {len(good)} right results "
                  f"marked ok; target ≥ 90 %).", ""]
    wrong = [r for r in recs if r["status"] == "ok" and not _success(r)]
    if wrong:
        lines += ["Marked ok but wrong: " + "; ".join(
            f"seed {r['seed']} (range {r['phase_range']:.1f} rad, winner {r['winner']}, phase RMSE "
            f"{r['phase_rmse']:.3f} rad, IoU {r['iou']:.3f}, free LLK {r['llk_free']:.3g})" for r in wrong) + ".", ""]
    return lines


def report(args) -> str:
    from bench.common import machine

    lines = [f"Command: `nice -n 10 .venv/bin/python -m bench.adaptive_eval run --n-high N --n-low M` (resumable; "
             f"the crystal counts are in the tables), then `.venv/bin/python -m bench.adaptive_eval report`; "
             f"machine: {machine()}. Same held-out crystals, free voxels and success criterion as bench/cnn_eval.py; "
             "time = wall time of the whole strategy per crystal, on a shared machine that also ran a training job and "
             "tests (so times are long); the crystal counts are in the tables (130 = the full held-out set, 100 at "
             "2π–5π and 30 under π). The targets against (c) are checked in the section \"CNN + ER against the "
             "standard recipe\" (`bench.cnn_eval report`).", ""]
    files = sorted(Path(args.out).glob("eval_adaptive_*.jsonl"))
    if not files:
        return "\n".join(lines + ["No results yet."])
    for f in files:
        lines += report_lines(list(_jsonl(f).values()), f.stem.removeprefix("eval_"))
    return "\n".join(lines)


def main(argv=None) -> int:
    from workers.strategy import METHODS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--method", default="adaptive", choices=METHODS)
    r.add_argument("--n-high", type=int, default=100)
    r.add_argument("--n-low", type=int, default=30)
    r.add_argument("--model", default=None)
    r.add_argument("--max-runs", type=int, default=6)
    r.add_argument("--max-seconds", type=float, default=600.0)
    r.add_argument("--fallback-style", default="cohere", choices=("pynx", "cohere"))
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N")
    r.add_argument("--out", default=str(RESULTS))
    p = sub.add_parser("report")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--print", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run(args)
        return 0
    from bench.common import print_or_write_section

    print_or_write_section(SECTION, report(args), args.print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
