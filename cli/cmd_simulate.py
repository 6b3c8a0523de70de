"""`bcdi-recon simulate`: write simulated strained-crystal BCDI patterns (one .npz, or a set in one HDF5 file)."""
from __future__ import annotations

import argparse
import math
import sys

HELP = "simulate strained-crystal BCDI patterns with a known answer (training/test data)"

DESCRIPTION = """\
Simulate Bragg CDI patterns of faceted crystals carrying a strong strain phase field, with Poisson noise.
Each sample is drawn at random from the given ranges, deterministically from its seed (sample i uses
seed S+i). The answer is stored with the data: the true reciprocal-space phase, the real-space object and
its support.

One sample (--n 1) goes to an .npz file with arrays
  intensity (float32 counts, masked voxels 0), intensity_clean, mask (bool, True = masked),
  phase (float32 true reciprocal phase, rad), object (complex64), support (bool),
  and scalars phase_range, oversampling, peak_counts, shape_kind, field_kind, seed.
A set (any --n, .h5 output) goes to one HDF5 file with the same names stacked along a first axis.
All arrays are centred (Bragg peak / crystal centre at index n//2)."""

EPILOG = """\
examples:
  bcdi-recon simulate --out crystal.npz --seed 7
  bcdi-recon simulate --out train.h5 --n 2000 --seed 0 --gaps
  bcdi-recon simulate --out weak.h5 --n 100 --peak-counts 1e3,1e5 --phase-range 4,8
  bcdi-recon phase crystal.npz --out crystal.cxi      # then phase it"""


def _pair(text: str, name: str) -> tuple[float, float]:
    """Parse 'a,b' (or a single 'a' meaning a,a) into two finite floats with a <= b."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{name} must be 'a,b' or 'a', got {text!r}")
    try:
        a, b = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be numbers 'a,b', got {text!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a > b:
        raise argparse.ArgumentTypeError(f"{name} must be finite with a <= b, got {text!r}")
    return a, b


def _names(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def register(subparsers) -> None:
    """Add the `simulate` subcommand."""
    p = subparsers.add_parser("simulate", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output: FILE.npz for one sample, FILE.h5 (or .hdf5) for a set")
    p.add_argument("--n", type=int, default=1, metavar="N", help="number of samples (default 1; N > 1 needs .h5)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the first sample (default 0)")
    p.add_argument("--size", type=int, default=64, metavar="N", help="grid size N³ (default 64, at least 16)")
    p.add_argument("--phase-range", type=lambda t: _pair(t, "--phase-range"), default=(2.0, 5.0), metavar="A,B",
                   help="range of the phase (max - min inside the crystal) in units of π: a value is drawn "
                        "uniformly in [A·π, B·π] per sample (default 2,5 i.e. 2π..5π: highly strained)")
    p.add_argument("--oversampling", type=lambda t: _pair(t, "--oversampling"), default=(2.2, 4.0),
                   metavar="A,B", help="oversampling ratio per axis (grid size / crystal extent), drawn "
                                       "uniformly in [A, B] (default 2.2,4.0; A >= 2)")
    p.add_argument("--peak-counts", type=lambda t: _pair(t, "--peak-counts"), default=(1e4, 1e7), metavar="A,B",
                   help="photon count at the Bragg peak, drawn log-uniformly in [A, B] (default 1e4,1e7)")
    p.add_argument("--shapes", type=_names, default=None, metavar="LIST",
                   help="crystal shapes to draw from, comma-separated (default: wulff,winterbottom,cube)")
    p.add_argument("--fields", type=_names, default=None, metavar="LIST",
                   help="strain phase fields to draw from, comma-separated (default: gaussians,cosines,grf)")
    p.add_argument("--gaps", action="store_true",
                   help="add a masked detector-gap band to every sample (same as --gap-probability 1)")
    p.add_argument("--gap-probability", type=float, default=None, metavar="P",
                   help="probability of a masked detector-gap band per sample (default 0)")
    p.add_argument("--masked-fraction", type=float, default=0.0, metavar="F",
                   help="fraction of isolated masked voxels (hot/dead pixels), e.g. 0.001 (default 0)")
    p.add_argument("--no-noise", action="store_true", help="no Poisson noise (intensity = intensity_clean)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    p.set_defaults(func=run)


def run(args) -> int:
    """Validate the options, simulate, write atomically; returns the exit code."""
    from physics.errors import InputError
    from workers.io.formats import check_output_path

    out = check_output_path(args.out, suffixes=(".npz", ".h5", ".hdf5"), what="simulation output")
    is_set = out.suffix.lower() in (".h5", ".hdf5")
    if args.n < 1:
        raise InputError(f"--n must be >= 1, got {args.n}")
    if args.n > 1 and not is_set:
        raise InputError(f"{out}: {args.n} samples need an HDF5 output (.h5); .npz holds one sample")
    if args.size < 16:
        raise InputError(f"--size must be >= 16, got {args.size}")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    gap_p = 1.0 if args.gaps else (args.gap_probability if args.gap_probability is not None else 0.0)
    if not 0.0 <= gap_p <= 1.0:
        raise InputError(f"--gap-probability must be in [0, 1], got {gap_p}")
    if not 0.0 <= args.masked_fraction < 1.0:
        raise InputError(f"--masked-fraction must be in [0, 1), got {args.masked_fraction}")

    import numpy as np
    from physics.simulate import SimParams, simulate_sample

    kwargs = dict(size=args.size, phase_range=(args.phase_range[0] * np.pi, args.phase_range[1] * np.pi),
                  oversampling=args.oversampling, peak_counts=args.peak_counts,
                  gap_probability=gap_p, masked_fraction=args.masked_fraction, noise=not args.no_noise)
    if args.shapes is not None:
        kwargs["shapes"] = args.shapes
    if args.fields is not None:
        kwargs["fields"] = args.fields
    params = SimParams(**kwargs)  # names a bad range with an OptionsError (an InputError)

    if not is_set:
        from workers.io.formats import atomic_path

        sample = simulate_sample(args.seed, params)
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **sample)
        if not args.quiet:
            print(f"wrote {out}: 1 sample {args.size}³, seed {args.seed}, {sample['shape_kind']} crystal, "
                  f"{sample['field_kind']} field, phase range {float(sample['phase_range']) / np.pi:.2f}π, "
                  f"peak {float(sample['peak_counts']):.3g} counts")
        return 0

    from dataclasses import asdict

    from tqdm import tqdm

    from workers.io.samples import save_set

    seeds = range(args.seed, args.seed + args.n)
    bar = tqdm(seeds, total=args.n, desc="simulate", unit="sample", disable=True if args.quiet else None,
               file=sys.stderr)
    samples = (simulate_sample(s, params) for s in bar)
    meta = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(params).items()}
    meta["first_seed"] = args.seed
    try:
        count = save_set(out, samples, n=args.n, params=meta)
    finally:
        bar.close()
    if not args.quiet:
        print(f"wrote {out}: {count} samples {args.size}³, seeds {args.seed}..{args.seed + args.n - 1}")
    return 0
