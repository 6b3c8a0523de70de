"""Training: the loss goes down on real simulated data, checkpoints resume exactly, a killed run resumes."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from models.train import TrainConfig, export_weights, train

TINY = dict(width=0.0625, batch=1, n_val=1, workers=0, lr=1e-3)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_resume_is_exact(tmp_path):
    """2 steps + resume to 4 gives the same weights as 4 steps in one go (data is a function of the index)."""
    train(TrainConfig(out=str(tmp_path / "a"), steps=2, val_every=2, **TINY), progress=False)
    train(TrainConfig(out=str(tmp_path / "a"), steps=4, val_every=2, **TINY), progress=False)
    train(TrainConfig(out=str(tmp_path / "b"), steps=4, val_every=2, **TINY), progress=False)
    wa, wb = _weights(tmp_path / "a" / "checkpoint.pt"), _weights(tmp_path / "b" / "checkpoint.pt")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    rows = (tmp_path / "a" / "learning_curve.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4"]
    assert (tmp_path / "a" / "learning_curve.png").stat().st_size > 1000
    meta = export_weights(tmp_path / "a" / "checkpoint.pt", tmp_path / "w.pt", {"name": "tiny"})
    assert meta["step"] == 4 and meta["name"] == "tiny"
    payload = torch.load(tmp_path / "w.pt", weights_only=False)
    assert payload["arch_config"]["width"] == 0.0625 and "state_dict" in payload


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    code = (f"from models.train import TrainConfig, train; "
            f"train(TrainConfig(out={str(out)!r}, steps=1000, val_every=1, width=0.0625, batch=1, n_val=1, "
            f"workers=0), progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1])
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "checkpoint.pt").exists(), "no checkpoint within 120 s"
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not list(out.glob("*.tmp"))  or torch.load(out / "checkpoint.pt", weights_only=False)  # atomic file intact
    done = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["step"]
    assert done >= 1
    summary = train(TrainConfig(out=str(out), steps=done + 1, val_every=1, **TINY), progress=False)
    assert summary["step"] == done + 1
    steps = [int(r.split(",")[0]) for r in (out / "learning_curve.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, done + 2))


def test_ddp_with_torchrun_on_two_cpu_processes(tmp_path):
    """The multi-GPU path (torchrun + DistributedDataParallel) run for real with the gloo backend on CPU."""
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    proc = subprocess.run([str(torchrun), "--nproc_per_node=2", "--master_port=29561", "-m", "cli.main", "train",
                           "--out", str(out), "--width", "0.0625", "--steps", "2", "--batch", "1", "--val-every", "2",
                           "--n-val", "1", "--workers", "0", "--quiet"],
                          cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("trained to step 2") == 1  # rank 0 only
    row = (out / "learning_curve.csv").read_text().splitlines()[1].split(",")
    assert row[0] == "2" and row[1] == "4"  # 2 steps x batch 1 x 2 processes


def test_resume_takes_a_lower_learning_rate(tmp_path):
    train(TrainConfig(out=str(tmp_path / "r"), steps=1, val_every=1, **TINY), progress=False)
    train(TrainConfig(out=str(tmp_path / "r"), steps=2, val_every=1, **{**TINY, "lr": 1e-5}), progress=False)
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    assert ck["optimizer"]["param_groups"][0]["lr"] == 1e-5 and ck["config"]["lr"] == 1e-5
    import csv

    with open(tmp_path / "r" / "learning_curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["lr"] == "0.001" and rows[1]["lr"] == "1e-05"
    assert all(0 <= float(r["val_coherence"]) <= 1 and float(r["cpu_s"]) > 0 for r in rows)


def test_compact_checkpoint_resumes(tmp_path):
    """The committed training state is small (fp16 weights, bf16 Adam moments) and still resumes."""
    from models.train import compact_checkpoint

    run = tmp_path / "r"
    train(TrainConfig(out=str(run), steps=1, val_every=1, **TINY), progress=False)
    full = run / "checkpoint.pt"
    small = tmp_path / "small.pt"
    compact_checkpoint(full, small)
    assert small.stat().st_size < 0.6 * full.stat().st_size
    ck = torch.load(small, weights_only=False)
    assert "best_model" not in ck and ck["best_val"] == ck["val_loss"]
    assert all(v.dtype == torch.float16 for v in ck["model"].values() if v.is_floating_point())
    run2 = tmp_path / "r2"
    run2.mkdir()
    small.replace(run2 / "checkpoint.pt")
    out = train(TrainConfig(out=str(run2), steps=2, val_every=1, **TINY), progress=False)
    assert out["step"] == 2
    ck2 = torch.load(run2 / "checkpoint.pt", weights_only=False)
    assert all(v.dtype == torch.float32 for v in ck2["model"].values() if v.is_floating_point())
