"""PyNX as a second engine: recipe translation, availability errors, real-PyNX agreement with the built-in engine."""

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from physics.errors import InputError
from workers.engines import pynx_child, pynx_engine
from workers.engines.pynx_engine import (INSTALL_HINT, PyNXEngine, PyNXError, PyNXUnavailable, compile_recipe,
                                         pynx_available, pynx_run_recipe)

SU = dict(threshold_relative=0.25, method="rms", smooth_width=(2.0, 0.5, None), force_shrink=False, border_n=0)


def test_recipe_becomes_pynx_segments_with_periodic_support_updates():
    segments, su = compile_recipe("RAAR**30,ER**30", 20, SU)
    assert segments == [["RAAR", 20, False], ["Sup", 1, False], ["RAAR", 10, False], ["ER", 10, False],
                        ["Sup", 1, False], ["ER", 20, False], ["Sup", 1, False]]
    assert su["smooth_width"] == [2.0, 0.5, 30]  # n=None -> the recipe's HIO+RAAR cycle count, as run_recipe
    assert pynx_child.chain_string(segments) == "Sup*ER**20*Sup*ER**10*RAAR**10*Sup*RAAR**20"
    segments, _ = compile_recipe("HIO**40,ER**40", 20, SU)
    assert pynx_child.chain_string(segments) == "(Sup*ER**20)**2*(Sup*HIO**20)**2"


def test_explicit_sup_in_recipe_disables_periodic_updates():
    segments, _ = compile_recipe("ER**10,(Sup*ER**5)**2", 20, SU)
    assert segments == [["ER", 15, False], ["Sup", 1, False], ["ER", 5, False], ["Sup", 1, False]]


def test_zero_mask_auto_zeroes_masked_voxels_in_the_first_60_percent_of_hio_raar():
    segments, _ = compile_recipe("HIO**50,ER**10", 20, SU, zero_mask="auto", has_mask=True)
    assert segments == [["HIO", 20, True], ["Sup", 1, False], ["HIO", 10, True], ["HIO", 10, False],
                        ["Sup", 1, False], ["HIO", 10, False], ["ER", 10, False], ["Sup", 1, False]]
    segments, _ = compile_recipe("HIO**50,ER**10", 20, SU, zero_mask="auto", has_mask=False)
    assert all(seg[2] is False for seg in segments)  # nothing masked: zero_mask has no effect


def test_no_support_update_means_no_sup_segment():
    segments, su = compile_recipe("ER**45", 20, None)
    assert su is None and segments == [["ER", 45, False]]


@pytest.mark.parametrize("recipe", ["", "ER**x", "FOO**3", "ER**10,"])
def test_bad_recipe_is_an_input_error(recipe):
    with pytest.raises(InputError):
        compile_recipe(recipe, 20, SU)


def test_bad_support_update_key_is_an_input_error():
    with pytest.raises(InputError, match="unknown support_update keys: treshold"):
        compile_recipe("ER**10", 20, dict(treshold=0.2))


def test_missing_pynx_names_the_install_script(monkeypatch):
    monkeypatch.setattr(pynx_engine, "PYNX_PYTHON", "/nonexistent/python3")
    pynx_engine.pynx_available.cache_clear()
    try:
        assert not pynx_engine._in_process()  # our venv has numpy 2: PyNX only lives in Debian's python3
        assert pynx_available() is False
        with pytest.raises(PyNXUnavailable, match="install-pynx.sh"):
            pynx_run_recipe(np.ones((8, 8, 8), np.float32), recipe="ER**2")
    finally:
        pynx_engine.pynx_available.cache_clear()


def _crystal(n=48):
    """Low-strain simulated crystal, a noisy-phase starting object inside a dilated support, and a free mask."""
    from physics.phasing import free_pixel_mask
    from physics.simulate import SimParams, simulate_sample

    s = simulate_sample(3, SimParams(size=n, phase_range=(0.5, 1.0), peak_counts=(1e6, 1e6)))
    iobs = s["intensity"]
    support = binary_dilation(s["support"], iterations=3)
    psi = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(s["object"]), norm="ortho"))
    phase = np.angle(psi) + np.random.default_rng(0).normal(0, 1.0, psi.shape)
    obj = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(np.sqrt(iobs) * np.exp(1j * phase)), norm="ortho"))
    return iobs, (obj * support).astype(np.complex64), support, free_pixel_mask(iobs.shape, seed=1), s


