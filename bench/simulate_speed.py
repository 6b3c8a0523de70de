"""Simulator throughput: samples per second in one process and through a 2-worker DataLoader (training's path).

    .venv/bin/python bench/simulate_speed.py [--n 60]
Target (foundation issue): at least 10 samples/s on the 2-core machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import command_line, machine, write_section  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="samples per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from models.data import SimulatedPatterns
    from physics.simulate import simulate_sample

    simulate_sample(0)
    single, loader = [], []
    for r in range(args.repeats):
        t = time.perf_counter()
        for i in range(args.n):
            simulate_sample(r * args.n + i)
        single.append(args.n / (time.perf_counter() - t))
        dl = DataLoader(SimulatedPatterns(r * args.n, args.n), batch_size=4, num_workers=2)
        t = time.perf_counter()
        for _ in dl:
            pass
        loader.append(args.n / (time.perf_counter() - t))
    body = (f"Command: `{command_line()}`; machine: {machine()}; torch {torch.__version__}.\n\n"
            "| path | samples/s, median of %d | min | max |\n|---|---:|---:|---:|\n" % args.repeats
            + f"| `simulate_sample` in one process | {np.median(single):.1f} | {min(single):.1f} | {max(single):.1f} |\n"
            + f"| DataLoader, 2 workers, with log-normalisation (training input) | {np.median(loader):.1f} | "
              f"{min(loader):.1f} | {max(loader):.1f} |\n\n"
            + f"Target ≥ 10 samples/s: {'met' if np.median(loader) >= 10 else 'MISSED'} "
              f"({np.median(loader) / 10:.1f}× the target through the DataLoader).")
    print(body)
    if not args.no_doc:
        write_section("Simulator throughput", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
