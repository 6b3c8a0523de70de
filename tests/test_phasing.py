"""Tests of the torch phasing engine (physics.phasing) on small simulated crystals built here with numpy."""
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from physics.errors import InputError
from physics.metrics import compare_to_truth
from physics.phasing import (CDI, ER, HIO, LLK, RAAR, AutoCorrelationSupport, Cancelled, FourierApplyAmplitude,
                             InitFreePixels, InitObjRandom, PhaseConfig, ScaleObj, SupportTooSmall, SupportUpdate,
                             center_on_support, ortho_modes, parse_recipe, phase_runs, run_recipe,
                             torch_threads)


def crystal(n=32, semi=(6.0, 5.0, 4.5), phase_amp=1.0, counts=1e6, seed=0):
    """Centred ellipsoid with a smooth phase (< pi), its intensity scaled to `counts` at the peak, Poisson noise."""
    z, y, x = np.indices((n, n, n)) - n // 2
    sup = (z / semi[0]) ** 2 + (y / semi[1]) ** 2 + (x / semi[2]) ** 2 <= 1
    phase = phase_amp * np.sin(2 * np.pi * (0.6 * z + 0.3 * y) / (2 * semi[0]))
    obj = sup * np.exp(1j * phase)
    f = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj), norm="ortho"))
    scale = counts / (np.abs(f) ** 2).max()
    obj = (obj * np.sqrt(scale)).astype(np.complex64)
    iclean = (np.abs(f) ** 2 * scale).astype(np.float32)
    iobs = np.random.default_rng(seed).poisson(iclean).astype(np.float32)
    return {"obj": obj, "support": sup, "iobs": iobs, "iclean": iclean}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def xtal():
    return crystal()


def fourier(obj):
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj), norm="ortho"))


def test_llk_of_exact_solution_with_poisson_noise_is_about_one(xtal):
    cdi = CDI(xtal["iobs"], obj=xtal["obj"], support=xtal["support"])
    InitFreePixels(seed=1) * cdi
    llk = (LLK() * cdi).get_llk()
    for key in ("llk_poisson", "llk_poisson_free", "llk_gaussian", "llk_euclidian"):
        assert 0.75 < llk[key] < 1.25, (key, llk[key])
    assert llk["obj2_out"] < 0.01
    assert llk["r_factor"] < 0.1
    cdi.set_obj(xtal["obj"] * 1.5)  # a wrong scale is far from ideal
    assert (LLK() * cdi).get_llk()["llk_poisson"] > 20


def test_er_converges_llk_decreases(xtal):
    rng = np.random.default_rng(2)
    start = xtal["obj"] * np.exp(1j * rng.normal(0, 0.8, xtal["obj"].shape))
    cdi = CDI(xtal["iobs"], obj=start, support=xtal["support"])
    values = [(LLK() * cdi).get_llk()["llk_poisson"]]
    for _ in range(6):
        ER() ** 10 * cdi
        values.append((LLK() * cdi).get_llk()["llk_poisson"])
    assert values[-1] < 0.3 * values[0] and values[-1] < 1.5, values
    assert all(b <= a * 1.001 for a, b in zip(values, values[1:])), values
    assert cdi.nb_cycle == 60


def test_hio_raar_er_recovers_low_strain_object_from_random_start(xtal):
    cdi = CDI(xtal["iobs"])
    InitFreePixels(seed=0) * cdi
    AutoCorrelationSupport(0.1) * cdi
    ScaleObj("F") * InitObjRandom(seed=4) * cdi
    run_recipe(cdi, "HIO**150,RAAR**250,ER**150", SupportUpdate(threshold_relative=0.25), update_period=20)
    m = compare_to_truth(cdi.get_obj(), xtal["obj"], truth_support=xtal["support"])
    assert m["phase_rmse"] < 0.3 and m["phase_rmse_weighted"] < 0.3, m
    assert m["iou"] > 0.8, m
    llk = (LLK() * cdi).get_llk()
    assert llk["llk_poisson_free"] < 2 and llk["obj2_out"] < 0.1, llk


