"""CNN inference time per 64³ pattern for the shipped model (torch CPU, channels_last_3d), 1 and 2 threads.

    .venv/bin/python bench/inference_speed.py [--repeats 20]
Target (CNN issue): at most 0.5 s per pattern on this CPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import command_line, machine, median_time, write_section  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--model", default=None)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    import torch

    from models.predict import load_model
    from physics.simulate import simulate_sample

    m = load_model(args.model)
    s = simulate_sample(2_000_000)["intensity"]
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        t = median_time(lambda: m.predict_phase(s), args.repeats, warmup=3)
        rows.append(f"| {threads} | {t:.3f} | {'met' if t <= 0.5 else 'MISSED'} |")
    body = (f"Command: `{command_line()}`; machine: {machine()}; model `{m.name}` (sha256 {m.sha256[:12]}, width "
            f"{m.arch_config['width']}), batch 1, channels_last_3d, median of {args.repeats} after 3 warm-ups.\n\n"
            "| torch threads | s per 64³ pattern | target ≤ 0.5 s |\n|---:|---:|---|\n" + "\n".join(rows))
    print(body)
    if not args.no_doc:
        write_section("CNN inference time", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
