"""CNN + ER against the standard recipe on the real measured 64³ pattern (APS 34-ID-C, 3D-CDI-NN example).

There is no ground truth, so the comparison is on the data: LLK, free LLK (the same withheld voxels for both),
R-factor, support size, wall time, plus PNG previews in docs/real_data/.

    .venv/bin/python bench/real_data.py [--nb-run 20 --nb-keep 5]
The zero-filled (masked) patch of the file is the largest connected block of zero counts; it is masked.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cnn_eval import PRE_RECIPE, STANDARD, method_options  # noqa: E402 - the same (b+) and (c) as the simulated comparison
from bench.common import ROOT, command_line, machine, write_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "aps_34idc_crystal_64" / "ft_crop_64.tif"


def zero_patch_mask(intensity):
    """The detector's zero-filled patch: the largest connected region of exact zeros (real zero counts are small
    scattered regions at high q)."""
    import numpy as np
    from scipy import ndimage

    lab, n = ndimage.label(intensity == 0)
    if n == 0:
        return np.zeros(intensity.shape, bool)
    sizes = ndimage.sum(np.ones_like(lab), lab, range(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nb-run", type=int, default=20)
    ap.add_argument("--nb-keep", type=int, default=5)
    ap.add_argument("--model", default=None)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    import tifffile

    from models.predict import load_model
    from physics.metrics import data_metrics
    from physics.phasing import PhaseConfig, free_pixel_mask, phase_runs
    from workers.io.previews import intensity_preview, object_preview, save_png
    from workers.pipeline import reconstruct

    iobs = tifffile.imread(DATA).astype("float32")
    mask = zero_patch_mask(iobs)
    free = free_pixel_mask(iobs.shape, mask=mask, seed=0)
    out = ROOT / "docs" / "real_data"
    out.mkdir(parents=True, exist_ok=True)

    model = load_model(args.model)
    t = time.perf_counter()
    b = reconstruct(iobs, mask, model.predict_phase, method_options("cnn_er"), free_mask=free)
    t_b = time.perf_counter() - t
    db = data_metrics(b.obj, iobs, mask=mask, free_mask=free, support=b.support)
    t = time.perf_counter()
    bp = reconstruct(iobs, mask, model.predict_phase, method_options("cnn_raar_er"),
                     free_mask=free)
    t_bp = time.perf_counter() - t
    dbp = data_metrics(bp.obj, iobs, mask=mask, free_mask=free, support=bp.support)
    t = time.perf_counter()
    c = phase_runs(iobs, mask=mask, config=PhaseConfig(recipe=STANDARD, nb_run=args.nb_run, nb_keep=args.nb_keep),
                   free_mask=free)
    t_c = time.perf_counter() - t
    dc = data_metrics(c.obj, iobs, mask=mask, free_mask=free, support=c.support)
    dbest = data_metrics(c.best_obj, iobs, mask=mask, free_mask=free, support=c.support)
    save_png(intensity_preview(b.intensity_cnn, b.phase_cnn, title="APS pattern: log I and the CNN's phase"),
             out / "cnn_phase.png")
    save_png(object_preview(b.obj, b.support, title=f"CNN + 400 ER ({model.name})"), out / "cnn_er_object.png")
    save_png(object_preview(bp.obj, bp.support, title=f"CNN + {PRE_RECIPE} + 400 ER ({model.name})"),
             out / "cnn_raar_er_object.png")
    save_png(object_preview(c.obj, c.support, title=f"standard {STANDARD}, {args.nb_run} runs, best "
                                                    f"{args.nb_keep}, first mode"), out / "standard_object.png")
    row = lambda name, d, s, t: (f"| {name} | {d['llk_poisson']:.3g} | {d['llk_poisson_free']:.3g} | "  # noqa: E731
                                 f"{d['r_factor']:.3f} | {int(s.sum())} | {t:.1f} |")
    body = "\n".join([
        f"Command: `{command_line()}`; machine: {machine()}.", "",
        f"Data: `{DATA.relative_to(ROOT.parent)}` (64³, peak {iobs.max():.3g} counts), {int(mask.sum())} voxels of "
        f"its zero-filled patch masked, {int(free.sum())} free voxels withheld from both methods. No ground truth: "
        "lower LLK / free LLK / R-factor = better fit of the data.", "",
        "| method | LLK | free LLK | R-factor | support voxels | wall s |", "|---|---:|---:|---:|---:|---:|",
        row(f"(b) CNN ({model.name}) + 400 ER, border_n 2", db, b.support, t_b),
        row(f"(b+) CNN ({model.name}) + {PRE_RECIPE} + 400 ER, border_n 2", dbp, bp.support, t_bp),
        row(f"(c) {STANDARD}, {args.nb_run} runs, best {args.nb_keep}, first mode "
            f"(weight {c.first_mode_weight:.2f})", dc, c.support, t_c),
        row("(c') the best single run of (c) by free LLK", dbest, c.support, t_c), "",
        f"Time ratio (c)/(b): {t_c / t_b:.0f}x. Previews: docs/real_data/cnn_phase.png, cnn_er_object.png, "
        "cnn_raar_er_object.png, standard_object.png.",
    ])
    print(body)
    if not args.no_doc:
        write_section("Real measured pattern: CNN + ER against the standard recipe", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
