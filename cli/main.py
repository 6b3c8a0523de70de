"""The `bcdi-recon` command: one subcommand per cli/cmd_<name>.py module, each exposing register(subparsers).

Subcommand modules are imported only if their file exists and import nothing heavy at module level, so
`bcdi-recon --help` stays fast (no torch). Bad input (physics.errors.InputError and its family, raised where the
input is read or validated) surfaces as one line `bcdi-recon: error: ...` on stderr, exit code 2; anything else
is a bug or an outage: `bcdi-recon: internal error: ...`, exit code 1. No traceback either way (`--traceback`
shows it, for debugging).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

PROG = "bcdi-recon"

# Order shown in --help: the data path from simulation to service.
COMMANDS = ("simulate", "phase", "train", "info", "reconstruct", "evaluate", "demo", "serve", "worker", "watch",
            "fetch")

EXIT_INPUT = 2
EXIT_INTERRUPTED = 130

DESCRIPTION = """\
CNN-assisted phase retrieval for Bragg coherent diffraction imaging (BCDI) of highly strained crystals.

Arrays are centred (Bragg peak / object centre at index n//2), axes (z, y, x) = (rocking, detector row,
detector column); the FFT is unitary. Run `bcdi-recon COMMAND --help` for each command's options."""

EPILOG = """\
examples:
  bcdi-recon simulate --out crystal.npz --seed 3
  bcdi-recon simulate --out train.h5 --n 1000 --gaps
  bcdi-recon phase crystal.npz --out crystal.cxi --previews previews/

exit codes: 0 success, 1 unexpected failure, 2 bad input or options, 130 interrupted.
Errors are one line; --traceback (or BCDI_RECON_TRACEBACK=1) shows the Python traceback instead."""


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are a single stderr line (exit 2), like every other input error."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _unavailable(name: str, reason: str):
    """A placeholder subcommand for a module that exists but cannot be imported (e.g. a missing optional extra)."""

    def register(subparsers):
        p = subparsers.add_parser(name, help=f"(unavailable: {reason})", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)

        def run(args) -> int:
            print(f"{PROG}: error: '{name}' is unavailable here: {reason}", file=sys.stderr)
            return EXIT_INPUT

        p.set_defaults(func=run)

    return register


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every available subcommand registered."""
    parser = OneLineParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--traceback", action="store_true",
                        help="show the Python traceback on errors instead of one line (for debugging)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        module_name = f"cli.cmd_{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        try:
            module = importlib.import_module(module_name)
            register = module.register
        except ImportError as e:  # an optional extra (fastapi, redis, ...) is not installed
            register = _unavailable(name, " ".join(str(e).split()))
        register(subparsers)
    for sub in subparsers.choices.values():  # --traceback works after the subcommand too
        sub.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                         help="show the Python traceback on errors (for debugging)")
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("bcdi-recon")
    except Exception:  # running from a source tree that is not installed
        return "unknown"


def _one_line(err: BaseException) -> str:
    """The error's message on one line (a KeyError's key without quotes, a missing file's name appended)."""
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    else:
        text = str(err)
    text = " ".join(text.split())
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    return text or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the subcommand, turn errors into one line + exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_INPUT
    from physics.errors import InputError

    show_traceback = args.traceback or os.environ.get("BCDI_RECON_TRACEBACK") == "1"
    try:
        code = args.func(args)
        return int(code or 0)
    except KeyboardInterrupt:
        if show_traceback:
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except InputError as e:  # bad user input (the InputError family, physics/errors.py), and only that
        if show_traceback:
            raise
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as e:  # a bug or an outage, not bad input: one line, with a hint to get the traceback
        if show_traceback:
            raise
        print(f"{PROG}: internal error: {type(e).__name__}: {_one_line(e)} "
              f"(rerun with --traceback for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
