"""A timed GPU training segment (issue 11, item 4): data simulated on the device, a w >= 0.5 UNet in bf16.

One call fits a wall-clock budget (default 8.5 min): it simulates a pool of training patterns on the device
with `physics.simulate_torch` (the "wide" distribution by default), then trains the phase UNet with the WCA
loss under bf16 autocast, refreshing part of the pool with new seeds at every step, and validates on fixed
held-out seeds (WCA loss and reciprocal-phase coherence) at regular times. It writes, for bringing back:
the weights as int8 per-output-channel shards (<= 15 MiB each; a w = 0.5 model is 36 M parameters, 69 MiB in
fp16, more than a file that comes back from the GPU machine may hold), the learning curve (CSV) and a
summary (JSON). A full resumable state (fp32 weights + Adam) is kept beside it in `--state` (too big to bring
back at w = 0.5); `--init` starts from brought-back shards, a weights file or a checkpoint instead.
Imports only torch, numpy and the project's physics/ and models/ modules (no scipy, no h5py), so it runs
with nothing but the GPU machine's own PyTorch. On a CPU it runs the same path (the tests' stand-in).

    python3 -m models.train_gpu --out "$OUT" --budget-s 510
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models.data import TRAIN_SEED0, VAL_SEED0, params_to_dict, sim_distribution
from models.loss import normalise_intensity, wca_per_sample
from models.train import write_curve
from models.unet import build_unet, count_parameters
from physics.simulate_torch import TorchOps, simulate_batch
from physics.coherence import coherence_torch

SHARD_BYTES = 15 * 2 ** 20
PACK_FORMAT = "bcdi-recon int8 per-channel v1"
INDEX = "weights_index.json"
CURVE = "gpu_learning_curve.csv"
SUMMARY = "gpu_summary.json"
STATE = "gpu_state.pt"
CURVE_FIELDS = ("step", "samples", "train_loss", "val_loss", "val_coherence", "lr", "wall_s", "samples_per_s")
POOL_SEED0 = TRAIN_SEED0 + 500_000_000  # GPU segments draw their own training seeds (never the CPU run's)


# --- weights as int8 shards (what comes back from the GPU machine) ---------------------------------------

def pack_int8(state_dict: dict) -> dict:
    """Symmetric int8 quantisation per output channel of each weight tensor (dim 0); small tensors stay fp32."""
    out = {}
    for k, v in state_dict.items():
        v = v.detach().float().cpu()
        if v.ndim >= 2 and v.numel() >= 4096:
            flat = v.reshape(v.shape[0], -1)
            scale = flat.abs().amax(1).clamp(min=1e-12) / 127.0
            q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(v.shape)
            out[k] = {"q": q, "scale": scale}
        else:
            out[k] = {"fp32": v}
    return out


def unpack_int8(packed: dict) -> dict:
    """Inverse of pack_int8: an fp32 state dict."""
    sd = {}
    for k, e in packed.items():
        if "fp32" in e:
            sd[k] = e["fp32"]
        else:
            q = e["q"].float()
            sd[k] = (q.reshape(q.shape[0], -1) * e["scale"][:, None]).reshape(q.shape)
    return sd


def write_shards(packed: dict, arch_config: dict, meta: dict, dest: Path) -> list[Path]:
    """Write packed weights as shards of at most SHARD_BYTES plus an index; returns the written paths."""
    dest.mkdir(parents=True, exist_ok=True)
    groups, cur, size = [], {}, 0
    for k, e in packed.items():
        b = sum(t.numel() * t.element_size() for t in e.values())
        if cur and size + b > SHARD_BYTES:
            groups.append(cur)
            cur, size = {}, 0
        cur[k] = e
        size += b
    groups.append(cur)
    paths = []
    for i, g in enumerate(groups):
        p = dest / f"weights_int8_{i}.pt"
        tmp = p.with_name(p.name + ".tmp")
        torch.save(g, tmp)
        os.replace(tmp, p)
        paths.append(p)
    index = {"format": PACK_FORMAT, "arch_config": arch_config, "meta": meta, "shards": [p.name for p in paths]}
    (dest / (INDEX + ".tmp")).write_text(json.dumps(index, indent=1, default=float))
    os.replace(dest / (INDEX + ".tmp"), dest / INDEX)
    return paths + [dest / INDEX]


def read_shards(folder: str | os.PathLike) -> tuple[dict, dict, dict]:
    """(arch_config, fp32 state dict, meta) from a folder written by write_shards."""
    folder = Path(folder)
    index = json.loads((folder / INDEX).read_text())
    if index.get("format") != PACK_FORMAT:
        raise ValueError(f"{folder / INDEX}: not a {PACK_FORMAT!r} index")
    packed = {}
    for name in index["shards"]:
        packed.update(torch.load(folder / name, map_location="cpu", weights_only=True))
    return index["arch_config"], unpack_int8(packed), index.get("meta", {})


def load_initial(path: str) -> tuple[dict, dict, dict | None, dict]:
    """(arch_config, state_dict, optimizer state or None, meta) from shards, a weights file or a checkpoint."""
    p = Path(path)
    if p.is_dir():
        arch, sd, meta = read_shards(p)
        return arch, sd, None, meta
    ck = torch.load(p, map_location="cpu", weights_only=False)
    if "state_dict" in ck:  # an exported weights file (models.train.export_weights)
        return ck["arch_config"], ck["state_dict"], None, ck.get("meta", {})
    sd = ck.get("model") or ck.get("best_model")
    return ck["arch_config"], sd, ck.get("optimizer"), {k: ck[k] for k in ("step", "samples") if k in ck}


# --- the segment ------------------------------------------------------------------------------------------

def _training_pairs(seeds, sim, ops) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised log intensity, reciprocal phase), each (B,1,n,n,n) float16, simulated on ops' device."""
    b = simulate_batch(seeds, sim, ops=ops)
    x = normalise_intensity(b["intensity"])[:, None]
    return x.half(), b["phase"][:, None].half()


