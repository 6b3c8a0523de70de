"""`bcdi-recon reconstruct`: CNN phase prediction + border-restricted ER refinement of one Bragg peak -> CXI."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

HELP = ("reconstruct a highly strained crystal: CNN reciprocal phase + ER refinement, standard runs if the quality "
        "gate refuses it -> CXI (+ PNG previews)")

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
  7. --er-cycles ER cycles refine it (default 400) on the crop at full resolution (--refine-binned: on the
     binned 64³ grid), with support updates every --update-period cycles that may only move voxels within
     --border-n of the support border (threshold --support-threshold x rms);
  8. displacement and strain along G are computed from the phase (ramp and offset removed).
     --pre-recipe RAAR**200 runs 200 RAAR cycles (same support rule) before them: from a weak CNN start
     it escapes ER's stagnation (see docs/benchmarks.md, method b+); the default is the paper's ER only.

--method chooses the strategy. adaptive (the default) runs steps 1-8 with RAAR**200 first (method b+) as the
first candidate and judges it by a quality gate computed from the data alone (free LLK, obj2_out less half of
what photon noise alone puts outside the support, mean_to_max, support size against the autocorrelation's; a
candidate with mean_to_max in 0.48-0.55 also needs a candidate from another start that agrees with it); if the
gate refuses it, standard runs (HIO**400,RAAR**1000,ER**300, cohere-style shrink-wrap, seeded from the CNN's
object, the autocorrelation or the CNN's support) follow one at a time until one passes or --max-runs /
--max-seconds are spent. cnn-er is the paper's path alone, cnn-raar-er b+
alone, standard the multi-run recipe. Every result says ok or uncertain (with what to try next).

INPUT is a centred 3D intensity (.npy, .npz[:KEY], .tif, .cxi/.h5[:/dataset], as for `phase`), or an ID01
BLISS dataset file with --scan (frames, masks and metadata read from the file; detector auto-detected).
The CXI holds the object on the crop grid with the crop offsets, the support, the cropped intensity and
mask, the displacement and strain, the options and the recipe that ran, LLK / free LLK / obj2_out and the
per-stage timings and the device used (the CNN's 64³ phase is not stored; --previews DIR draws it, and the
service's Tiled result holds it). --method cnn-er --er-cycles 0 gives the CNN-only object. The options, their names and defaults are the
service's (contract/options.py); --refine and --threshold are the older names of --er-cycles and
--support-threshold. The shipped model is models/weights/unet_w0125.pt (see its model card)."""

EPILOG = """\
examples:
  bcdi-recon reconstruct crystal.npz --out crystal.cxi --previews png/
  bcdi-recon reconstruct PtNP_0001.h5 --scan 1.1 --detector mpx1x4 --out scan1.cxi
  bcdi-recon reconstruct data.tif --out cnn_only.cxi --method cnn-er --er-cycles 0
  bcdi-recon reconstruct crystal.npz --out bplus.cxi --pre-recipe RAAR**200"""


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
    add_option_flags(p)
    p.add_argument("--previews", metavar="DIR", help="also write PNG previews into DIR (default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary (default: both shown)")
    p.set_defaults(func=run)


def _crop_size(text: str):
    """--crop-size N (all axes) or Z,Y,X."""
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or Z,Y,X integers, got {text!r}") from None
    if len(dims) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected one size or three (Z,Y,X), got {text!r}")
    return dims[0] if len(dims) == 1 else dims