@pytest.mark.pynx
@pytest.mark.skipif(not pynx_available(), reason=f"PyNX not installed: run {INSTALL_HINT}")
def test_same_recipe_same_start_agrees_with_builtin():
    """Same data, start, support, free mask and recipe: final LLK, free LLK and support size within 5 %."""
    import torch

    from physics.phasing import CDI, LLK, SupportUpdate, run_recipe

    recipe = "RAAR**100,ER**100"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 OpenMP threads on this shared 2-core machine are many times slower under load
    iobs, obj, support, free, _ = _crystal()
    ours = CDI(iobs, obj=obj, support=support, free_mask=free)
    sw = SU["smooth_width"]
    run_recipe(ours, recipe, SupportUpdate(threshold_relative=0.25, method="rms", smooth_width=sw, border_n=0),
               update_period=20)
    ours = LLK() * ours
    a = ours.get_llk()
    torch.set_num_threads(before)
    b = pynx_run_recipe(iobs, obj=obj, support=support, free_mask=free, recipe=recipe, support_update=SU,
                        update_period=20)
    assert b["chain"] == "(Sup*ER**20)**5*(Sup*RAAR**20)**5"
    assert np.array_equal(b["free_mask"], free)
    assert abs(b["llk_poisson"] - a["llk_poisson"]) <= 0.05 * a["llk_poisson"]
    assert abs(b["llk_poisson_free"] - a["llk_poisson_free"]) <= 0.05 * a["llk_poisson_free"]
    assert abs(b["support_size"] - a["support_size"]) <= 0.05 * a["support_size"]
    # PyNX's own CPU get_llk uses the same normalisation and factor 2 as ours, on the same iterate
    assert b["pynx_llk_poisson"] == pytest.approx(b["llk_poisson"], rel=0.01)
    assert b["pynx_llk_poisson_free"] == pytest.approx(b["llk_poisson_free"], rel=0.01)
    # and the fit is a real one: a statistically sensible LLK, the support shrunk from the dilated start
    assert 0.5 < a["llk_poisson"] < 3 and a["support_size"] < support.sum()


@pytest.mark.pynx
@pytest.mark.skipif(not pynx_available(), reason=f"PyNX not installed: run {INSTALL_HINT}")
def test_pynx_failure_is_a_one_line_error():
    iobs, obj, support, free, _ = _crystal(32)
    with pytest.raises(PyNXError) as e:
        pynx_run_recipe(iobs, obj=obj, support=support, free_mask=free, recipe="ER**20",
                        support_update=dict(threshold_relative=50.0), update_period=10)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("PyNX failed:") and "SupportTooSmall" in msg


@pytest.mark.pynx
@pytest.mark.skipif(not pynx_available(), reason=f"PyNX not installed: run {INSTALL_HINT}")
def test_pynx_engine_in_phase_runs_selects_and_combines_like_builtin():
    from physics.phasing import MultiRunResult, PhaseConfig, phase_runs

    iobs, _, _, _, s = _crystal(32)
    mask = np.zeros(iobs.shape, bool)
    mask[:, 22:24, :] = True  # a detector gap away from the peak: exercises zero_mask="auto" inside PyNX
    done = []
    res = phase_runs(iobs, mask=mask, config=PhaseConfig(recipe="HIO**60,ER**40", nb_run=3, nb_keep=2, seed=5,
                                                         zero_mask="auto"),
                     engine=PyNXEngine(), progress=lambda d, t: done.append((d, t)))
    assert isinstance(res, MultiRunResult)
    assert len(res.runs) == 3 and 1 <= len(res.kept) <= 2
    assert done[-1] == (300, 300) and len(done) == 3  # one progress report per PyNX run
    assert res.obj.shape == iobs.shape and res.obj.dtype == np.complex64 and res.support.dtype == bool
    assert 0 < res.first_mode_weight <= 1
    best = res.runs[res.kept[0]]
    assert best["status"] == "ok" and best["obj2_out"] <= 0.10
    # zero_mask "auto": HIO cycles 1-36 (60 %) in a separate block from cycles 37-60
    assert best["chain"] == "(Sup*ER**20)**2*Sup*HIO**20*Sup*HIO**4*HIO**16*Sup*HIO**20"
    assert not np.any(res.free_mask & mask)
    assert best["pynx_llk_poisson_free"] == pytest.approx(best["llk_poisson_free"], rel=0.02)
    kept_scores = [res.runs[i]["score"] for i in res.kept]
    assert kept_scores == sorted(kept_scores)
    # the reconstructed support covers a sensible fraction of the true crystal (not empty, not the whole box)
    assert 0.3 * s["support"].sum() < res.support.sum() < 4 * s["support"].sum()


@pytest.mark.pynx
@pytest.mark.skipif(not pynx_available(), reason=f"PyNX not installed: run {INSTALL_HINT}")
def test_child_protocol_standalone(tmp_path):
    """The child script alone (Debian python3, no package of ours): npz + JSON in, npz + JSON out, or error.txt."""
    import json
    import subprocess

    iobs, obj, support, free, _ = _crystal(32)
    np.savez(tmp_path / "in.npz", iobs=iobs, obj=obj, support=support, free_mask=free)
    segments, su = compile_recipe("ER**30", 10, dict(threshold_relative=0.25))  # the parent's one schedule
    (tmp_path / "params.json").write_text(json.dumps(dict(recipe="ER**30", segments=segments, support_update=su)))
    r = subprocess.run([pynx_engine.PYNX_PYTHON, str(pynx_engine.CHILD), str(tmp_path)], env=pynx_engine._child_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "out.json").read_text())
    run = info["runs"][0]
    assert info["pynx_version"] and run["nb_cycle"] == 30 and run["chain"] == "(Sup*ER**10)**3"
    with np.load(tmp_path / "out.npz") as f:
        assert f["obj_0"].shape == iobs.shape and np.array_equal(f["free_mask"], free)
        assert f["support_0"].sum() == run["support_size"]
    (tmp_path / "in.npz").unlink()
    r = subprocess.run([pynx_engine.PYNX_PYTHON, str(pynx_engine.CHILD), str(tmp_path)], env=pynx_engine._child_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    err = (tmp_path / "error.txt").read_text()
    assert "\n" not in err.strip() and "in.npz" in err
