"""`bcdi-recon evaluate`: the paper's comparison on held-out simulated crystals (CNN, CNN+ER, standard recipe)."""
from __future__ import annotations

import argparse

HELP = "compare CNN-only, CNN+ER, adaptive and the standard multi-run recipe on held-out simulated crystals"

DESCRIPTION = """\
Reconstructs held-out simulated crystals (test seeds never used in training or validation) with
  (a) the CNN alone, (b) CNN + 400 ER with border-restricted support updates,
  (b+) CNN + RAAR**200 + the same 400 ER (our variant: ER alone stagnates from a weak CNN start),
  (b*) the true reciprocal phase + (b)'s refinement (a perfect CNN: the upper bound of (b)), and
  (c) the standard recipe HIO**400,RAAR**1000,ER**300, 20 runs, best 5 by free LLK, first mode, and
  adaptive, the default method of `reconstruct` and the service ((b+) judged by the data-only quality gate,
  then standard runs one at a time until one passes; its records also hold ok / uncertain),
compares each with the truth (twin / sub-voxel shift / phase aligned: phase RMSE, IoU of the crystal's shape) and with the
data (LLK, free LLK on the same withheld voxels), and reports per phase-range bin (< π, π-2π, 2π-5π): success
rate (phase RMSE <= 0.5 rad and IoU >= 0.7), medians and wall time per crystal.
Results are appended per crystal to bench/results/*.jsonl, so the command resumes where it stopped; (c) does
not depend on the model and is reused. --report writes the tables into docs/benchmarks.md.
--size 128 (or 128x256x256) runs the same crystals as a detector writes them (that size, oversampling 3-6)
through the front end (crop and binning chosen by physics), compared with the truth on each crop's grid;
those results go to files named with the size, and the report checks them against the 64³ ones.
(c) costs ~20 x 1700 ER/HIO/RAAR cycles per crystal: about 2 minutes per crystal on one core of the
project's 2-core CPU, so run one process per core with --shard 0/2 and --shard 1/2."""


EPILOG = """\
examples:
  bcdi-recon evaluate --n-high 10 --n-low 5 --methods cnn cnn_er     # a quick look, CNN methods only
  bcdi-recon evaluate --n-high 20 --n-low 10 --methods adaptive      # the default method, gate included
  bcdi-recon evaluate --shard 0/2 & bcdi-recon evaluate --shard 1/2  # the full comparison, one process per core
  bcdi-recon evaluate --n-high 8 --n-low 0 --size 128 --methods cnn_er adaptive  # the front end too
  bcdi-recon evaluate --report                                       # tables into docs/benchmarks.md"""


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-high", type=int, default=100, help="crystals with phase range 2π-5π (default %(default)s)")
    p.add_argument("--n-low", type=int, default=30, help="crystals with phase range under π (default %(default)s)")
    from bench.evaluation import METHODS  # one list of methods for the CLI and the bench (numpy only, no torch)

    p.add_argument("--methods", nargs="+", default=None, choices=METHODS,
                   help="which methods to run (default: all; all but oracle_er at a --size other than 64)")
    p.add_argument("--size", default="64",
                   help="pattern size: 64 (default), N (N³) or AxBxC (e.g. 128 or 128x256x256): the same crystals "
                        "as a detector writes them (oversampling 3-6), cropped by the front end; oracle_er: 64 only")
    p.add_argument("--model", help="weights file (default: the shipped model)")
    p.add_argument("--nb-run", type=int, default=20, help="standard recipe: runs per crystal (default %(default)s)")
    p.add_argument("--nb-keep", type=int, default=5, help="standard recipe: runs kept (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default %(default)s)")
    p.add_argument("--shard", default="0/1", metavar="K/N",
                   help="only crystals K, K+N, ...: start N processes (K = 0..N-1) to use N cores (default all)")
    p.add_argument("--report", action="store_true", help="only write the docs/benchmarks.md section")
    p.set_defaults(func=run)


def run(args) -> int:
    from bench.evaluation import run_evaluation

    return run_evaluation(n_high=args.n_high, n_low=args.n_low, methods=args.methods, model=args.model,
                          nb_run=args.nb_run, nb_keep=args.nb_keep, threads=args.threads, shard=args.shard,
                          report_only=args.report, size=args.size)