def add_option_flags(parser, only: tuple[str, ...] | None = None) -> None:
    """One flag per field of the options schema (contract.options), with its default and help; aliases kept.

    ``only``: just these fields (e.g. `info` takes the front end's, contract.options.FRONTEND_FIELDS)."""
    from contract.options import NEGATIVES, scalar_type, schema_fields

    for f in schema_fields():
        if only is not None and f.name not in only:
            continue
        m = f.metadata
        flags = ("--" + f.name.replace("_", "-"), *m["aliases"])
        if scalar_type(f) is bool:  # a switch: off by default, the flag turns it on
            parser.add_argument(*flags, dest=f.name, action="store_true", default=f.default,
                                help=m["help"].replace("%", "%%"))
            continue
        kw = dict(dest=f.name, default=f.default, metavar=m["metavar"])
        if f.name == "crop_size":
            kw["type"] = _crop_size
        else:
            kw["type"] = scalar_type(f)
            if kw["type"] is not str:
                kw["metavar"] = kw["metavar"] or ("N" if kw["type"] is int else "X")
        if f.name in ("engine", "method", "negative"):
            from contract.options import METHODS

            kw["choices"] = {"method": METHODS, "negative": NEGATIVES}.get(f.name, ("builtin", "torch", "pynx"))
            kw.pop("metavar")
        shown = " (default %(default)s)"
        if f.default in (None, ""):
            shown = "" if "default" in m["help"] else " (default: none)"
        parser.add_argument(*flags, help=m["help"].replace("%", "%%") + shown, **kw)


def options_from_args(args, only: tuple[str, ...] | None = None):
    """The options schema filled from the parsed flags (validated: OptionsError names the field); with ``only``,
    just those fields from the flags and the schema's defaults for the others."""
    from contract.options import ReconOptions, names

    return ReconOptions(**{name: getattr(args, name) for name in (names() if only is None else only)})


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

    opts = options_from_args(args)  # bad options fail before any reading
    out = check_output_path(args.out, suffixes=(".cxi", ".h5"))
    if args.previews:
        from pathlib import Path

        if not Path(args.previews).parent.is_dir():
            raise InputError(f"--previews {args.previews}: parent directory does not exist")
    from physics.phasing import device_name, resolve_device

    device = str(resolve_device(args.device))  # before any reading: --device tpu is a one-line error
    device_label = device_name(device)
    t0 = time.perf_counter()
    iobs, mask, meta = _read_input(args, allow_negative=opts.negative != "error")
    t_read = time.perf_counter() - t0

    from models.predict import load_model
    from workers.pipeline import run_pipeline

    opts = dataclasses.replace(opts, device=device)  # "auto" resolved once; recorded as it ran
    t = time.perf_counter()
    model = load_model(opts.model, device=device)
    t_model = time.perf_counter() - t

    from tqdm import tqdm

    bar = tqdm(total=100, desc="reconstruct", unit="%", disable=True if args.quiet else None, file=sys.stderr,
               leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}|")
    weights = {"preprocess": 2, "cnn": 8, "ifft": 2, "refine": 83, "strain": 5}
    base = {"preprocess": 0, "cnn": 2, "ifft": 10, "refine": 12, "strain": 95}

    def progress(stage: str, fraction: float) -> None:
        # the strategies name their stages "<candidate>:<stage>" or "fallback run K"; those past the CNN
        # path's own stages are shown by name, with the bar held at the refinement's end
        key = stage.rsplit(":", 1)[-1]
        if key in base:
            bar.n = int(base[key] + weights[key] * fraction)
        bar.set_description_str(f"reconstruct ({stage})", refresh=True)

    title = (f"{out.name}: CNN ({model.name}) + {opts.recipe()}" if opts.method in ("cnn-er", "cnn-raar-er")
             else f"{out.name}: {opts.method} (CNN {model.name} first)" if opts.method == "adaptive"
             else f"{out.name}: {opts.method}")
    try:
        done = run_pipeline(iobs, mask, model.predict_phase, opts, scan_meta=meta if args.scan else None,
                            previews=bool(args.previews), title=title, progress=progress)
    finally:
        bar.close()
    result = done.result

    timings = {"read_s": t_read, "model_load_s": t_model, **{f"{k}_s": v for k, v in done.timings.items()}}
    write_result_cxi(out, done, opts, model, device_label, timings, command="bcdi-recon " + " ".join(sys.argv[1:]),
                     source={"input": args.input, "scan": args.scan or "",
                             "detector": meta.get("detector", args.detector or "")})
    written = {}
    if args.previews:
        from pathlib import Path

        from workers.io.previews import intensity_preview, preview_geometry, reciprocal_phase, save_png

        d = Path(args.previews)
        d.mkdir(exist_ok=True)
        stem = out.stem + "_" if out.stem else ""
        geometry = preview_geometry(meta if args.scan else None, result.intensity_crop.shape)  # nm / Å⁻¹ or pixels
        images = {"intensity": intensity_preview(result.intensity_crop, reciprocal_phase(result.obj), result.mask_crop,
                                                 title=title, geometry=geometry),
                  "object": done.previews["preview_object"], "strain": done.previews["preview_strain"],
                  "cnn_phase": done.previews["preview_reciprocal"]}
        written = {name: save_png(rgb, d / f"{stem}{name}.png") for name, rgb in images.items()}
    if not args.quiet:
        print(f"front end: {result.frontend.summary()}")
        for w in result.frontend.warnings:
            print(f"warning: {w}", file=sys.stderr)
        llk = result.llk
        print(f"wrote {out} on {device_label}; crop {result.intensity_crop.shape} at {result.crop_offsets}; "
              f"{int(result.support.sum())} support voxels; LLK {llk.get('llk_poisson', float('nan')):.4g} "
              f"(free {llk.get('llk_poisson_free', float('nan')):.4g}, photon scale {llk.get('llk_scale', 1.0):.4g}); "
              + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
              + ("; previews " + ", ".join(str(p) for p in written.values()) if written else ""))
        print(done.summary)
    if done.confidence.get("status") != "ok":  # the best candidate is written all the same, marked uncertain
        print(f"bcdi-recon: warning: the result is uncertain: "
              f"{done.confidence.get('hint') or 'more runs, a mask or a crop may help'}"
              + ("; or try --method adaptive" if opts.method != "adaptive" else ""), file=sys.stderr)
    return 0


