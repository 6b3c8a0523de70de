"""`bcdi-recon train`: train the phase UNet on simulated patterns generated on the fly (resumable)."""
from __future__ import annotations

import argparse

HELP = """Train the reciprocal-phase UNet with the WCA loss on simulated, highly strained 64³ patterns.

Samples are simulated on the fly (the seed is a function of the sample index), validation uses a fixed
held-out seed range. Every --val-every steps the run directory gets: checkpoint.pt (resume point, written
atomically), learning_curve.csv and learning_curve.png. Running the same command again resumes from the
checkpoint, so a killed run loses at most --val-every steps; pass a larger --steps to extend a finished run.
A resume keeps the stored architecture and data settings but takes --lr, so a lower --lr is a step decay.
On CUDA, bf16 autocast is on (--no-amp to disable); multi-GPU: torchrun --nproc_per_node=N -m cli.main train ...
Export the best weights with --export models/weights/NAME.pt."""


EPILOG = """\
examples:
  bcdi-recon train --out runs/w0125 --steps 20000                       # CPU or CUDA (auto)
  bcdi-recon train --out runs/w0125 --steps 30000 --lr 3e-5            # resume, extend, lower the rate
  bcdi-recon train --out runs/w0125 --steps 20000 --export models/weights/mine.pt  # then export the best"""


def _pair(text: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers 'a,b', got {text!r}") from None
    return a, b


def register(sub) -> None:
    p = sub.add_parser("train", help="train the phase UNet on simulated data", description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/unet", help="run directory (checkpoint, learning curve); default %(default)s")
    p.add_argument("--width", type=float, default=0.125, help="width multiplier w (1 = paper, 143.8M params); default %(default)s")
    p.add_argument("--steps", type=int, default=10_000, help="total optimiser steps; default %(default)s")
    p.add_argument("--batch", type=int, default=4, help="samples per step (per GPU with DDP); default %(default)s")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate; default %(default)s")
    p.add_argument("--val-every", type=int, default=100, help="steps between validation + checkpoint; default %(default)s")
    p.add_argument("--n-val", type=int, default=32, help="held-out validation samples; default %(default)s")
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes simulating data; default %(default)s")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N; default %(default)s")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    p.add_argument("--phase-range", type=_pair, default=None, metavar="A,B",
                   help="phase range inside the crystal, in units of pi (default 2,5)")
    p.add_argument("--export", default=None, metavar="PATH", help="after training, write the best weights here (.pt; default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import math
    import os

    from models.data import params_to_dict
    from models.train import TrainConfig, export_weights, train
    from physics.errors import InputError
    from physics.simulate import SimParams

    for name in ("steps", "batch", "val_every", "n_val"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr <= 0 or args.width <= 0:
        raise InputError("--lr and --width must be positive")
    sim = SimParams() if args.phase_range is None else SimParams(
        phase_range=(args.phase_range[0] * math.pi, args.phase_range[1] * math.pi))
    cfg = TrainConfig(out=args.out, width=args.width, steps=args.steps, batch=args.batch, lr=args.lr,
                      val_every=args.val_every, n_val=args.n_val, workers=args.workers, device=args.device,
                      amp=not args.no_amp, threads=args.threads, sim=params_to_dict(sim))
    summary = train(cfg, progress=not args.quiet)  # its option checks raise InputError (OptionsError)
    if os.environ.get("RANK", "0") != "0":
        return 0  # one summary per torchrun job
    print(f"trained to step {summary['step']}, best validation WCA loss {summary['best_val']:.4f} -> {summary['out']}")
    if args.export:
        export_weights(f"{args.out}/checkpoint.pt", args.export)
        print(f"weights written to {args.export}")
    return 0