def test_phase_runs_selects_and_builds_modes(xtal):
    calls = []
    res = phase_runs(xtal["iobs"], config=PhaseConfig(recipe="HIO**100,RAAR**150,ER**100", nb_run=3, nb_keep=2,
                                                       seed=1), progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (3 * 350, 3 * 350)
    assert len(res.runs) == 3 and len(res.kept) == 2
    scores = [res.runs[i]["score"] for i in res.kept]
    assert scores == sorted(scores)
    ok = [r for r in res.runs if r["status"] == "ok"]
    assert min(r["score"] for r in ok) == scores[0]
    assert all(r["obj2_out"] <= 0.10 for r in ok)
    assert 0.5 < res.first_mode_weight <= 1.0 + 1e-9
    assert np.isclose(res.mode_weights.sum(), 1.0)
    assert np.isclose(np.linalg.norm(res.obj), np.linalg.norm(res.best_obj), rtol=1e-3)
    assert 0.04 < res.free_mask.mean() < 0.06
    m = compare_to_truth(res.obj, xtal["obj"], truth_support=xtal["support"])
    assert m["phase_rmse"] < 0.3 and m["iou"] > 0.8, m
    assert res.support.shape == xtal["iobs"].shape and res.support.dtype == bool
    com = np.array(ndi.center_of_mass(res.support))
    np.testing.assert_allclose(com, 16, atol=1.0)  # centred at n//2


def test_center_on_support_unwraps_a_crystal_split_across_the_edges(xtal):
    obj = np.roll(xtal["obj"], (16, 3, -16), axis=(0, 1, 2))
    sup = np.roll(xtal["support"], (16, 3, -16), axis=(0, 1, 2))
    o, s, roll = center_on_support(obj, sup)
    assert (s == xtal["support"]).all() and np.array_equal(o, xtal["obj"])
    assert all((r + k) % 32 == 0 for r, k in zip(roll, (16, 3, -16)))


def test_ortho_modes_weights():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 8, 8)) + 1j * rng.normal(size=(8, 8, 8))
    modes, w = ortho_modes([a, 2 * a * np.exp(1j), a])
    assert w[0] == pytest.approx(1.0) and modes.shape[0] == 1
    assert np.linalg.norm(modes[0]) == pytest.approx(1.0, rel=1e-5)
    b = rng.normal(size=(8, 8, 8)) + 0j
    b -= np.vdot(a, b) / np.vdot(a, a) * a  # orthogonal to a, same norm below
    b *= np.linalg.norm(a) / np.linalg.norm(b)
    modes, w = ortho_modes([a, b])
    np.testing.assert_allclose(w, [0.5, 0.5], atol=1e-6)
    assert abs(np.vdot(modes[0], modes[1])) < 1e-5


def test_phase_runs_all_rejected_by_obj2_out_warns(xtal):
    res = phase_runs(xtal["iobs"], config=PhaseConfig(recipe="ER**20", nb_run=2, nb_keep=1, seed=0, max_obj2_out=0.0))
    assert all(r["status"] == "rejected_obj2_out" for r in res.runs)
    assert res.warnings and len(res.kept) == 1


def _wrap_band(support, n):
    """Independent reference: dilate_n(S) & ~erode_n(S) with scipy (periodic box filters)."""
    s = support.astype(np.uint8)
    dil = ndi.maximum_filter(s, size=2 * n + 1, mode="wrap") > 0
    ero = ndi.minimum_filter(s, size=2 * n + 1, mode="wrap") > 0
    return dil & ~ero


@pytest.mark.parametrize("n", [1, 2])
def test_border_n_only_changes_voxels_near_the_border(xtal, n):
    start = ndi.binary_dilation(xtal["support"], iterations=4)  # too large a support
    cdi = CDI(xtal["iobs"], obj=xtal["obj"], support=start)
    SupportUpdate(threshold_relative=0.3, smooth_width=0.5, border_n=n) * cdi
    new = cdi.get_support()
    changed = new != start
    assert changed.sum() > 0
    assert not changed[~_wrap_band(start, n)].any()
    # without the band the same update changes voxels far from the border, so the check above is meaningful
    free = CDI(xtal["iobs"], obj=xtal["obj"], support=start)
    SupportUpdate(threshold_relative=0.3, smooth_width=0.5) * free
    assert (free.get_support() != start)[~_wrap_band(start, n)].any()


