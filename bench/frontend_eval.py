"""The front end measured, not only the network: held-out crystals at 64³ and as a detector writes them.

For each held-out high-strain crystal (bench.cnn_eval's test seeds), the 64³ pattern and the same crystal at a
larger size and oversampling (physics.detector_sim, e.g. 128³ at oversampling 3-6) go through the front end
(physics.preprocess.prepare: measured oversampling -> crop -> 64³ CNN grid), then through
  cnn_er:   the CNN + 400 border-only ER cycles on the crop at full resolution (workers.pipeline.reconstruct);
  standard: the standard multi-run recipe on the same crop (physics.phasing.phase_runs).
Each result is compared with the truth on its own grid (physics.detector_sim.truth_on_crop) by the
bench.cnn_eval success rule (phase RMSE <= 0.5 rad and support IoU >= 0.7). One JSON line per (crystal, size,
method) in bench/results/frontend_eval.jsonl (resumable).

    python -m bench.frontend_eval run --n 4 --sizes 64 128 --methods cnn_er standard --nb-run 2
    python -m bench.frontend_eval report
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.cnn_eval import RESULTS, SUCCESS, _append, _jsonl

OUT = RESULTS / "frontend_eval.jsonl"
SECTION = "Front end on larger simulated patterns (128³, 128×256×256 at oversampling 3–6)"
STANDARD_NOTE = "HIO**400,RAAR**1000,ER**300"


def _sample(seed: int, size: str):
    from physics.detector_sim import detector_sample
    from physics.simulate import simulate_sample

    if size == "64":
        s = simulate_sample(seed)
        s["shape"] = (64, 64, 64)
        return s
    shape = tuple(int(v) for v in size.split("x")) if "x" in size else (int(size),) * 3
    return detector_sample(seed, shape, (3.0, 6.0))


def _truth(sample, fe):
    from physics.detector_sim import truth_on_crop

    if tuple(sample["intensity"].shape) == tuple(fe.crop_shape) and sample["object"].shape == tuple(fe.crop_shape):
        return sample["object"], sample["support"]
    return truth_on_crop(sample, fe.crop_offsets, fe.crop_shape)


def _metrics(obj, support, truth, truth_support) -> dict:
    from physics.metrics import compare_to_truth

    m = compare_to_truth(obj, truth, truth_support=truth_support, recon_support=support)
    return {k: float(m[k]) for k in ("phase_rmse", "iou", "volume_ratio")}


def run_one(seed: int, size: str, method: str, model, nb_run: int, recipe: str) -> dict:
    from physics.preprocess import prepare
    from workers.frontend import training_oversampling
    from workers.pipeline import ReconOptions, reconstruct

    s = _sample(seed, size)
    t = time.perf_counter()
    if method == "cnn_er":
        r = reconstruct(s["intensity"], s["mask"], model.predict_phase, ReconOptions(er_cycles=400))
        fe, obj, sup, llk = r.frontend, r.obj, r.support, r.llk
    else:
        from physics.phasing import phase_runs

        rng, src = training_oversampling(model)
        p = prepare(s["intensity"], s["mask"], rng, training_range_source=src)
        fe = p.frontend
        res = phase_runs(p.intensity, mask=p.mask, recipe=recipe, nb_run=nb_run, nb_keep=1, seed=seed, num_threads=1)
        obj, sup, llk = res.obj, res.support, {}
    wall = time.perf_counter() - t
    truth, tsup = _truth(s, fe)
    return {"seed": seed, "size": size, "method": method, "true_oversampling": [float(v) for v in s["oversampling"]],
            **_metrics(obj, sup, truth, tsup), "wall_s": wall, "llk": llk.get("llk_poisson"),
            "frontend": fe.metadata()}


def run(args) -> None:
    import torch

    from bench.cnn_eval import test_crystals
    from models.predict import load_model

    torch.set_num_threads(1)
    model = load_model(args.model)
    done = {(r["seed"], r["size"], r["method"]) for r in _records()}
    seeds = [seed for seed, _ in test_crystals(args.n, 0)][: args.n]
    for seed in seeds:
        for size in args.sizes:
            for method in args.methods:
                if (seed, size, method) in done:
                    continue
                rec = run_one(seed, size, method, model, args.nb_run, args.recipe)
                rec["recipe"] = args.recipe if method == "standard" else "ER**400"
                _append(OUT, rec)
                print(json.dumps({k: rec[k] for k in ("seed", "size", "method", "phase_rmse", "iou", "wall_s")}),
                      rec["frontend"]["crop_shape"], rec["frontend"]["oversampling"], flush=True)


def _records() -> list[dict]:
    if not OUT.exists():
        return []
    return [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]


def _ok(rec) -> bool:
    return rec["phase_rmse"] <= SUCCESS["phase_rmse"] and rec["iou"] >= SUCCESS["iou"]


def report(args) -> str:
    recs = _records()
    lines = ["| size | method | crystals | success | median phase RMSE (rad) | median IoU | median wall (s) |",
             "|---|---|---|---|---|---|---|"]
    for size in sorted({r["size"] for r in recs}, key=lambda v: (len(v), v)):
        for method in sorted({r["method"] for r in recs}):
            rs = [r for r in recs if r["size"] == size and r["method"] == method]
            if not rs:
                continue
            lines.append(f"| {size} | {method} | {len(rs)} | {sum(map(_ok, rs))}/{len(rs)} | "
                         f"{np.median([r['phase_rmse'] for r in rs]):.2f} | {np.median([r['iou'] for r in rs]):.2f} | "
                         f"{np.median([r['wall_s'] for r in rs]):.0f} |")
    from bench.common import command_line, machine, write_section

    body = ("Held-out high-strain crystals (2π–5π, bench.cnn_eval test seeds) at 64³ and as a detector writes them "
            "(physics.detector_sim: 128³, or 128×256×256, at oversampling 3–6), through the front end "
            "(measured oversampling -> crop -> 64³ by binning or Fourier resampling), then CNN + 400 border-only ER "
            "(cnn_er) or the standard recipe on the same crop (standard, one run, " + STANDARD_NOTE + "). "
            "Success: phase RMSE <= 0.5 rad and support IoU >= 0.7 against the truth on the crop's grid.\n\n"
            + "\n".join(lines) + f"\n\n`{command_line()}`; {machine()}; per-crystal lines in "
            "bench/results/frontend_eval.jsonl (crop, binning, resampling and oversampling per axis).")
    write_section(SECTION, body)
    text = "\n".join(lines)
    print(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.frontend_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--n", type=int, default=4)
    r.add_argument("--sizes", nargs="+", default=["64", "128"])
    r.add_argument("--methods", nargs="+", default=["cnn_er", "standard"])
    r.add_argument("--nb-run", type=int, default=2)
    r.add_argument("--recipe", default="HIO**400,RAAR**1000,ER**300")
    r.add_argument("--model")
    r.set_defaults(func=run)
    sub.add_parser("report").set_defaults(func=report)
    args = ap.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
