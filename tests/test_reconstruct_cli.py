"""`bcdi-recon reconstruct` end to end: plain intensity files and ID01 BLISS scans in, CXI + previews out,
one-line errors for bad input with nothing written."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixtures_tiled import synthetic_frames
from physics.simulate import simulate_sample
from workers.io.cxi import read_cxi
from workers.io.id01 import write_bliss_scan

ROOT = Path(__file__).parents[1]


def cli(*argv, timeout=300):
    return subprocess.run([sys.executable, "-m", "cli.main", *map(str, argv)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def crystal_npz(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    s = simulate_sample(2_000_021)
    np.savez(d / "crystal.npz", intensity=s["intensity"])
    return d / "crystal.npz"


def test_64_cube_cnn_only_and_refined(crystal_npz, tmp_path):
    r = cli("reconstruct", crystal_npz, "--out", tmp_path / "cnn.cxi", "--er-cycles", "0", "--method", "cnn-er", "--quiet")
    assert r.returncode == 0, r.stderr
    r = cli("reconstruct", crystal_npz, "--out", tmp_path / "er.cxi", "--method", "cnn-er", "--refine", "40", "--previews", tmp_path / "png")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "LLK" in r.stdout
    for name in ("cnn.cxi", "er.cxi"):
        d = read_cxi(tmp_path / name)
        assert d["obj"].shape == (64, 64, 64) and d["obj"].dtype == np.complex64  # 64³: no crop, input grid
        assert d["support"].any()
    d = read_cxi(tmp_path / "er.cxi")
    assert d["process"]["model"] == "unet_w0125" and len(d["process"]["model_sha256"]) == 64
    assert list(d["process"]["crop_offsets"]) == [0, 0, 0]
    assert {"er_intensity.png", "er_object.png", "er_cnn_phase.png", "er_strain.png"} <= {
        p.name for p in (tmp_path / "png").iterdir()}
    # the recorded recipe is the one that ran; --refine is the older name of --er-cycles
    assert d["process"]["recipe"] == "ER**40" and d["process"]["er_cycles"] == 40
    assert d["process"]["support_threshold"] == 0.25  # the schema's default, as for a REST job
    # the pipeline's strain reaches the CLI's CXI: displacement and strain on the object grid, 0 outside the
    # crystal's shape (an image of data_type "shape", inside the phasing support, its definition in the process)
    shape = d["derived"]["shape"] > 0.5
    assert shape.any() and not np.any(shape & ~d["support"])
    assert d["process"]["shape_level"] > 0 and d["process"]["shape_voxels"] == shape.sum()
    for name in ("displacement", "strain"):
        arr = d["derived"][name]
        assert arr.shape == d["obj"].shape and np.isfinite(arr).all()
        assert np.all(arr[~shape] == 0) and np.any(arr[shape] != 0)


def test_pre_recipe_is_run_and_recorded(crystal_npz, tmp_path):
    r = cli("reconstruct", crystal_npz, "--out", tmp_path / "bp.cxi", "--method", "cnn-er", "--er-cycles", "20", "--pre-recipe", "RAAR**10",
            "--support-threshold", "0.3", "--quiet")
    assert r.returncode == 0, r.stderr
    d = read_cxi(tmp_path / "bp.cxi")
    assert d["process"]["recipe"] == "RAAR**10,ER**20" and d["process"]["pre_recipe"] == "RAAR**10"
    assert d["process"]["support_threshold"] == 0.3


def test_id01_scan_is_read_cropped_and_offsets_recorded(tmp_path):
    frames, _ = synthetic_frames()
    h5 = write_bliss_scan(tmp_path / "raw", "PtNP", "0001", frames, scan=1)
    r = cli("reconstruct", h5, "--scan", "1.1", "--out", tmp_path / "scan.cxi", "--method", "cnn-er", "--refine", "20",
            "--crop-size", "32")
    assert r.returncode == 0, r.stderr
    d = read_cxi(tmp_path / "scan.cxi")
    offsets = np.asarray(d["process"]["crop_offsets"])
    assert d["obj"].shape[1:] == (32, 32)
    assert np.all(np.abs(offsets + np.array(d["obj"].shape) // 2 - (16, 150, 330)) <= 2)  # around the peak


@pytest.mark.parametrize("argv, message", [
    (["missing.npz"], "missing.npz"),
    (["{npz}", "--refine", "-3"], "refine"),
    (["{npz}", "--er-cycles", "-3"], "er_cycles"),
    (["{npz}", "--threshold", "1.5"], "support_threshold"),
    (["{npz}", "--crop-size", "8"], "crop_size"),
    (["{npz}", "--pre-recipe", "RAAR**20,FAA"], "pre-recipe"),
    (["{npz}", "--detector", "mpx1x4"], "--scan"),
    (["{npz}", "--device", "cuda"], "CUDA"),
    (["{npz}", "--model", "nope.pt"], "not found"),
    (["{npz}", "--crop-size", "96"], "larger than the array"),
    (["{npz}", "--er-cycles", "0"], "is for method cnn-er"),  # the default adaptive refines
    (["{neg}"], "--negative clip"),
    (["{neg}", "--negative", "clip", "--refine-binned", "--crop-size", "60"], "integer binning"),
])
def test_bad_input_is_one_line_and_writes_nothing(crystal_npz, tmp_path, argv, message):
    neg = crystal_npz.parent / "negative.npz"
    if not neg.exists():  # background-subtracted data: slightly negative values
        np.savez(neg, intensity=np.load(crystal_npz)["intensity"] - 0.5)
    argv = [a.replace("{npz}", str(crystal_npz)).replace("{neg}", str(neg)) for a in argv]
    out = tmp_path / "bad.cxi"
    r = cli("reconstruct", *argv, "--out", out)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_real_id01_file_without_frames_is_a_clear_error(tmp_path):
    real = ROOT.parent / "shared" / "data" / "id01_bliss_layout" / "PTO_STO_SL_0001.h5"
    if not real.exists():
        pytest.skip("shared data not present")
    r = cli("reconstruct", real, "--scan", "20.1", "--out", tmp_path / "x.cxi")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "missing" in r.stderr.lower() or "absent" in r.stderr.lower()
    assert not (tmp_path / "x.cxi").exists()


def test_info_prints_oversampling_peak_photons_and_the_crop(crystal_npz):
    s = simulate_sample(2_000_021)
    r = cli("info", crystal_npz)
    assert r.returncode == 0, r.stderr
    assert "z (rocking)" in r.stdout and "photons" in r.stdout and "integer counts" in r.stdout
    r = cli("info", crystal_npz, "--json")
    import json

    d = json.loads(r.stdout)
    assert np.all(np.abs(np.array(d["oversampling"]) / s["oversampling"] - 1) < 0.10)
    assert d["crop_shape"] == [64, 64, 64] and d["photons"] == pytest.approx(float(s["intensity"].sum()), rel=1e-6)


def test_reconstruct_records_and_prints_the_front_end_for_normalised_data(crystal_npz, tmp_path):
    norm = tmp_path / "norm.npz"
    np.savez(norm, intensity=np.load(crystal_npz)["intensity"] / 100.0)  # e.g. monitor-normalised
    r = cli("reconstruct", norm, "--out", tmp_path / "n.cxi", "--method", "cnn-er", "--refine", "10")
    assert r.returncode == 0, r.stderr
    assert "front end: oversampling" in r.stdout and "photon scale 100" in r.stdout
    d = read_cxi(tmp_path / "n.cxi")
    assert float(d["results"]["llk_scale"]) == pytest.approx(100.0, rel=0.01)


def test_offline_demo_runs_the_cli_pipeline_and_prints_the_verdict_and_the_truth(tmp_path):
    """`demo --offline` goes through the same pipeline and CXI writer as `reconstruct` (here the quick cnn-er path,
    20 ER cycles, no comparison run), and says the gate's verdict and the truth metrics."""
    import json

    r = cli("demo", "--offline", "--out", tmp_path, "--method", "cnn-er", "--er-cycles", "20", "--standard-recipe", "")
    assert r.returncode == 0, r.stderr
    assert "cnn-er: " in r.stdout and "against the simulated truth: phase RMSE" in r.stdout
    d = read_cxi(tmp_path / "result.cxi")
    assert d["process"]["pipeline"] == "cnn-er" and d["process"]["recipe"] == "ER**20"
    assert d["process"]["confidence_status"] in ("ok", "uncertain") and d["derived"]["strain"].shape == d["obj"].shape
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["result"]["confidence"]["method"] == "cnn-er" and 0 <= summary["result"]["iou"] <= 1
    assert 0 <= summary["result"]["iou_support"] <= 1 and "shape IoU" in r.stdout
    assert (tmp_path / "result_object.png").exists() and not (tmp_path / "standard.cxi").exists()