def test_force_shrink_never_adds_voxels(xtal):
    start = ndi.binary_erosion(xtal["support"], iterations=1)
    cdi = CDI(xtal["iobs"], obj=xtal["obj"] * 1.0, support=start)
    SupportUpdate(threshold_relative=0.1, smooth_width=1.0) * cdi
    assert (cdi.get_support() & ~start).any()  # a normal update grows it here
    cdi = CDI(xtal["iobs"], obj=xtal["obj"], support=start)
    for _ in range(3):
        SupportUpdate(threshold_relative=0.1, smooth_width=1.0, force_shrink=True) * ER() ** 5 * cdi
    assert not (cdi.get_support() & ~start).any()


def test_support_guards_retune_threshold(xtal):
    cdi = CDI(xtal["iobs"], obj=xtal["obj"], support=xtal["support"])
    sup = SupportUpdate(threshold_relative=3.0, smooth_width=0.5, min_fraction=0.005)
    sup * cdi
    assert sup.nb_retune > 0 and sup.threshold_relative < 3.0
    assert cdi.nb_support > 0.005 * xtal["iobs"].size
    assert cdi.support_threshold == pytest.approx(sup.threshold_relative)

    obj = xtal["obj"] + 0.2 * np.abs(xtal["obj"]).max()  # a pedestal everywhere: tiny threshold keeps it all
    cdi = CDI(xtal["iobs"], obj=obj, support=xtal["support"])
    sup = SupportUpdate(threshold_relative=0.05, smooth_width=0.5, max_fraction=0.5)
    sup * cdi
    assert sup.nb_retune > 0 and sup.threshold_relative > 0.05
    assert cdi.nb_support < 0.5 * xtal["iobs"].size

    cdi = CDI(xtal["iobs"], obj=xtal["obj"], support=xtal["support"])
    with pytest.raises(SupportTooSmall):
        SupportUpdate(threshold_relative=3.0, smooth_width=0.5, min_fraction=0.005, retune=False) * cdi


def test_free_pixels_and_masked_voxels_keep_calculated_value(xtal):
    mask = np.zeros(xtal["iobs"].shape, dtype=bool)
    mask[:, 14:16, :] = True  # a detector gap
    cdi = CDI(xtal["iobs"], mask=mask, obj=xtal["obj"] * 0.7, support=xtal["support"])
    InitFreePixels(seed=3) * cdi
    free = cdi.get_free_mask()
    assert 0.04 < free.sum() / (~mask).sum() < 0.06
    assert not (free & mask).any()
    n = free.shape[0]
    z, y, x = np.indices(free.shape) - n // 2
    assert not free[(z ** 2 + y ** 2 + x ** 2) < (0.05 * n) ** 2].any()  # centre excluded
    before = fourier(cdi.get_obj())
    FourierApplyAmplitude() * cdi
    after = fourier(cdi.get_obj())
    keep = free | mask
    np.testing.assert_allclose(after[keep], before[keep], atol=1e-3 * np.abs(before).max())
    obs = ~keep
    np.testing.assert_allclose(np.abs(after[obs]), np.sqrt(xtal["iobs"][obs]), atol=1e-2, rtol=1e-3)
    # same seed, same free mask
    other = CDI(xtal["iobs"], mask=mask)
    InitFreePixels(seed=3) * other
    assert (other.get_free_mask() == free).all()


def test_autocorrelation_support_contains_object_and_scaleobj(xtal):
    cdi = CDI(xtal["iobs"])
    AutoCorrelationSupport(0.1) * cdi
    s = cdi.get_support()
    assert (s | ~xtal["support"]).all()  # contains the (centred) crystal
    assert xtal["support"].sum() < s.sum() < 0.7 * s.size
    cdi.set_support(xtal["support"])
    cdi.set_obj(xtal["obj"] * 0.3)
    ScaleObj("F") * cdi
    ratio = np.abs(cdi.get_obj()).sum() / np.abs(xtal["obj"]).sum()
    assert ratio == pytest.approx(1.0, rel=0.02)


def test_hio_and_raar_update_outside_support_as_pynx(xtal):
    rng = np.random.default_rng(0)
    start = (rng.normal(size=xtal["obj"].shape) + 1j * rng.normal(size=xtal["obj"].shape)).astype(np.complex64)
    for op, beta in ((HIO(beta=0.7), 0.7), (RAAR(beta=0.7), 0.7), (ER(), None)):
        cdi = CDI(xtal["iobs"], obj=start, support=xtal["support"])
        pm = CDI(xtal["iobs"], obj=start, support=xtal["support"])
        FourierApplyAmplitude() * pm
        op * cdi
        s, p, o = xtal["support"], pm.get_obj(), cdi.get_obj()
        np.testing.assert_allclose(o[s], p[s], atol=1e-4)
        if isinstance(op, HIO):
            expected = start - beta * p
        elif isinstance(op, RAAR):
            expected = (1 - 2 * beta) * p + beta * start
        else:
            expected = np.zeros_like(p)
        np.testing.assert_allclose(o[~s], expected[~s], atol=1e-4)


