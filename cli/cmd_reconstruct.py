"""`bcdi-recon reconstruct`: CNN phase prediction + border-restricted ER refinement of one Bragg peak -> CXI."""
from __future__ import annotations

import argparse
import sys
import time

HELP = "reconstruct a highly strained crystal: CNN reciprocal phase + ER refinement -> CXI (+ PNG previews)"

DESCRIPTION = """\
The pipeline of Masto et al. (2025), for crystals whose phase range exceeds 2π, where iterative phase
retrieval from random starts often fails:
  1. masked voxels (detector gaps, hot pixels) are left free;
  2. the front end (see `bcdi-recon info`): photon scale (1 for integer counts, else estimated, or
     --photon-scale), optional --background / --photon-threshold, the Bragg peak (maximum, then box, then
     centre of mass), the oversampling per axis measured from the data's autocorrelation, and a crop C per axis
     around the peak such that oversampling x 64 / C lies in the model's training range (a 64³ input is used as
     it is; --crop-size overrides the choice);
  3. the crop is brought to 64³ by integer binning (sum) where C is a multiple of 64, else by Fourier
     resampling, and normalised (log(I+1), min-max);
  4. the CNN predicts the reciprocal-space phase;
  5. the measured modulus with that phase is inverse-FFT'd into a first object;
  6. the object is put back on the crop grid and scaled to the data;
  7. --refine ER cycles refine it on the crop at full resolution (--refine-binned: on the binned 64³ grid), with support updates every --update-period cycles that may
     only move voxels within --border-n of the support border (threshold starts at --threshold x rms).
     --pre-recipe RAAR**200 runs 200 RAAR cycles (same support rule) before them: from a weak CNN start
     it escapes ER's stagnation (see docs/benchmarks.md, method b+); the default is the paper's ER only.

INPUT is a centred 3D intensity (.npy, .npz[:KEY], .tif, .cxi/.h5[:/dataset], as for `phase`), or an ID01
BLISS dataset file with --scan (frames, masks and metadata read from the file; detector auto-detected).
The CXI holds the object on the crop grid with the crop offsets, the support, the cropped intensity and
mask, the CNN's 64³ phase, the options, LLK / free LLK / obj2_out and the per-stage timings.
--refine 0 gives the CNN-only object. The shipped model is models/weights/unet_w0125.pt (see its model card)."""

EPILOG = """\
examples:
  bcdi-recon reconstruct crystal.npz --out crystal.cxi --previews png/
  bcdi-recon reconstruct PtNP_0001.h5 --scan 1.1 --detector mpx1x4 --out scan1.cxi
  bcdi-recon reconstruct data.tif --out cnn_only.cxi --refine 0"""


