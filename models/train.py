"""Supervised training of the phase UNet on simulated patterns, resumable across killed processes.

Samples are simulated on the fly (DataLoader workers) from a seed that is a pure function of the global
sample index, so a resumed run sees exactly the data it would have seen without the interruption.
Every `val_every` steps: validation on a fixed held-out set, a learning-curve CSV row and PNG, and an
atomic checkpoint (temp file + rename). CUDA runs may use bf16 autocast and torchrun/DDP; CPU is the default.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from models.data import TRAIN_SEED0, VAL_SEED0, SimulatedPatterns, params_from_dict, params_to_dict, sample_to_tensors
from models.loss import wca_per_sample
from models.unet import build_unet
from physics.errors import OptionsError
from physics.simulate import SimParams, simulate_sample

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
CURVE_CSV = "learning_curve.csv"
CURVE_PNG = "learning_curve.png"
CURVE_FIELDS = ("step", "samples", "train_loss", "val_loss", "val_coherence", "lr", "wall_s", "cpu_s")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint; a resume keeps the stored values)."""

    out: str = "runs/unet"
    width: float = 0.125
    options: dict = field(default_factory=dict)
    steps: int = 10_000
    batch: int = 4
    lr: float = 1e-4
    val_every: int = 100
    n_val: int = 32
    workers: int = 1
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA only; ignored on CPU
    threads: int = 0  # torch intra-op threads on CPU (0 = torch default)
    seed: int = 0  # weight initialisation
    sim: dict = field(default_factory=lambda: params_to_dict(SimParams()))


class _StepIndices(Sampler):
    """Global sample indices for steps [start, stop) of this rank: deterministic, so resume is exact."""

    def __init__(self, start: int, stop: int, batch: int, rank: int = 0, world: int = 1):
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, batch, rank, world

    def __iter__(self):
        for s in range(self.start, self.stop):
            base = (s * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.batch


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OptionsError("--device cuda was requested but no CUDA device is available")
    return torch.device(name)


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) of this process and its live children, e.g. the DataLoader workers
    that simulate: the training ledger's cost figure, which a shared machine distorts far less than wall time."""
    total = sum(os.times()[:2])
    try:
        tick = os.sysconf("SC_CLK_TCK")
        kids = []
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as f:
                kids += f.read().split()
        for pid in kids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, IndexError):
        pass  # not Linux, or a child ended meanwhile: the process's own time still counts
    return total


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _read_curve(path: Path, upto_step: int) -> list[dict]:
    """Learning-curve rows up to a step (rows written after the last checkpoint are dropped on resume)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= upto_step]


def write_curve(path: Path, rows: list[dict], fields: tuple = CURVE_FIELDS) -> None:
    """Write learning-curve rows as CSV atomically (temp file + rename); the GPU segment uses it with its fields."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def plot_curve(rows: list[dict], path: Path, title: str = "") -> None:
    """PNG of training and validation WCA loss against samples seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    s = [int(r["samples"]) for r in rows]
    ax.plot(s, [float(r["train_loss"]) for r in rows], label="train (mean since last point)")
    ax.plot(s, [float(r["val_loss"]) for r in rows], "o-", ms=3, label="validation (held-out seeds)")
    ax.set_xlabel("training samples seen")
    ax.set_ylabel("WCA loss")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    coh = [(int(r["samples"]), float(r["val_coherence"])) for r in rows if r.get("val_coherence")]
    handles = ax.get_lines()
    if coh:  # the network's judge (physics.coherence), on its own axis
        ax2 = ax.twinx()
        handles += ax2.plot(*zip(*coh), "s-", ms=3, color="tab:green", label="validation phase coherence")
        ax2.set_ylabel("median phase coherence (1 = perfect)")
        ax2.set_ylim(0, 1)
    ax.legend(handles=handles, loc="center left", fontsize=8)  # one legend, in the empty middle band
    ax.set_title(title or "phase UNet learning curve")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def validation_set(n: int, sim: SimParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed held-out validation set: seeds VAL_SEED0 .. VAL_SEED0+n-1."""
    xs, ys = zip(*(sample_to_tensors(simulate_sample(VAL_SEED0 + i, sim)) for i in range(n)))
    return torch.stack(xs), torch.stack(ys)


@torch.inference_mode()
def evaluate_loss(model, x: torch.Tensor, y: torch.Tensor, device, batch: int = 4, memory_format=None,
                  coherence: bool = False):
    """Mean WCA loss of the model on (x, y), in batches; with coherence=True also the median phase coherence
    (physics.coherence, shift- and twin-blind), returned as (loss, coherence)."""
    model.eval()
    losses, cohs = [], []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(device)
        if memory_format is not None:
            xb = xb.contiguous(memory_format=memory_format)
        pred = model(xb).float()
        losses.append(wca_per_sample(pred, y[i:i + batch].to(device), xb.float()).cpu())
        if coherence:
            from physics.coherence import coherence_batch

            cohs.extend(coherence_batch(pred.cpu().numpy(), y[i:i + batch].numpy(), x[i:i + batch].numpy()))
    model.train()
    loss = float(torch.cat(losses).mean())
    return (loss, float(np.median(cohs))) if coherence else loss


