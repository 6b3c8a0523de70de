"""The `bcdi-recon` command line: fast help, simulate, phase end to end, and one-line errors for bad input.

Most cases call cli.main.main() in-process (torch is imported once); the entry point itself is exercised in
subprocesses where the process boundary matters (help speed, traceback-free stderr, Ctrl-C, the full run).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli.main import main
from physics.simulate import SimParams, simulate_sample
from workers.io.cxi import read_cxi

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).with_name("bcdi-recon")
SHORT = "HIO**40,RAAR**60,ER**40"


def _cli(*argv, env=None, timeout=300):
    """Run the installed entry point (or `python -m cli.main` if the script is missing)."""
    cmd = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli.main"]
    return subprocess.run(cmd + [str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


def _one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("bcdi-recon") and "error:" in lines[0], stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def crystal(tmp_path_factory):
    """A simulated 32³ mildly strained crystal with masked hot pixels, as .npz (intensity + mask + answer).

    Mild strain keeps the short recipe below reliable, so the test can check the result, not only the file."""
    d = tmp_path_factory.mktemp("crystal")
    sample = simulate_sample(11, SimParams(size=32, oversampling=(2.6, 3.0), peak_counts=(1e5, 1e5),
                                           phase_range=(0.5 * np.pi, np.pi), masked_fraction=0.002))
    np.savez(d / "c.npz", **sample)
    return d / "c.npz", sample


def test_help_is_fast_and_imports_no_torch():
    """Every registered subcommand's --help works without importing torch (the gateway must start fast)."""
    code = (
        "import sys\n"
        "from cli.main import build_parser, main\n"
        "names = [a for a in build_parser()._subparsers._group_actions[0].choices]\n"
        "for argv in [['--help']] + [[n, '--help'] for n in names]:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (argv, e.code)\n"
        "heavy = [m for m in ('torch', 'h5py', 'fastapi', 'matplotlib') if m in sys.modules]\n"
        "print('NAMES', ','.join(names)); print('HEAVY', ','.join(heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    names = r.stdout.split("NAMES ")[1].split()[0].split(",")
    assert {"simulate", "phase"} <= set(names)
    assert "HEAVY \n" in r.stdout or r.stdout.rstrip().endswith("HEAVY"), r.stdout
    r = _cli("--help")
    assert r.returncode == 0 and "simulate" in r.stdout and "phase" in r.stdout
    r = _cli("phase", "--help")
    assert r.returncode == 0
    for word in ("--recipe", "HIO**400,RAAR**1000,ER**300", "--runs 20 --keep 5", ".tif", ".cxi", "nonzero = masked"):
        assert word in r.stdout, word
    r = _cli("simulate", "--help")
    assert r.returncode == 0 and "units of π" in r.stdout


def test_no_command_and_usage_error():
    r = _cli()
    assert r.returncode == 2 and "usage" in r.stderr
    r = _cli("phase")  # missing INPUT and --out: argparse error, still one line
    assert r.returncode == 2
    assert "required" in _one_line_error(r.stderr)
    r = _cli("simulate", "--out", "x.npz", "--phase-range", "5,2")
    assert r.returncode == 2 and "a <= b" in _one_line_error(r.stderr)
    r = _cli("evaluate", "--shard", "3/2")  # rejected before any model is loaded or crystal computed
    assert r.returncode == 2 and "--shard" in _one_line_error(r.stderr)
    r = _cli("evaluate", "--size", "32")  # smaller than the CNN's grid
    assert r.returncode == 2 and "--size" in _one_line_error(r.stderr)


def test_simulate_one_sample(tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["simulate", "--out", str(out), "--size", "24", "--seed", "5", "--phase-range", "3,3",
                 "--peak-counts", "1e5,1e5", "--quiet"]) == 0
    expected = simulate_sample(5, SimParams(size=24, phase_range=(3 * np.pi, 3 * np.pi), peak_counts=(1e5, 1e5)))
    with np.load(out) as z:
        assert set(expected) <= set(z.files)
        assert z["intensity"].shape == (24, 24, 24) and z["intensity"].dtype == np.float32
        np.testing.assert_array_equal(z["intensity"], expected["intensity"])
        np.testing.assert_array_equal(z["object"], expected["object"])
        assert float(z["phase_range"]) == pytest.approx(3 * np.pi, rel=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


def test_simulate_set(tmp_path, capsys):
    out = tmp_path / "set.h5"
    assert main(["simulate", "--out", str(out), "--n", "3", "--size", "16", "--seed", "7", "--gaps"]) == 0
    assert "3 samples" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert f["intensity"].shape == (3, 16, 16, 16)
        np.testing.assert_array_equal(f["seed"][()], [7, 8, 9])
        assert all(f["mask"][i].any() for i in range(3))  # --gaps: every sample has a masked band
        second = simulate_sample(8, SimParams(size=16, gap_probability=1.0))
        np.testing.assert_array_equal(f["intensity"][1], second["intensity"])
    assert [p.name for p in tmp_path.iterdir()] == ["set.h5"]


@pytest.mark.parametrize("argv,needle", [
    (["--n", "2"], "need an HDF5 output"),
    (["--size", "8"], "--size must be >= 16"),
    (["--oversampling", "1.5,3"], "oversampling"),
    (["--shapes", "sphere"], "unknown shape"),
    (["--gap-probability", "2"], "--gap-probability"),
])
def test_simulate_bad_options(tmp_path, capsys, argv, needle):
    assert main(["simulate", "--out", str(tmp_path / "s.npz")] + argv) == 2
    assert needle in _one_line_error(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_phase_end_to_end(crystal, tmp_path):
    """The real entry point phases a simulated crystal (mask taken from the .npz), writes CXI + previews."""
    path, sample = crystal
    out = tmp_path / "c.cxi"
    r = _cli("phase", path, "--out", out, "--recipe", SHORT, "--runs", "2", "--keep", "2", "--seed", "1",
             "--previews", tmp_path / "png")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "using the mask stored with the data" in r.stderr
    assert "cycle" not in r.stderr  # no progress bar when stderr is not a terminal
    assert f"wrote {out}" in r.stdout
    d = read_cxi(out)
    obj, support = d["obj"], d["support"]
    assert obj.shape == (32, 32, 32) and obj.dtype == np.complex64
    np.testing.assert_array_equal(d["iobs"], sample["intensity"])
    np.testing.assert_array_equal(d["mask"], sample["mask"])
    assert d["process"]["recipe"] == SHORT and d["process"]["engine"] == "builtin"
    assert d["process"]["nb_run"] == 2 and d["process"]["nb_run_keep"] == 2
    assert d["results"]["run_status"].count(",") == 1
    for key in ("llk_poisson", "llk_poisson_free", "free_llk_poisson", "obj2_out", "mode_llk_poisson"):
        assert np.isfinite(d["results"][key]), key
    assert d["results"]["timings"]["phasing_s"] > 0
    # the support is a compact blob around the centre, of the order of the true crystal
    assert 0.5 < support.sum() / sample["support"].sum() < 2.0
    com = np.argwhere(support).mean(axis=0)
    assert np.all(np.abs(com - 16) < 6)
    # the reconstruction explains the data: its diffraction correlates with the measured one (unmasked voxels)
    calc = np.abs(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj), norm="ortho"))) ** 2
    ok = ~sample["mask"]
    corr = np.corrcoef(np.log1p(calc[ok]), np.log1p(sample["intensity"][ok]))[0, 1]
    assert corr > 0.85, corr
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["c_intensity.png", "c_object.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.cxi", "png"]