def test_composition_recipe_parsing_progress_and_cancel(xtal):
    cdi = CDI(xtal["iobs"], obj=xtal["obj"], support=xtal["support"])
    (ER() ** 3 * HIO() ** 2) ** 2 * cdi
    assert cdi.nb_cycle == 10
    assert parse_recipe("ER**2,(Sup*ER*HIO**2)**2") == ["ER", "ER"] + ["HIO", "HIO", "ER", "Sup"] * 2
    assert parse_recipe("hio**2, raar , er**1") == ["HIO", "HIO", "RAAR", "ER"]
    for bad in ("", "ER**", "FOO**3", "ER**2)", "ER**x"):
        with pytest.raises(InputError):
            parse_recipe(bad)
    seen = []
    run_recipe(cdi, "RAAR**5,ER**5", SupportUpdate(), update_period=4, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 10) for i in range(1, 11)]
    assert len(cdi.history) == 2  # support updated after cycles 4 and 8
    count = {"n": 0}

    def cancel():
        count["n"] += 1
        return count["n"] > 3

    with pytest.raises(Cancelled):
        run_recipe(cdi, "ER**50", None, should_cancel=cancel)
    assert cdi.nb_cycle == 20 + 3


def test_sigma_schedule():
    sup = SupportUpdate(smooth_width=(2.0, 0.5, 100))
    assert sup.sigma(0) == pytest.approx(2.0)
    assert sup.sigma(50) == pytest.approx(1.0)
    assert sup.sigma(100) == pytest.approx(0.5) and sup.sigma(500) == pytest.approx(0.5)
    assert SupportUpdate(smooth_width=1.5).sigma(0) == pytest.approx(1.5)


