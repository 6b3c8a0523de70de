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
  2. the Bragg peak is found (maximum, then box, then centre of mass) and an FFT-friendly box is cropped
     around it (a 64³ input is used as it is);
  3. the crop is resized to 64³ and normalised (log(I+1), min-max);
  4. the CNN predicts the reciprocal-space phase;
  5. the measured modulus with that phase is inverse-FFT'd into a first object;
  6. the object is put back on the crop grid and scaled to the data;
  7. --refine ER cycles refine it (default 400), with support updates every --update-period cycles that may
     only move voxels within --border-n of the support border (threshold starts at --threshold x rms).
     --pre-recipe RAAR**200 runs 200 RAAR cycles (same support rule) before them: from a weak CNN start
     it escapes ER's stagnation (see docs/benchmarks.md, method b+); the default is the paper's ER only.

INPUT is a centred 3D intensity (.npy, .npz[:KEY], .tif, .cxi/.h5[:/dataset], as for `phase`), or an ID01
BLISS dataset file with --scan (frames, masks and metadata read from the file; detector auto-detected).
The CXI holds the object on the crop grid with the crop offsets, the support, the cropped intensity and
mask, the options, the device used, LLK / free LLK / obj2_out and the per-stage timings (the CNN's 64³
phase is not stored; --previews DIR draws it, and the service's Tiled result holds it).
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
    p.add_argument("--scan", help="ID01 scan entry, e.g. 1.1 (INPUT is then a BLISS dataset or master "
                                            "file; default: none, INPUT is a plain intensity file)")
    p.add_argument("--detector", help="ID01 detector (mpx1x4, mpxgaas, eiger2M); default: auto-detected")
    p.add_argument("--mask", help="mask file[:dataset] (nonzero = masked), for plain intensity inputs "
                                            "(default: INPUT's companion mask, if any)")
    p.add_argument("--model", help="weights file (default: the shipped model)")
    p.add_argument("--refine", type=int, default=400, help="ER refinement cycles, 0 = CNN only (default %(default)s)")
    p.add_argument("--pre-recipe", default="", metavar="RECIPE",
                   help="HIO/RAAR cycles before the ER, e.g. RAAR**200 (default: none, the paper's ER only)")
    p.add_argument("--update-period", type=int, default=20, help="support update period (default %(default)s)")
    p.add_argument("--border-n", type=int, default=2, help="support may change within n voxels of its border "
                                                          "(default %(default)s)")
    p.add_argument("--threshold", type=float, default=0.25, help="support threshold relative to the rms of the "
                                                                  "smoothed modulus (default %(default)s)")
    p.add_argument("--crop-size", type=int, help="crop box size around the peak (default: largest centred box; "
                                                 "64³ inputs are not cropped)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N "
                                                    "(default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the free-voxel draw (default %(default)s)")
    p.add_argument("--previews", metavar="DIR", help="also write PNG previews into DIR (default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def _read_input(args):
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

    iobs = read_intensity(args.input)
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
    from physics.phasing import device_name, resolve_device

    device = str(resolve_device(args.device))  # before any reading: --device tpu is a one-line error
    device_label = device_name(device)
    t0 = time.perf_counter()
    iobs, mask, meta = _read_input(args)
    t_read = time.perf_counter() - t0

    from models.predict import load_model
    from workers.pipeline import ReconOptions, reconstruct

    opts = ReconOptions(refine=args.refine, pre_recipe=args.pre_recipe, update_period=args.update_period,
                        border_n=args.border_n, threshold=args.threshold, crop_size=args.crop_size,
                        device=device, seed=args.seed)
    t = time.perf_counter()
    model = load_model(args.model, device=device)
    t_model = time.perf_counter() - t

    from tqdm import tqdm

    bar = tqdm(total=100, desc="reconstruct", unit="%", disable=True if args.quiet else None, file=sys.stderr,
               leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}|")
    weights = {"preprocess": 2, "cnn": 8, "ifft": 2, "refine": 88}
    base = {"preprocess": 0, "cnn": 2, "ifft": 10, "refine": 12}

    def progress(stage: str, fraction: float) -> None:
        bar.n = int(base[stage] + weights[stage] * fraction)
        bar.set_description_str(f"reconstruct ({stage})", refresh=True)

    try:
        result = reconstruct(iobs, mask, model.predict_phase, opts, progress=progress)
    finally:
        bar.close()

    from workers.io.cxi import write_cxi

    timings = {"read_s": t_read, "model_load_s": t_model, **{f"{k}_s": v for k, v in result.timings.items()}}
    process = {"pipeline": "cnn+er", "engine": "builtin", "recipe": f"ER**{args.refine}",
               "model": model.name, "model_sha256": model.sha256, "input": args.input,
               "scan": args.scan or "", "detector": meta.get("detector", args.detector or ""),
               "crop_offsets": list(result.crop_offsets), "input_shape": list(result.input_shape),
               "device_used": device_label,
               **{k: v for k, v in result.options.items() if v is not None}}
    results = {**{k: v for k, v in result.llk.items() if isinstance(v, (int, float))}, "timings": timings,
               "support_size": int(result.support.sum())}
    write_cxi(out, result.obj, result.support, iobs=result.intensity_crop, mask=result.mask_crop,
              process=process, results=results, free_mask=result.free_mask, crop_offsets=result.crop_offsets,
              command="bcdi-recon " + " ".join(sys.argv[1:]))
    written = {}
    if args.previews:
        from workers.io.previews import preview_geometry, write_previews

        geometry = preview_geometry(meta, result.intensity_crop.shape)  # ID01 scans: nm / Å⁻¹ axes, else pixels
        written = write_previews(args.previews, iobs=result.intensity_crop, obj=result.obj, support=result.support,
                                 mask=result.mask_crop, stem=out.stem, geometry=geometry,
                                 title=f"{out.name}: CNN ({model.name}) + ER**{args.refine}")
        from workers.io.previews import intensity_preview, save_png

        rgb = intensity_preview(result.intensity_cnn, result.phase_cnn, None, geometry=geometry,
                                title=f"{out.name}: 64³ input and the CNN's reciprocal phase")
        written["cnn"] = save_png(rgb, f"{args.previews}/{out.stem + '_' if out.stem else ''}cnn_phase.png")
    if not args.quiet:
        llk = result.llk
        print(f"wrote {out} on {device_label}; crop {result.intensity_crop.shape} at {result.crop_offsets}; "
              f"{int(result.support.sum())} support voxels; LLK {llk.get('llk_poisson', float('nan')):.4g} "
              f"(free {llk.get('llk_poisson_free', float('nan')):.4g}); "
              + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
              + ("; previews " + ", ".join(str(p) for p in written.values()) if written else ""))
    return 0