@torch.no_grad()
def _validate(model, xv, yv, batch, use_amp, dev_type) -> tuple[float, float]:
    model.eval()
    losses, cohs = [], []
    for i in range(0, len(xv), batch):
        x, y = xv[i:i + batch].float(), yv[i:i + batch].float()
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=use_amp):
            pred = model(x)
        losses.append(wca_per_sample(pred.float(), y, x).cpu())
        cohs.append(coherence_torch(pred.float(), y, x).cpu())
    model.train()
    return float(torch.cat(losses).mean()), float(torch.cat(cohs).median())


def run_segment(args) -> dict:
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    dev = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_dir = Path(args.state)
    state_dir.mkdir(parents=True, exist_ok=True)
    sim = sim_distribution(args.sim)
    if sim.size != 64:
        raise ValueError("the UNet takes 64³ patterns")
    log = open(out / "gpu_log.txt", "a")

    def say(msg):
        line = f"[{time.perf_counter() - t_start:7.1f} s] {msg}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    # Model: resume the full state kept in --state if any, else --init, else a fresh model.
    step, samples, pool_next, wall0, rows, opt_state = 0, 0, 0, 0.0, [], None
    arch = {"width": args.width}
    init_sd = None
    state_path = state_dir / STATE
    if state_path.exists() and not args.fresh:
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        arch, init_sd, opt_state = st["arch_config"], st["model"], st["optimizer"]
        step, samples, pool_next, wall0, rows = st["step"], st["samples"], st["pool_next"], st["wall_s"], st["rows"]
        say(f"resuming the full state {state_path} at step {step} ({samples} samples)")
    elif args.init:
        arch, init_sd, opt_state, meta = load_initial(args.init)
        step, samples = int(meta.get("step", 0)), int(meta.get("samples", 0))
        pool_next = int(meta.get("pool_next", 0))
        rows = list(meta.get("rows", []))
        wall0 = float(meta.get("wall_s", 0.0))
        say(f"starting from {args.init} (step {step}; optimizer state {'kept' if opt_state else 'fresh'})")
    torch.manual_seed(args.seed)
    model = build_unet(**arch)
    if init_sd is not None:
        model.load_state_dict(init_sd)
    arch = model.config
    if arch["width"] < 0.5 and not args.allow_narrow:
        raise ValueError(f"the GPU segment trains a w >= 0.5 model, got w={arch['width']}")
    model = model.to(dev)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
        for g in opt.param_groups:
            g["lr"] = args.lr
    n_params = count_parameters(model)
    say(f"device {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}), UNet w={arch['width']} "
        f"{n_params:,} parameters, batch {args.batch}, lr {args.lr}, sim {args.sim!r}")
    use_amp = dev.type == "cuda" or args.cpu_bf16
    ops = TorchOps(dev)

    # Data: the fixed validation set, then a pool of training patterns filled within its share of the budget.
    xv, yv = _training_pairs([VAL_SEED0 + i for i in range(args.n_val)], sim, ops)
    pool_x = torch.empty((args.pool, 1, 64, 64, 64), dtype=torch.float16, device=dev)
    pool_y = torch.empty_like(pool_x)
    filled, t_gen0 = 0, time.perf_counter()
    gen_deadline = t_gen0 + args.gen_frac * max(0.0, deadline - t_gen0)
    while filled < args.pool and (filled < args.batch or time.perf_counter() < gen_deadline):
        k = min(args.gen_batch, args.pool - filled)
        seeds = [POOL_SEED0 + pool_next + j for j in range(k)]
        pool_x[filled:filled + k], pool_y[filled:filled + k] = _training_pairs(seeds, sim, ops)
        filled += k
        pool_next += k
    gen_rate = filled / max(time.perf_counter() - t_gen0, 1e-9)
    say(f"validation set {args.n_val}, training pool {filled} patterns simulated at {gen_rate:.1f} patterns/s")

    reserve = args.reserve_s
    step0 = step
    t_train0 = time.perf_counter()
    last_val_t, run_losses, seg_samples = t_train0, [], 0
    g = torch.Generator(device="cpu").manual_seed(args.seed + step)

    def checkpoint_and_row(final=False):
        val, coh = _validate(model, xv, yv, args.batch, use_amp, dev.type)
        wall = wall0 + time.perf_counter() - t_start
        rate = seg_samples / max(time.perf_counter() - t_train0, 1e-9)
        rows.append({"step": step, "samples": samples, "train_loss": f"{np.mean(run_losses) if run_losses else float('nan'):.6f}",
                     "val_loss": f"{val:.6f}", "val_coherence": f"{coh:.4f}", "lr": args.lr, "wall_s": f"{wall:.1f}",
                     "samples_per_s": f"{rate:.1f}"})
        write_curve(out / CURVE, rows, CURVE_FIELDS)
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "arch_config": arch, "step": step,
                 "samples": samples, "pool_next": pool_next, "wall_s": wall, "rows": rows, "sim": params_to_dict(sim)}
        tmp = state_path.with_name(STATE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, state_path)
        say(f"step {step} samples {samples}: train {rows[-1]['train_loss']} val WCA {val:.4f} "
            f"val coherence {coh:.3f} ({rate:.1f} samples/s)")
        return val, coh

    while True:
        now = time.perf_counter()
        if now > deadline - reserve or (args.max_steps and step >= args.max_steps):
            break
        idx = torch.randint(0, filled, (args.batch,), generator=g).to(dev)
        x, y = pool_x[idx].float(), pool_y[idx].float()
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = model(x)
        loss = wca_per_sample(pred.float(), y, x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        samples += args.batch
        seg_samples += args.batch
        run_losses.append(float(loss.detach()))
        if args.refresh:  # replace random pool entries with new seeds, so the data keep coming
            seeds = [POOL_SEED0 + pool_next + j for j in range(args.refresh)]
            where = torch.randint(0, filled, (args.refresh,), generator=g).to(dev)
            pool_x[where], pool_y[where] = _training_pairs(seeds, sim, ops)
            pool_next += args.refresh
        if time.perf_counter() - last_val_t >= args.val_every_s:
            checkpoint_and_row()
            last_val_t, run_losses = time.perf_counter(), []
    val, coh = checkpoint_and_row(final=True)

    meta = {"step": step, "samples": samples, "pool_next": pool_next, "wall_s": wall0 + time.perf_counter() - t_start,
            "val_loss": val, "val_coherence": coh, "rows": rows, "sim": params_to_dict(sim), "lr": args.lr,
            "batch": args.batch, "device": str(dev), "pool_seed0": POOL_SEED0, "val_seeds": [VAL_SEED0, args.n_val]}
    written = write_shards(pack_int8(model.state_dict()), arch, meta, out)
    summary = {"parameters": n_params, "weights_files": [p.name for p in written],
               "weights_bytes": sum(p.stat().st_size for p in written), "generation_patterns_per_s": gen_rate,
               "train_samples_per_s": seg_samples / max(time.perf_counter() - t_train0, 1e-9),
               "segment_steps": step - step0, **{k: v for k, v in meta.items() if k != "rows"},
               "segment_wall_s": time.perf_counter() - t_start,
               "peak_gpu_memory_gib": torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else None}
    (out / SUMMARY).write_text(json.dumps(summary, indent=1, default=float))
    say(f"wrote {', '.join(summary['weights_files'])} ({summary['weights_bytes'] / 2 ** 20:.1f} MiB), {CURVE}, {SUMMARY}")
    log.close()
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m models.train_gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for what comes back: weight shards, curve, summary, log")
    p.add_argument("--state", default="runs/gpu_state", help="folder for the full resumable state (default %(default)s)")
    p.add_argument("--init", default=None, help="start from brought-back shards (a folder), a weights file or a checkpoint")
    p.add_argument("--fresh", action="store_true", help="ignore a state found in --state")
    p.add_argument("--budget-s", type=float, default=510.0, help="wall-clock seconds for the whole segment (default %(default)s)")
    p.add_argument("--reserve-s", type=float, default=25.0, help="seconds kept for the last validation and the export")
    p.add_argument("--gen-frac", type=float, default=0.15, help="share of the budget for filling the pool (default %(default)s)")
    p.add_argument("--pool", type=int, default=16384, help="training patterns held on the device (default %(default)s; 1 MiB each)")
    p.add_argument("--gen-batch", type=int, default=32, help="patterns simulated per batched call (default %(default)s)")
    p.add_argument("--refresh", type=int, default=4, help="new patterns swapped into the pool per step (default %(default)s)")
    p.add_argument("--width", type=float, default=0.5, help="UNet width multiplier for a fresh model (default %(default)s)")
    p.add_argument("--allow-narrow", action="store_true", help="allow w < 0.5 (the CPU stand-in test only)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default %(default)s)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (default %(default)s)")
    p.add_argument("--n-val", type=int, default=64, help="held-out validation patterns (default %(default)s)")
    p.add_argument("--val-every-s", type=float, default=60.0, help="seconds between validations/states (default %(default)s)")
    p.add_argument("--sim", default="wide", help="training distribution, 'wide' or 'paper' (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cuda or cpu")
    p.add_argument("--channels-last", action="store_true", help="channels_last_3d model and inputs")
    p.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on a CPU too (the stand-in test)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps in total (0 = budget only)")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation and batch sampling seed")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_segment(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"train_gpu: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