def test_bad_input_is_rejected_with_input_error(xtal):
    with pytest.raises(InputError, match="3D"):
        CDI(np.ones((8, 8)))
    with pytest.raises(InputError, match="negative"):
        CDI(-np.ones((8, 8, 8)))
    with pytest.raises(InputError, match="shape"):
        CDI(xtal["iobs"], mask=np.zeros((8, 8, 8), bool))
    with pytest.raises(InputError, match="NaN"):
        CDI(np.full((8, 8, 8), np.nan))
    with pytest.raises(InputError):
        SupportUpdate(method="median")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            CDI(xtal["iobs"], device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_gives_the_same_result_as_cpu(xtal):
    out = {}
    for dev in ("cpu", "cuda"):
        cdi = CDI(xtal["iobs"], device=dev)
        InitFreePixels(seed=0) * cdi
        AutoCorrelationSupport(0.1) * cdi
        ScaleObj("F") * InitObjRandom(seed=1) * cdi
        run_recipe(cdi, "HIO**20,ER**20", SupportUpdate(border_n=1), update_period=10)
        out[dev] = (cdi.get_obj(), cdi.get_support(), (LLK() * cdi).get_llk())
    np.testing.assert_allclose(out["cuda"][0], out["cpu"][0], atol=1e-3 * np.abs(out["cpu"][0]).max())
    assert (out["cuda"][1] == out["cpu"][1]).mean() > 0.999
    assert out["cuda"][2]["llk_poisson"] == pytest.approx(out["cpu"][2]["llk_poisson"], rel=1e-3)


def test_conventions_match_the_simulator():
    simulate = pytest.importorskip("physics.simulate")
    s = simulate.simulate_sample(0, simulate.SimParams(size=32, phase_range=(1.0, 2.0), oversampling=(3.0, 3.5),
                                                        peak_counts=(1e6, 1e6)))
    cdi = CDI(s["intensity_clean"], obj=s["object"], support=s["support"])
    llk = cdi.compute_llk()
    assert llk["r_factor"] < 1e-3 and abs(llk["llk_gaussian"]) < 1e-3
    np.testing.assert_allclose(np.abs(fourier(cdi.get_obj())) ** 2, s["intensity_clean"],
                               atol=1e-4 * s["intensity_clean"].max())


def test_non_cubic_odd_shapes_round_trip_and_run():
    rng = np.random.default_rng(0)
    shape = (20, 27, 33)
    z, y, x = np.indices(shape) - np.array(shape)[:, None, None, None] // 2
    sup = (z / 5) ** 2 + (y / 6) ** 2 + (x / 7) ** 2 <= 1
    obj = (sup * np.exp(0.5j * np.sin(0.3 * x))).astype(np.complex64)
    iobs = np.random.default_rng(1).poisson(np.abs(fourier(obj)) ** 2 * 1e3).astype(np.float32)
    cdi = CDI(iobs, obj=obj, support=sup)
    np.testing.assert_array_equal(cdi.get_obj(), obj)  # centred in, centred out
    np.testing.assert_array_equal(cdi.get_support(), sup)
    InitFreePixels(seed=0) * cdi
    assert 0.03 < cdi.get_free_mask().mean() < 0.07
    cdi.set_obj(obj * np.exp(1j * rng.normal(0, 0.3, shape)) * np.sqrt(1e3))
    run_recipe(cdi, "RAAR**10,ER**10", SupportUpdate(border_n=1), update_period=5)
    assert cdi.get_obj().shape == shape and cdi.nb_support > 0
    assert (LLK() * cdi).get_llk()["llk_poisson"] < 5


def test_post_expand_opening_removes_isolated_voxels(xtal):
    obj = xtal["obj"].copy()
    obj[2, 2, 2] = np.abs(obj).max()  # an isolated bright voxel far from the crystal
    plain = CDI(xtal["iobs"], obj=obj, support=xtal["support"])
    SupportUpdate(threshold_relative=0.25, smooth_width=0.0) * plain
    assert plain.get_support()[2, 2, 2]
    opened = CDI(xtal["iobs"], obj=obj, support=xtal["support"])
    SupportUpdate(threshold_relative=0.25, smooth_width=0.0, post_expand=(-1, 1)) * opened
    assert not opened.get_support()[2, 2, 2]
    assert support_iou_np(opened.get_support(), plain.get_support()) > 0.8


def support_iou_np(a, b):
    return (a & b).sum() / (a | b).sum()


def test_torch_threads_is_scoped():
    before = torch.get_num_threads()
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_smoothing_is_scipy_gaussian_filter_with_periodic_boundaries(xtal):
    rng = np.random.default_rng(0)
    obj = (xtal["obj"] * (1 + 0.3 * rng.normal(size=xtal["obj"].shape))).astype(np.complex64)
    cdi = CDI(xtal["iobs"], obj=obj)
    for sigma in (0.5, 1.3, 2.0):
        ours = np.fft.fftshift(cdi.smoothed_modulus(sigma).numpy())
        ref = ndi.gaussian_filter(np.abs(obj), sigma, mode="wrap")
        np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(obj).max())


def test_zero_mask_forces_masked_voxels_to_zero_and_auto_releases_them():
    """zero_mask=True: the projection sets masked Fourier voxels to 0; 'auto' (PyNX BCDI runner) only during the
    first 60 % of HIO/RAAR, so after the recipe the masked voxels are free again."""
    import torch

    from physics.phasing import CDI, run_recipe
    from physics.simulate import SimParams, simulate_sample

    s = simulate_sample(12, SimParams(size=32, phase_range=(0.5, 1.0), gap_probability=1.0))
    start = s["object"] * np.exp(1j * np.random.default_rng(0).normal(0, 0.3, s["object"].shape))
    cdi = CDI(s["intensity"], mask=s["mask"], obj=start, support=s["support"])
    gap = np.fft.ifftshift(s["mask"])  # internal (fft-shifted) layout
    free = torch.fft.fftn(cdi._project(), norm="ortho").abs().numpy()
    assert free[gap].max() > 1e-2 * free.max()  # left free: the calculated amplitude stays in the gap
    run_recipe(cdi, "ER**1", zero_mask=True)
    assert not cdi.zero_mask  # a recipe leaves the masked voxels free again
    cdi.zero_mask = True
    zeroed = torch.fft.fftn(cdi._project(), norm="ortho").abs().numpy()
    assert zeroed[gap].max() < 1e-4 * zeroed.max()
    with pytest.raises(InputError, match="zero_mask"):
        run_recipe(cdi, "ER**1", zero_mask="sometimes")
