"""`bcdi-recon demo`: the README's main command, on an embedded default (a simulated, highly strained crystal)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HELP = "run the pipeline end to end on a simulated highly strained crystal (no input needed)"

DESCRIPTION = """\
Simulates a highly strained crystal (phase range about 4π inside it, Poisson noise), reconstructs it with
the shipped CNN + border-restricted ER (the paper's pipeline), and, for comparison, with one run of the
standard recipe from a random start. Writes into --out:
  crystal.npz                the simulated pattern with its ground truth
  cnn_er.cxi, standard.cxi   the two reconstructions (CXI, readable by PyNX and silx)
  *.png                      previews: log intensity + reciprocal phase, modulus + phase wrapped to [0, 2π)
  summary.json               phase RMSE and support IoU against the truth, LLK, free LLK, timings
This is the offline pipeline; the service (gateway, queue, workers, Tiled) is started by `serve` and `worker`."""


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="output directory (default %(default)s)")
    p.add_argument("--seed", type=int, default=2_000_011, help="simulation seed (a held-out test seed by default)")
    p.add_argument("--phase-range", type=float, default=4.0, help="phase range inside the crystal, in units of π "
                                                                   "(default %(default)s)")
    p.add_argument("--standard-recipe", default="HIO**400,RAAR**1000,ER**300",
                   help="recipe of the comparison run ('' to skip it; default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import math

    import numpy as np

    from models.predict import load_model
    from physics.errors import InputError
    from physics.metrics import compare_to_truth
    from physics.simulate import SimParams, simulate_sample
    from workers.io.cxi import write_cxi
    from workers.io.previews import intensity_preview, save_png, write_previews
    from workers.io.samples import save_sample_npz
    from workers.pipeline import ReconOptions, reconstruct

    if not 0 < args.phase_range <= 8:
        raise InputError(f"--phase-range must be in (0, 8] (units of π), got {args.phase_range}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    r = args.phase_range * math.pi
    sample = simulate_sample(args.seed, SimParams(phase_range=(r, r)))
    save_sample_npz(out / "crystal.npz", sample)
    say = (lambda *a: None) if args.quiet else print
    say(f"simulated {sample['shape_kind']} crystal, {sample['field_kind']} strain field, phase range "
        f"{float(sample['phase_range']) / math.pi:.2f}π, peak {float(sample['intensity'].max()):.3g} counts "
        f"-> {out / 'crystal.npz'}")

    summary = {"seed": args.seed, "phase_range_pi": float(sample["phase_range"]) / math.pi}
    t = time.perf_counter()
    model = load_model(device=args.device)
    res = reconstruct(sample["intensity"], sample["mask"], model.predict_phase,
                      ReconOptions(refine=400, device=args.device))
    wall = time.perf_counter() - t
    m = compare_to_truth(res.obj, sample["object"], truth_support=sample["support"], recon_support=res.support)
    write_cxi(out / "cnn_er.cxi", res.obj, res.support, iobs=res.intensity_crop, mask=res.mask_crop,
              process={"pipeline": "cnn+er", "model": model.name, "model_sha256": model.sha256,
                       "recipe": "ER**400", "support_update_border_n": 2},
              results={**{k: v for k, v in res.llk.items() if isinstance(v, float)}, "wall_s": wall},
              free_mask=res.free_mask, crop_offsets=res.crop_offsets)
    write_previews(out, iobs=res.intensity_crop, obj=res.obj, support=res.support, stem="cnn_er",
                   title="CNN + 400 ER")
    save_png(intensity_preview(res.intensity_cnn, res.phase_cnn, title="CNN input and predicted reciprocal phase"),
             out / "cnn_er_cnn_phase.png")
    summary["cnn_er"] = {"phase_rmse": m["phase_rmse"], "iou": m["iou"], "llk": res.llk.get("llk_poisson"),
                         "llk_free": res.llk.get("llk_poisson_free"), "wall_s": wall}
    say(f"CNN + ER: phase RMSE {m['phase_rmse']:.2f} rad, IoU {m['iou']:.2f}, "
        f"LLK {res.llk.get('llk_poisson', float('nan')):.3g}, {wall:.1f} s -> {out / 'cnn_er.cxi'}")

    if args.standard_recipe:
        from physics.phasing import phase_runs

        t = time.perf_counter()
        std = phase_runs(sample["intensity"], mask=sample["mask"], recipe=args.standard_recipe, nb_run=1,
                         nb_keep=1, seed=args.seed, device=args.device, free_mask=res.free_mask)
        wall = time.perf_counter() - t
        ms = compare_to_truth(std.obj, sample["object"], truth_support=sample["support"], recon_support=std.support)
        run0 = std.runs[0] if std.runs else {}
        write_cxi(out / "standard.cxi", std.obj, std.support, iobs=sample["intensity"], mask=sample["mask"],
                  process={"pipeline": "standard", "recipe": args.standard_recipe, "nb_run": 1},
                  results={k: v for k, v in run0.items() if isinstance(v, float)}, free_mask=std.free_mask)
        write_previews(out, iobs=sample["intensity"], obj=std.obj, support=std.support, stem="standard",
                       title=f"standard: {args.standard_recipe}, 1 run")
        summary["standard"] = {"phase_rmse": ms["phase_rmse"], "iou": ms["iou"], "wall_s": wall,
                               "llk": run0.get("llk_poisson"), "llk_free": run0.get("llk_poisson_free")}
        say(f"standard recipe (1 run): phase RMSE {ms['phase_rmse']:.2f} rad, IoU {ms['iou']:.2f}, {wall:.1f} s "
            f"-> {out / 'standard.cxi'}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    say(f"summary -> {out / 'summary.json'}; previews -> {out}/*.png")
    return 0