def register(subparsers) -> None:
    p = subparsers.add_parser("reconstruct", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="3D intensity file[:dataset], or an ID01 BLISS .h5 with --scan")
    p.add_argument("--out", required=True, help="output CXI file (written atomically)")
    p.add_argument("--scan", help="ID01 scan entry, e.g. 1.1 (INPUT is then a BLISS dataset or master file)")
    p.add_argument("--detector", help="ID01 detector (mpx1x4, mpxgaas, eiger2M); default: auto-detected")
    p.add_argument("--mask", help="mask file[:dataset] (nonzero = masked), for plain intensity inputs")
    p.add_argument("--model", help="weights file (default: the shipped model)")
    p.add_argument("--refine", type=int, default=400, help="ER refinement cycles, 0 = CNN only (default %(default)s)")
    p.add_argument("--pre-recipe", default="", metavar="RECIPE",
                   help="HIO/RAAR cycles before the ER, e.g. RAAR**200 (default: none, the paper's ER only)")
    p.add_argument("--update-period", type=int, default=20, help="support update period (default %(default)s)")
    p.add_argument("--border-n", type=int, default=2, help="support may change within n voxels of its border "
                                                          "(default %(default)s)")
    p.add_argument("--threshold", type=float, default=0.25, help="support threshold relative to the rms of the "
                                                                  "smoothed modulus (default %(default)s)")
    p.add_argument("--crop-size", type=int, nargs="+", metavar="N",
                   help="crop box around the peak, 1 or 3 values (default: chosen from the measured oversampling "
                        "and the model's training range; 64³ inputs are not cropped); larger than the array: error")
    p.add_argument("--refine-binned", action="store_true",
                   help="refine on the binned 64³ grid instead of the crop at full resolution (needs integer binning)")
    from cli.cmd_info import add_frontend_arguments

    add_frontend_arguments(p)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the free-voxel draw (default %(default)s)")
    p.add_argument("--previews", metavar="DIR", help="also write PNG previews into DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def _read_input(args, allow_negative: bool = False):
    """(intensity, mask, input metadata) from a plain file or an ID01 scan; all validation before heavy work."""
    from physics.errors import InputError

    if args.scan:
        if args.mask:
            raise InputError("--mask applies to plain intensity files; an ID01 scan brings its own masks")
        from workers.io.id01 import load_scan

        frames, mask, meta = load_scan(args.input, args.scan, args.detector)
        return frames, mask, meta
    if args.detector:
        raise InputError("--detector needs --scan (it selects the detector of an ID01 scan)")
    from workers.io.formats import companion_mask_spec, read_intensity, read_mask

    iobs = read_intensity(args.input, allow_negative=allow_negative)
    spec = args.mask or companion_mask_spec(args.input)
    mask = read_mask(spec, iobs.shape) if spec else None
    return iobs, mask, {"input": args.input, "mask": spec}


def run(args) -> int:
    from physics.errors import InputError
    from workers.io.formats import check_output_path

    out = check_output_path(args.out, suffixes=(".cxi", ".h5"))
    if args.previews:
        from pathlib import Path

        if not Path(args.previews).parent.is_dir():
            raise InputError(f"--previews {args.previews}: parent directory does not exist")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda was requested but no CUDA device is available")
    t0 = time.perf_counter()
    iobs, mask, meta = _read_input(args, allow_negative=args.negative != "error")
    t_read = time.perf_counter() - t0

    from models.predict import load_model
    from workers.pipeline import ReconOptions, reconstruct

    from cli.cmd_info import frontend_options

    fe_opts = frontend_options(args, refine_binned=args.refine_binned)
    opts = ReconOptions(refine=args.refine, pre_recipe=args.pre_recipe, update_period=args.update_period,
                        border_n=args.border_n, threshold=args.threshold, crop_size=fe_opts.crop_size,
                        device=args.device, seed=args.seed)
    t = time.perf_counter()
    model = load_model(args.model, device=args.device)
    t_model = time.perf_counter() - t

    from tqdm import tqdm

    bar = tqdm(total=100, desc="reconstruct", unit="%", disable=True if args.quiet else None, file=sys.stderr,
               leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
    weights = {"preprocess": 2, "cnn": 8, "ifft": 2, "refine": 88}
    base = {"preprocess": 0, "cnn": 2, "ifft": 10, "refine": 12}

    def progress(stage: str, fraction: float) -> None:
        bar.n = int(base[stage] + weights[stage] * fraction)
        bar.set_postfix_str(stage)
        bar.refresh()

    try:
        result = reconstruct(iobs, mask, model.predict_phase, opts, progress=progress, frontend=fe_opts)
    finally:
        bar.close()

    from workers.io.cxi import write_cxi

    timings = {"read_s": t_read, "model_load_s": t_model, **{f"{k}_s": v for k, v in result.timings.items()}}
    process = {"pipeline": "cnn+er", "engine": "builtin", "recipe": f"ER**{args.refine}",
               "model": model.name, "model_sha256": model.sha256, "input": args.input,
               "scan": args.scan or "", "detector": meta.get("detector", args.detector or ""),
               "crop_offsets": list(result.crop_offsets), "input_shape": list(result.input_shape),
               **{k: v for k, v in result.options.items() if v is not None},
               "frontend": result.frontend.metadata()}
    results = {**{k: v for k, v in result.llk.items() if isinstance(v, (int, float))}, "timings": timings,
               "support_size": int(result.support.sum())}
    write_cxi(out, result.obj, result.support, iobs=result.intensity_crop, mask=result.mask_crop,
              process=process, results=results, free_mask=result.free_mask, crop_offsets=result.crop_offsets,
              command="bcdi-recon " + " ".join(sys.argv[1:]))
    written = {}
    if args.previews:
        from workers.io.previews import write_previews

        written = write_previews(args.previews, iobs=result.intensity_crop, obj=result.obj, support=result.support,
                                 mask=result.mask_crop, stem=out.stem,
                                 title=f"{out.name}: CNN ({model.name}) + ER**{args.refine}")
        from workers.io.previews import intensity_preview, save_png

        rgb = intensity_preview(result.intensity_cnn, result.phase_cnn, None,
                                title=f"{out.name}: 64³ input and the CNN's reciprocal phase")
        written["cnn"] = save_png(rgb, f"{args.previews}/{out.stem + '_' if out.stem else ''}cnn_phase.png")
    if not args.quiet:
        print(f"front end: {result.frontend.summary()}")
        for w in result.frontend.warnings:
            print(f"warning: {w}", file=sys.stderr)
        llk = result.llk
        print(f"wrote {out}; crop {result.intensity_crop.shape} at {result.crop_offsets}; "
              f"{int(result.support.sum())} support voxels; LLK {llk.get('llk_poisson', float('nan')):.4g} "
              f"(free {llk.get('llk_poisson_free', float('nan')):.4g}, photon scale {llk.get('llk_scale', 1.0):.4g}); "
              + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
              + ("; previews " + ", ".join(str(p) for p in written.values()) if written else ""))
    return 0