def _save(tmp_path, name, array):
    p = tmp_path / name
    np.save(p, array)
    return str(p)


def _cube(n=20, value=5.0):
    """A positive array peaked at the centre (so no 'not centred' warning adds a line)."""
    r2 = ((np.indices((n, n, n)) - n // 2) ** 2).sum(axis=0)
    return (value * np.exp(-r2 / 8.0)).astype(np.float32)


BAD_CASES = {
    "not 3D": (lambda t: [_save(t, "a.npy", np.ones((32, 32), np.float32))], "2D"),
    "NaN": (lambda t: [_save(t, "a.npy", np.where(_cube() > 0, np.nan, 0).astype(np.float32))], "NaN"),
    "negative": (lambda t: [_save(t, "a.npy", -_cube())], "negative"),
    "all zeros": (lambda t: [_save(t, "a.npy", _cube(value=0))], "all zeros"),
    "too small": (lambda t: [_save(t, "a.npy", np.ones((20, 20, 8), np.float32))], "too small"),
    "missing file": (lambda t: [str(t / "nope.npy")], "not found"),
    "missing npz key": (lambda t: [_npz(t) + ":nokey"], "no array 'nokey'"),
    "missing h5 path": (lambda t: [_h5(t) + ":/entry/nothing"], "no dataset '/entry/nothing'"),
    "mask shape": (lambda t: [_save(t, "a.npy", _cube()), "--mask", _save(t, "m.npy", np.zeros((20, 20, 21)))],
                   "does not match the intensity shape"),
    "unknown engine": (lambda t: [_save(t, "a.npy", _cube()), "--engine", "magic"], "unknown engine 'magic'"),
    "bad recipe": (lambda t: [_save(t, "a.npy", _cube()), "--recipe", "ER**"], "recipe"),
    "keep > runs": (lambda t: [_save(t, "a.npy", _cube()), "--runs", "2", "--keep", "3"], "--keep"),
    "output dir missing": (lambda t: [_save(t, "a.npy", _cube()), "--out", str(t / "no" / "r.cxi")],
                           "does not exist"),
}


def _npz(t):
    np.savez(t / "a.npz", intensity=_cube())
    return str(t / "a.npz")


def _h5(t):
    with h5py.File(t / "a.h5", "w") as f:
        f["entry/data"] = _cube()
    return str(t / "a.h5")


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_phase_bad_input(tmp_path, capsys, case):
    """Each bad input: exit 2, exactly one line on stderr naming the problem, no output file."""
    make, needle = BAD_CASES[case]
    args = make(tmp_path)
    before = set(tmp_path.rglob("*"))
    if "--out" not in args:
        args += ["--out", str(tmp_path / "r.cxi")]
    if "--recipe" not in args:
        args += ["--recipe", SHORT]
    code = main(["phase"] + args)
    assert code == 2
    line = _one_line_error(capsys.readouterr().err)
    assert needle in line, line
    assert set(tmp_path.rglob("*")) == before  # nothing written, no temp file left


def test_phase_cuda_unavailable(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present here, so the 'no CUDA' error cannot occur")
    p = _save(tmp_path, "a.npy", _cube())
    assert main(["phase", p, "--out", str(tmp_path / "r.cxi"), "--device", "cuda"]) == 2
    assert "CUDA" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "r.cxi").exists()


def test_phase_pynx_not_installed(tmp_path):
    """With PyNX's interpreter absent (BCDI_PYNX_PYTHON points nowhere), --engine pynx is a one-line error."""
    p = _save(tmp_path, "a.npy", _cube())
    r = _cli("phase", p, "--out", tmp_path / "r.cxi", "--engine", "pynx",
             env={"BCDI_PYNX_PYTHON": str(tmp_path / "no-python3")})
    assert r.returncode == 2
    assert "PyNX is not installed" in _one_line_error(r.stderr)
    assert not (tmp_path / "r.cxi").exists()


def test_phase_bad_input_from_entry_point(tmp_path):
    """Through the real entry point too: one line, no traceback (a file that is not an array)."""
    bad = tmp_path / "a.npy"
    bad.write_text("not numpy")
    r = _cli("phase", bad, "--out", tmp_path / "r.cxi")
    assert r.returncode == 2
    assert "not a readable .npy" in _one_line_error(r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def test_phase_ctrl_c_leaves_nothing(crystal, tmp_path):
    """SIGINT during a long run: exit 130, one line, no CXI and no temp file."""
    path, _ = crystal
    cmd = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli.main"]
    proc = subprocess.Popen(cmd + ["phase", str(path), "--out", str(tmp_path / "r.cxi"), "--recipe", "ER**1000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    # past the torch import, into the iterations: wait for torch to be mapped (a loaded machine can take far
    # longer than usual to import it), then a few seconds more
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and "libtorch_cpu" not in maps.read_text():
        time.sleep(0.5)
    time.sleep(5)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    finally:  # a run that ignored the signal must not outlive the test (ER**1000000 runs for hours)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "using the mask" not in ln]
    assert lines == ["bcdi-recon: interrupted"], err
    assert list(tmp_path.iterdir()) == []


def _run_on_terminal(argv, cwd):
    """Run the entry point on a pseudo-terminal (120 columns); returns (exit code, everything it printed)."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    cmd = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli.main"]
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.chdir(cwd)
        os.execv(cmd[0], cmd + [str(a) for a in argv])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    out = bytearray()
    while select.select([fd], [], [], 120)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out.extend(chunk)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_progress_bar_on_a_terminal(tmp_path):
    code, text = _run_on_terminal(["simulate", "--out", "s.h5", "--n", "3", "--size", "16"], tmp_path)
    assert code == 0, text
    assert "simulate:" in text and "3/3" in text and "sample/s" in text
    assert (tmp_path / "s.h5").exists()


def _system_has_pynx() -> bool:
    r = subprocess.run(["/usr/bin/python3", "-c", "import pynx.cdi"], capture_output=True,
                       env={"PYNX_PU": "cpu", "PATH": "/usr/bin:/bin"}) if Path("/usr/bin/python3").exists() else None
    return r is not None and r.returncode == 0


@pytest.mark.pynx
@pytest.mark.skipif(not _system_has_pynx(), reason="Debian's python3-pynx is not installed in /usr/bin/python3")
def test_phase_with_pynx_engine(crystal, tmp_path):
    """--engine pynx runs the same recipe in real PyNX and writes the same kind of CXI."""
    path, sample = crystal
    out = tmp_path / "p.cxi"
    r = _cli("phase", path, "--out", out, "--engine", "pynx", "--recipe", SHORT, "--seed", "1")
    assert r.returncode == 0, r.stderr
    d = read_cxi(out)
    assert d["process"]["engine"] == "pynx"
    assert d["obj"].shape == (32, 32, 32) and d["support"].any()
    assert np.isfinite(d["results"]["llk_poisson"]) and np.isfinite(d["results"]["pynx_llk_poisson"])
    assert 0.5 < d["support"].sum() / sample["support"].sum() < 2.0
