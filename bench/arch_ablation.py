"""Architecture ablation at a fixed CPU budget: which UNet learns the most phase coherence per CPU-hour here.

    .venv/bin/python -m bench.arch_ablation run [--budget-cpu-s 600] [--only NAME ...]
    .venv/bin/python -m bench.arch_ablation report

Every candidate trains from the same initial seed on the same simulated samples (training seeds from
models.data.TRAIN_SEED0, in the same order), one torch thread, batch 4, Adam lr 3e-4, until its process CPU time
(simulation included) reaches the budget; then the validation WCA loss and median phase coherence on the fixed
validation seeds. CPU time rather than wall time is the budget, so that a shared machine treats every candidate
alike. Results are appended to bench/results/arch_ablation.jsonl (one line per candidate and budget, resumable).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

from bench.common import machine, write_section

RESULTS_NAME = "arch_ablation.jsonl"
SECTION = "Architecture ablation at a fixed CPU budget"
# name -> (unet options, curriculum): the shipped layout and the candidates
CANDIDATES = {
    "shipped": ({}, False),
    "3x3x3 at 64³": ({"final_kernel": 3, "full_res_kernel": 3}, False),
    "wider 64³ path": ({"min_branch": 4, "min_final": 8}, False),
    "coordinate channels": ({"coords": True}, False),
    "(cos, sin) output": ({"output": "cossin"}, False),
    "curriculum (< 2π first half)": ({}, True),
}


def train_candidate(options: dict, curriculum: bool, budget_cpu_s: float, n_val: int, width: float = 0.125,
                    batch: int = 4, lr: float = 3e-4) -> dict:
    """Train one candidate until budget_cpu_s of process CPU time; returns its figures."""
    import numpy as np
    import torch

    from models.data import TRAIN_SEED0, sample_to_tensors
    from models.loss import wca_per_sample
    from models.train import cpu_seconds, evaluate_loss, validation_set
    from models.unet import build_unet, count_parameters
    from physics.simulate import SimParams, simulate_sample

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_unet(width, **options).to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    full, easy = SimParams(), SimParams(phase_range=(0.5 * math.pi, 2 * math.pi))
    c0, w0, i, steps = cpu_seconds(), time.perf_counter(), 0, 0
    while cpu_seconds() - c0 < budget_cpu_s:
        params = easy if curriculum and cpu_seconds() - c0 < budget_cpu_s / 2 else full
        xs, ys = zip(*(sample_to_tensors(simulate_sample(TRAIN_SEED0 + i + k, params)) for k in range(batch)))
        i += batch
        x = torch.stack(xs).contiguous(memory_format=torch.channels_last_3d)
        loss = wca_per_sample(model(x).float(), torch.stack(ys), x.float()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    cpu, wall = cpu_seconds() - c0, time.perf_counter() - w0
    xv, yv = validation_set(n_val, full)
    val, coh = evaluate_loss(model, xv, yv, torch.device("cpu"), memory_format=torch.channels_last_3d,
                             coherence=True)
    return {"parameters": count_parameters(model), "steps": steps, "samples": steps * batch, "cpu_s": cpu,
            "wall_s": wall, "samples_per_cpu_h": 3600 * steps * batch / cpu, "val_wca": val,
            "val_coherence": coh, "n_val": n_val, "machine": machine()}


def _load(path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def main(argv=None) -> int:
    from bench.cnn_eval import RESULTS, _append

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train the missing candidates (resumable)")
    r.add_argument("--budget-cpu-s", type=float, default=600.0, help="CPU seconds per candidate (default 600)")
    r.add_argument("--n-val", type=int, default=16, help="validation samples (default 16)")
    r.add_argument("--only", nargs="+", choices=list(CANDIDATES), help="candidates to run (default all)")
    sub.add_parser("report", help="write the docs/benchmarks.md section")
    args = ap.parse_args(argv)
    path = RESULTS / RESULTS_NAME
    if args.cmd == "run":
        done = {(d["name"], d["budget_cpu_s"]) for d in _load(path)}
        for name in args.only or list(CANDIDATES):
            if (name, args.budget_cpu_s) in done:
                continue
            opts, cur = CANDIDATES[name]
            rec = train_candidate(opts, cur, args.budget_cpu_s, args.n_val)
            _append(path, {"name": name, "options": opts, "curriculum": cur, "budget_cpu_s": args.budget_cpu_s,
                           **rec})
            print(f"{name}: {rec['samples']} samples, val WCA {rec['val_wca']:.4f}, "
                  f"val coherence {rec['val_coherence']:.3f}", flush=True)
        return 0
    rows = _load(path)
    lines = ["Command: `.venv/bin/python -m bench.arch_ablation run --budget-cpu-s B` then `... report`. Each "
             "candidate trains from scratch (same initial seed, same training samples in the same order, 1 thread, "
             "batch 4, Adam 3e-4) for B seconds of process CPU time, simulation included; then the WCA loss and the "
             "median phase coherence on the first n validation seeds.", "",
             "| candidate | CPU budget s | parameters | samples seen | samples per CPU-hour | val WCA | "
             "val coherence |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {d['name']} | {d['budget_cpu_s']:.0f} | {d['parameters']:,} | {d['samples']} | "
              f"{d['samples_per_cpu_h']:,.0f} | {d['val_wca']:.4f} | {d['val_coherence']:.3f} |" for d in rows]
    missing = [n for n in CANDIDATES if n not in {d["name"] for d in rows}]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)} (`run --only ...` resumes)."]
    budgets = sorted({d["budget_cpu_s"] for d in rows})
    if budgets and max(budgets) < 3600:
        lines += ["", f"A budget of {max(budgets):.0f} CPU s is a few hundred samples: it measures the cost per sample "
                  "reliably, but the coherence after it is within the noise of a 16-sample validation set, so it "
                  "does not rank the candidates' learning yet."]
    write_section(SECTION, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
