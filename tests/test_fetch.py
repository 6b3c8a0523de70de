"""`bcdi-recon fetch`: a service result from a real Tiled server, as the CXI layout `reconstruct` writes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from fixtures_tiled import tiled_env  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).with_name("bcdi-recon")
REF = {"tiled_path": "raw/PtNP/PtNP_0001", "scan": "1.1", "detector": "mpx1x4"}
JOB = "0123456789abcdef0123456789abcdef"
SCAN_META = {"energy_eV": 9000.0, "delta_deg": 36.0, "nu_deg": 1.5, "distance_m": 0.85, "pixel_size_x_m": 55e-6,
             "pixel_size_y_m": 55e-6, "rocking_motor": "eta", "rocking_step_deg": 0.01, "eta_deg": 18.0}


def _cli(*argv, env=None):
    cmd = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli.main"]
    return subprocess.run(cmd + [str(a) for a in argv], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _tree(path) -> set[str]:
    names: set[str] = set()
    with h5py.File(path, "r") as f:
        f.visit(names.add)
    return names


@pytest.fixture(scope="module")
def published(tiled_env):  # noqa: F811
    """A result container written by the workers' publisher (write_result) for job JOB."""
    from physics.simulate import SimParams, simulate_sample
    from workers.io.previews import preview_geometry
    from workers.io.tiled_store import make_previews, write_result
    from workers.pipeline import result_arrays

    s = simulate_sample(5, SimParams(size=32))
    recip = np.angle(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(s["object"]))))
    arrays, strain_meta = result_arrays(s["object"], s["support"], s["intensity"], recip, SCAN_META)
    previews = make_previews(arrays, preview_geometry(SCAN_META, s["intensity"].shape), title="fetch test")
    metadata = {"scan": REF, "model": {"name": "unet_w0125", "sha256": "ab" * 32}, "engine": "builtin",
                "recipe": "ER**400", "device": "cpu", "parameters": {"refine": 400, "border_n": 2, "threshold": 0.25},
                "metrics": {"llk_poisson": 1.25, "llk_poisson_free": 1.31, "support_size": int(s["support"].sum())},
                "timings": {"read": 0.4, "cnn": 0.9, "refine": 3.1}, "crop_offsets": [0, 118, 298],
                "input": SCAN_META, "strain": strain_meta}
    path = write_result(tiled_env["client"], REF, JOB, arrays, metadata, previews)
    return tiled_env, path, arrays, s


def test_fetch_by_job_id_writes_the_reconstruct_layout(published, tmp_path):
    env, path, arrays, sample = published
    server = env["server"]
    out = tmp_path / "fetched.cxi"
    r = _cli("fetch", JOB, "--out", out, "--tiled-url", server.uri, env={"BCDI_TILED_API_KEY": server.api_key})
    assert r.returncode == 0, r.stderr
    assert f"from Tiled {path}" in r.stdout
    from workers.io.cxi import read_cxi

    got = read_cxi(out)
    np.testing.assert_array_equal(got["obj"], arrays["object"])
    np.testing.assert_array_equal(got["support"], arrays["support"])
    np.testing.assert_allclose(got["iobs"], np.clip(sample["intensity"], 0, None), rtol=1e-4, atol=1e-3)
    assert got["process"]["model"] == "unet_w0125" and got["process"]["device_used"] == "cpu"
    assert list(got["process"]["crop_offsets"]) == [0, 118, 298] and got["process"]["job_id"] == JOB
    assert got["results"]["llk_poisson"] == pytest.approx(1.25) and got["results"]["nb_point_support"] > 0
    # the same layout as `reconstruct` (a reference written by the real command on a small input)
    np.save(tmp_path / "i.npy", sample["intensity"].astype(np.float32))
    ref = tmp_path / "reconstructed.cxi"
    r2 = _cli("reconstruct", tmp_path / "i.npy", "--out", ref, "--method", "cnn-er", "--refine", "2", "--quiet", "--crop-size", "32")
    assert r2.returncode == 0, r2.stderr
    ours, theirs = _tree(out), _tree(ref)
    layout = {n for n in theirs if not n.startswith("entry_1/image_1/process_1/configuration/")
              and not n.startswith("entry_1/image_1/process_1/results/")}
    layout -= {"entry_1/image_2/mask"}  # the service result keeps no detector mask of the crop
    assert layout <= ours, sorted(layout - ours)
    for key in ("pipeline", "engine", "recipe", "model", "model_sha256", "input", "scan", "detector", "crop_offsets",
                "device_used"):
        assert f"entry_1/image_1/process_1/configuration/{key}" in ours and \
            f"entry_1/image_1/process_1/configuration/{key}" in theirs, key


def test_fetch_by_path_and_errors(published, tmp_path):
    env, path, _, _ = published
    server = env["server"]
    key = {"BCDI_TILED_API_KEY": server.api_key}
    r = _cli("fetch", path, "--out", tmp_path / "p.cxi", "--tiled-url", server.uri, env=key)
    assert r.returncode == 0, r.stderr
    unknown = _cli("fetch", "f" * 32, "--out", tmp_path / "u.cxi", "--tiled-url", server.uri, env=key)
    assert unknown.returncode == 2 and f"no result for job {'f' * 32} in Tiled" in unknown.stderr
    bad = _cli("fetch", "not-a-job", "--out", tmp_path / "b.cxi", "--tiled-url", server.uri, env=key)
    assert bad.returncode == 2 and "neither a job id" in bad.stderr
    raw = _cli("fetch", "raw/PtNP/PtNP_0001", "--out", tmp_path / "r.cxi", "--tiled-url", server.uri, env=key)
    assert raw.returncode == 2 and "not a bcdi-recon result container" in raw.stderr
    wrong_key = _cli("fetch", JOB, "--out", tmp_path / "k.cxi", "--tiled-url", server.uri,
                     env={"BCDI_TILED_API_KEY": "not-the-key"})
    assert wrong_key.returncode == 2 and "rejected the API key" in wrong_key.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.cxi"]
