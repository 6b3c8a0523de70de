"""The paper's comparison as one public entry point, `run_evaluation`, for `bcdi-recon evaluate`.

The methods, the per-crystal runs and the report live in bench.cnn_eval; this module is the only part of bench/
that cli/ imports (tests/test_architecture.py checks it). METHODS is re-exported for the CLI's --methods choices.
"""
from __future__ import annotations

import argparse

from bench.cnn_eval import METHODS

__all__ = ["METHODS", "run_evaluation"]


def run_evaluation(*, n_high: int = 100, n_low: int = 30, methods=None, model: str | None = None,
                   nb_run: int = 20, nb_keep: int = 5, threads: int = 1, shard: str = "0/1",
                   report_only: bool = False, size: str = "64") -> int:
    """Run the missing per-crystal results of `methods` (default all) (resumable), then write the
    docs/benchmarks.md sections.

    shard "K/N": only crystals K, K+N, ... (N processes use N cores). size: "64", N or AxBxC, the same crystals
    as a detector writes them, through the front end (bench.cnn_eval). report_only: only write the sections.
    Bad arguments raise InputError with one line.
    """
    from bench import cnn_eval
    from physics.errors import InputError

    if report_only:
        return cnn_eval.main(["report"])
    if n_high < 0 or n_low < 0 or nb_run < 1 or not 1 <= nb_keep <= nb_run:
        raise InputError("--n-high/--n-low must be >= 0 and 1 <= --nb-keep <= --nb-run")
    cnn_eval.parse_size(size)
    unknown = sorted(set(methods or ()) - set(METHODS))
    if unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}")
    try:
        cnn_eval._shard(shard)
    except argparse.ArgumentTypeError as exc:
        raise InputError(f"--shard: {exc}") from None
    argv = ["run", "--n-high", str(n_high), "--n-low", str(n_low), "--nb-run", str(nb_run), "--nb-keep",
            str(nb_keep), "--threads", str(threads), "--shard", shard, "--size", str(size)]
    if methods:
        argv += ["--methods", *methods]
    if model:
        argv += ["--model", model]
    cnn_eval.main(argv)
    return cnn_eval.main(["report"])