def write_result_cxi(out, done, opts, model, device_label: str, timings: dict, *, command: str, source: dict) -> None:
    """The CXI of one pipeline result (workers.pipeline.run_pipeline), as `reconstruct` and the offline demo write
    it: object, support, crop, mask, free mask, displacement, strain, the crystal's shape (an image of data_type
    "shape", 1 inside), options, recipe, confidence, front end."""
    from workers.io.cxi import write_cxi
    from workers.strategy import flat_confidence

    result = done.result
    process = {"pipeline": opts.method, "recipe": result.recipe,
               "model": model.name, "model_sha256": model.sha256, **source,
               "crop_offsets": list(result.crop_offsets), "input_shape": list(result.input_shape),
               "device_used": device_label,
               **{f"confidence_{k}": v for k, v in flat_confidence(done.confidence).items()},
               **{k: v for k, v in result.options.items() if v is not None},
               "strain_units": done.strain_meta.get("strain_units", ""),
               "displacement_units": done.strain_meta.get("displacement_units", ""),
               **{f"shape_{k}": v for k, v in done.strain_meta.get("shape", {}).items()},
               "frontend": result.frontend.metadata()}
    results = {**{k: v for k, v in result.llk.items() if isinstance(v, (int, float))}, "timings": timings,
               "support_size": int(result.support.sum())}
    write_cxi(out, result.obj, result.support, iobs=result.intensity_crop, mask=result.mask_crop,
              process=process, results=results, free_mask=result.free_mask, crop_offsets=result.crop_offsets,
              command=command,
              derived={"displacement": (done.arrays["displacement"], done.strain_meta.get("displacement_units", "")),
                       "strain": (done.arrays["strain"], done.strain_meta.get("strain_units", "")),
                       "shape": (done.arrays["shape"], "")})