def compact_checkpoint(src: str | os.PathLike, dest: str | os.PathLike) -> dict:
    """A small resumable copy of a checkpoint, for committing: weights in fp16, Adam moments in bf16 (bf16 keeps
    the range of the squared-gradient moment, which fp16 would underflow), the best-weights copy dropped (the
    shipped weights file is that copy) and best_val reset to the current model's validation loss, so that best
    tracking restarts honestly. Resuming casts everything back to fp32 (load_state_dict copies into the model's
    dtype). About 0.4x the size of a full checkpoint."""
    ck = torch.load(src, map_location="cpu", weights_only=False)
    ck["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in ck["model"].items()}
    for state in ck["optimizer"]["state"].values():
        for k in ("exp_avg", "exp_avg_sq"):
            if k in state:
                state[k] = state[k].to(torch.bfloat16)
    ck.pop("best_model", None)
    ck["best_val"] = ck.get("val_loss", math.inf)
    ck["compact"] = True
    _atomic_save(ck, Path(dest))
    return {k: ck.get(k) for k in ("step", "samples", "val_loss")}


def export_weights(checkpoint: str | os.PathLike, dest: str | os.PathLike, extra: dict | None = None) -> dict:
    """Write a shippable weights file (fp32 state dict, architecture config, training metadata) from a checkpoint."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    meta = {k: ck[k] for k in ("step", "samples", "wall_s", "best_val", "val_loss") if k in ck}
    meta["train_config"] = ck["config"]
    meta.update(extra or {})
    state = ck.get("best_model") or ck["model"]
    payload = {"arch_config": ck["arch_config"], "state_dict": state, "meta": meta}
    _atomic_save(payload, Path(dest))
    return meta


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Run (or resume) training until cfg.steps; returns a summary dict. Only rank 0 writes files."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    out = Path(cfg.out)
    ddp = world > 1
    if ddp:
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    else:
        device = _pick_device(cfg.device)
    if device.type == "cpu" and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    ckpt_path = out / CHECKPOINT
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else None
    if ck is not None:  # a resume keeps the architecture and data of the run, but may extend the step count
        stored = TrainConfig(**ck["config"])
        stored.steps, stored.workers, stored.device, stored.threads = cfg.steps, cfg.workers, cfg.device, cfg.threads
        stored.lr = cfg.lr  # a resume may lower the learning rate (a manual step decay); the CSV records it
        cfg = stored
    sim = params_from_dict(cfg.sim)
    torch.manual_seed(cfg.seed)
    model = build_unet(cfg.width, **cfg.options)
    arch_config = model.config
    cpu_cl = device.type == "cpu"
    mf = torch.channels_last_3d if cpu_cl else None
    model = model.to(device)
    if cpu_cl:
        model = model.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, wall0, cpu0, best_val, best_state = 0, 0.0, 0.0, math.inf, None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        for group in opt.param_groups:
            group["lr"] = cfg.lr
        step, wall0, best_val = ck["step"], ck["wall_s"], ck.get("best_val", math.inf)
        cpu0 = ck.get("cpu_s", 0.0)  # runs before the ledger counted CPU time start from 0 here
        best_state = ck.get("best_model")
    net = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    rows = _read_curve(out / CURVE_CSV, step) if rank == 0 else []
    xv, yv = validation_set(cfg.n_val, sim) if rank == 0 else (None, None)
    use_amp = cfg.amp and device.type == "cuda"
    loader = DataLoader(SimulatedPatterns(TRAIN_SEED0, 2 ** 62, sim), batch_size=cfg.batch,
                        sampler=_StepIndices(step, cfg.steps, cfg.batch, rank, world),
                        num_workers=cfg.workers, persistent_workers=False, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if cfg.workers > 0 else None)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, unit="step", dynamic_ncols=True, desc="train")
    t0, c0 = time.perf_counter(), cpu_seconds()
    run_losses: list[float] = []
    last_val = rows[-1]["val_loss"] if rows else float("nan")
    for xb, yb in loader:
        xb = xb.to(device, non_blocking=True)
        yb = yb.to(device, non_blocking=True)
        if mf is not None:
            xb = xb.contiguous(memory_format=mf)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            pred = net(xb)
        loss = wca_per_sample(pred.float(), yb, xb.float()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        run_losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(run_losses[-20:]):.4f}", val=f"{float(last_val):.4f}")
        if step % cfg.val_every == 0 or step == cfg.steps:
            if rank == 0:
                val, coh = evaluate_loss(model, xv, yv, device, memory_format=mf, coherence=True)
                wall = wall0 + time.perf_counter() - t0
                cpu = cpu0 + cpu_seconds() - c0
                if val < best_val:
                    best_val = val
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                rows.append({"step": step, "samples": step * cfg.batch * world,
                             "train_loss": f"{np.mean(run_losses):.6f}", "val_loss": f"{val:.6f}",
                             "val_coherence": f"{coh:.4f}",
                             "lr": cfg.lr, "wall_s": f"{wall:.1f}", "cpu_s": f"{cpu:.1f}"})
                write_curve(out / CURVE_CSV, rows)
                _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                              "samples": step * cfg.batch * world, "wall_s": wall, "cpu_s": cpu, "best_val": best_val,
                              "val_loss": val, "best_model": best_state, "config": asdict(cfg),
                              "arch_config": arch_config}, ckpt_path)
                plot_curve(rows, out / CURVE_PNG, f"UNet w={cfg.width}, batch {cfg.batch}, lr {cfg.lr}")
                last_val = val
            run_losses = []
    if bar is not None:
        bar.close()
    if ddp:
        import torch.distributed as dist

        dist.destroy_process_group()
    return {"step": step, "best_val": best_val, "out": str(out), "rows": len(rows)}
