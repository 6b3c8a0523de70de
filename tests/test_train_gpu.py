"""The GPU training segment (models.train_gpu, deploy/gpu/train_gpu.sh).

CPU STAND-IN FOR THE GPU: there is no GPU here, so the end-to-end test runs the very same script and code
path on the CPU (device cpu, bf16 autocast on the CPU, a tiny UNet, a pool of 2 patterns, a few steps). On a
lent GPU machine the same command runs with CUDA and the default sizes (docs/training.md, "GPU segment").
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from models.train_gpu import INDEX, pack_int8, read_shards, unpack_int8, write_shards
from physics.coherence import coherence_torch as coherence
from models.unet import build_unet

REPO = Path(__file__).resolve().parents[1]
TINY = ["--width", "0.0625", "--allow-narrow", "--batch", "1", "--pool", "2", "--gen-batch", "2", "--refresh", "1",
        "--n-val", "1", "--val-every-s", "1e9", "--device", "cpu", "--budget-s", "300",
        "--reserve-s", "0", "--sim", "wide"]


def _run(out: Path, state: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    return subprocess.run(["bash", str(REPO / "deploy/gpu/train_gpu.sh"), "--state", str(state), *TINY, *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_cpu_stand_in_for_the_gpu_segment_end_to_end_and_resume(tmp_path):
    """CPU stand-in for the GPU: simulate on the device, train in bf16, write shards/curve/summary, resume."""
    out, state = tmp_path / "out", tmp_path / "state"
    p = _run(out, state, "--max-steps", "1", "--cpu-bf16")  # the bf16 autocast path, as on the GPU
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((out / "gpu_summary.json").read_text())
    assert summary["step"] == 1 and summary["samples"] == 1 and summary["segment_steps"] == 1
    assert summary["device"] == "cpu" and summary["sim"]["shapes"][-1] == "platelet"  # the wide distribution
    rows = list(csv.DictReader(open(out / "gpu_learning_curve.csv")))
    assert [int(r["step"]) for r in rows] == [1]
    assert 0 < float(rows[0]["val_loss"]) < 1 and 0 < float(rows[0]["val_coherence"]) <= 1
    files = sorted(os.listdir(out))
    assert len(files) <= 8 and all(os.path.getsize(out / f) <= 16 * 2 ** 20 for f in files)  # what may come back
    assert not [f for f in files if f.endswith(".tmp")]

    # the full state in --state resumes exactly where it stopped, with the curve and the seed stream
    p = _run(out, state, "--max-steps", "2")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming the full state" in p.stdout
    summary = json.loads((out / "gpu_summary.json").read_text())
    assert summary["step"] == 2 and summary["segment_steps"] == 1 and summary["pool_next"] > 2
    assert [int(r["step"]) for r in csv.DictReader(open(out / "gpu_learning_curve.csv"))] == [1, 2]
    st = torch.load(state / "gpu_state.pt", weights_only=False)
    arch, sd, meta = read_shards(out)
    assert meta["step"] == 2 and arch == st["arch_config"]
    for k, v in st["model"].items():  # the shards are the state's weights to int8 rounding
        assert torch.allclose(sd[k], v, atol=float(v.abs().max()) / 127 * 0.51 + 1e-12), k

    # brought-back shards start a later segment (a fresh machine: no state), continuing the step count
    p = _run(tmp_path / "out2", tmp_path / "state2", "--init", str(out), "--max-steps", "3")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "starting from" in p.stdout
    s2 = json.loads((tmp_path / "out2" / "gpu_summary.json").read_text())
    assert s2["step"] == 3 and s2["segment_steps"] == 1
    assert [int(r["step"]) for r in csv.DictReader(open(tmp_path / "out2" / "gpu_learning_curve.csv"))] == [1, 2, 3]


def test_bad_options_are_one_line_errors(tmp_path):
    p = _run(tmp_path / "o", tmp_path / "s", "--sim", "nope")
    assert p.returncode == 2 and "unknown simulation distribution" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_w05_model_comes_back_in_shards_within_the_limits(tmp_path):
    """w = 0.5 (36 M parameters, 69 MiB in fp16) packs into int8 shards of <= 15 MiB, < 40 MiB in all."""
    torch.manual_seed(0)
    model = build_unet(0.5)
    paths = write_shards(pack_int8(model.state_dict()), model.config, {"step": 0}, tmp_path)
    sizes = [p.stat().st_size for p in paths]
    assert max(sizes) <= 16 * 2 ** 20 and sum(sizes) < 40 * 2 ** 20 and len(paths) <= 5
    arch, sd, _ = read_shards(tmp_path)
    assert arch["width"] == 0.5 and (tmp_path / INDEX).exists()
    back = build_unet(**arch)
    back.load_state_dict(sd)
    x = torch.rand(1, 1, 64, 64, 64)
    with torch.no_grad():
        a, b = model(x), back(x)
    assert float(coherence(b, a, x)) > 0.99  # the int8 model predicts what the fp32 one does


def test_coherence_is_blind_to_twin_offset_and_shift_only():
    torch.manual_seed(1)
    n = 32
    q = torch.arange(n, dtype=torch.float32) - n // 2
    qz, qy, qx = torch.meshgrid(q, q, q, indexing="ij")
    phi = torch.randn(1, n, n, n).cumsum(1).cumsum(2) * 0.05
    w = torch.rand(1, n, n, n)
    ramp = 2 * np.pi * (3 * qz + 2 * qx) / n  # a real-space shift of (3, 0, 2) voxels
    assert float(coherence(phi, phi, w)) > 0.999
    assert float(coherence(-phi + 1.3 + ramp, phi, w)) > 0.99  # twin + offset + shift
    assert float(coherence(torch.rand(1, n, n, n) * 2 * np.pi, phi, w)) < 0.2
    assert float(coherence(torch.zeros(1, n, n, n), phi, w)) < float(coherence(phi + 0.3 * torch.randn_like(phi), phi, w))


def test_int8_pack_round_trip():
    sd = {"a": torch.randn(8, 4, 5, 5, 5), "b": torch.randn(8)}
    back = unpack_int8(pack_int8(sd))
    assert torch.equal(back["b"], sd["b"])
    err = (back["a"] - sd["a"]).abs().reshape(8, -1).amax(1)
    assert torch.all(err <= sd["a"].abs().reshape(8, -1).amax(1) / 127 * 0.51)
    assert np.isfinite(back["a"].numpy()).all()


def test_the_gpu_path_needs_only_torch_and_numpy():
    """With scipy, h5py and matplotlib made unimportable, the GPU entry point imports and simulates."""
    code = ("import sys\n"
            "for m in ('scipy', 'h5py', 'matplotlib', 'tqdm', 'skimage'): sys.modules[m] = None\n"
            "import models.train_gpu\n"
            "from physics.simulate import WIDE\n"
            "from physics.simulate_torch import simulate_batch\n"
            "b = simulate_batch([5], WIDE)\n"
            "assert b['intensity'].shape == (1, 64, 64, 64)\n"
            "print('ok', sorted(k for k in sys.modules if k.split('.')[0] in ('scipy', 'h5py', 'matplotlib')"
            " and sys.modules[k] is not None))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "ok []"
