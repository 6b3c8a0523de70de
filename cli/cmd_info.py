"""`bcdi-recon info`: what the front end sees in a pattern: oversampling per axis, Bragg peak, photons, the crop."""
from __future__ import annotations

import argparse

HELP = "oversampling per axis, Bragg peak and photon count of a 3D intensity or an ID01 scan, and the crop chosen"

DESCRIPTION = """\
Measures, from the data alone:
  - the oversampling ratio per axis (z, y, x) = (rocking, detector row, detector column): twice the array size
    over the extent of the intensity's autocorrelation above its Poisson noise floor (physics.oversampling);
    under 2 the data are undersampled on that axis and phase retrieval cannot work;
  - the Bragg peak voxel (maximum, then box centre of mass, masked voxels excluded);
  - the photon count (sum outside the mask, in photons when the intensities are not integer counts) and the
    photon scale used for the Poisson LLK;
and prints the crop `reconstruct` would choose for the model (so that the CNN's 64³ grid sees an oversampling
inside the model's training range), with binning or Fourier resampling per axis.
INPUT is a 3D intensity file (as for `reconstruct`) or an ID01 BLISS file with --scan."""

EPILOG = """\
examples:
  bcdi-recon info crystal.npz
  bcdi-recon info PtNP_0001.h5 --scan 1.1
  bcdi-recon info data.cxi --background 0.5 --negative clip"""


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="3D intensity file[:dataset], or an ID01 BLISS .h5 with --scan")
    p.add_argument("--scan", help="ID01 scan entry, e.g. 1.1 (default: none, a plain intensity file)")
    p.add_argument("--detector", help="ID01 detector (default: auto-detected)")
    p.add_argument("--mask", help="mask file[:dataset] (nonzero = masked), for plain intensity inputs (default: INPUT's companion mask, if any)")
    p.add_argument("--model", help="weights file whose training range sets the crop (default: the shipped model)")
    from cli.cmd_reconstruct import add_option_flags
    from contract.options import FRONTEND_FIELDS

    add_option_flags(p, FRONTEND_FIELDS)  # --crop-size, --background, ...: the options schema's, as `reconstruct`
    p.add_argument("--json", action="store_true", help="print the front end's decisions as JSON (default: a readable summary)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    import numpy as np

    from cli.cmd_reconstruct import _read_input, options_from_args
    from contract.options import FRONTEND_FIELDS
    from physics.preprocess import FrontEndOptions, prepare
    from workers.frontend import training_oversampling

    opts = FrontEndOptions.from_options(options_from_args(args, FRONTEND_FIELDS))  # bad options: before reading
    iobs, mask, meta = _read_input(args, allow_negative=opts.negative != "error")
    if args.model:
        from models.predict import load_model

        rng, source = training_oversampling(load_model(args.model))
    else:
        from models.predict import DEFAULT_WEIGHTS, load_model

        rng, source = training_oversampling(load_model(DEFAULT_WEIGHTS))
    prep = prepare(iobs, mask, rng, opts, training_range_source=source)
    fe = prep.frontend
    valid = ~mask if mask is not None else np.ones(iobs.shape, bool)
    photons = float(np.clip(np.where(valid, iobs, 0), 0, None).sum(dtype=np.float64) * fe.photon_scale)
    if args.json:
        print(json.dumps({**fe.metadata(), "photons": photons, "input": meta.get("file") or args.input},
                         default=float))
        return 0
    axes = ("z (rocking)", "y (detector row)", "x (detector column)")
    print(f"{args.input}{' scan ' + args.scan if args.scan else ''}: shape {tuple(iobs.shape)}, "
          f"{int((~valid).sum())} masked voxels")
    for i, name in enumerate(axes):
        print(f"  {name:20s} oversampling {fe.oversampling[i]:5.2f}  peak at {fe.peak[i]:4d}  crop "
              f"{fe.crop_shape[i]:4d}  -> 64 by "
              + ("Fourier resampling" if fe.cnn_resampled[i] else
                 (f"binning x{fe.cnn_binning[i]}" if fe.cnn_binning[i] > 1 else "no change"))
              + f"  (the CNN sees {fe.oversampling_cnn[i]:.2f})")
    print(f"  photons {photons:.4g}; peak voxel {float(iobs[fe.peak] * fe.photon_scale):.4g}; photon scale "
          f"{fe.photon_scale:.4g} ({fe.photon_scale_source})")
    print(f"  model training range {fe.training_range[0]:g}-{fe.training_range[1]:g} ({fe.training_range_source})")
    for w in fe.warnings:
        print(f"  warning: {w}")
    return 0
