"""Shared helpers for the benchmarks: timing medians, machine description, one section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
DOC_TITLE = ("# Benchmarks\n\nEach section is written by a script in `bench/` and records the exact command that "
             "produced it.\n")


def command_line() -> str:
    """The command that is running, as one would type it from the repository root."""
    exe = sys.executable
    rel = os.path.relpath(exe, ROOT) if exe.startswith(str(ROOT)) else exe
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return " ".join([rel, script] + [shlex.quote(a) for a in sys.argv[1:]])


def model_tag(model) -> str:
    """How every result file names the weights it used: '<name>-<first 8 hex of the sha256>'."""
    return f"{model.name}-{model.sha256[:8]}"


def machine() -> str:
    """One line describing the CPU, core count and load when the benchmark ran."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores, load average {load:.1f} at the time, {platform.python_version()}"


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() over repeats calls, after warmup calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def write_section(heading: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section '## heading' of docs/benchmarks.md with body; other sections stay untouched."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else DOC_TITLE
    block = f"## {heading}\n\n{body.strip()}\n\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text.rstrip("\n") + "\n")
    tmp.replace(doc)


def print_or_write_section(heading: str, body: str, print_only: bool) -> None:
    """A report command's output: printed (--print) or written as the section '## heading' of docs/benchmarks.md."""
    if print_only:
        print(body)
    else:
        write_section(heading, body)
        print(f"wrote section '{heading}' of docs/benchmarks.md")


def bench_parser(prog: str, doc: str):
    """(parser, subparsers) of a benchmark module run as `python -m prog`, its docstring as the help."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    return p, p.add_subparsers(dest="cmd", required=True)


def add_run_parser(sub, help: str):
    """The `run` subcommand with the options every model-driven benchmark takes (--model, --threads)."""
    r = sub.add_parser("run", help=help)
    r.add_argument("--model", default=None, help="weights (default: the shipped model)")
    r.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as in the evaluations)")
    return r


def add_report_parser(sub):
    """The `report [--print]` subcommand of a benchmark that owns one docs/benchmarks.md section."""
    rep = sub.add_parser("report", help="write the docs/benchmarks.md section")
    rep.add_argument("--print", action="store_true", help="print instead of writing docs/benchmarks.md")
    return rep


def dispatch(args, commands: dict, section: str, report) -> int:
    """Run the chosen subcommand (commands: name -> function of the parsed args), or the report: written as
    `section` of docs/benchmarks.md, or printed with --print."""
    if args.cmd == "report":
        print_or_write_section(section, report(args), args.print)
    else:
        commands[args.cmd](args)
    return 0
