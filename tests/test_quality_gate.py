"""The quality gate (physics/quality.py) on a clear success (the true crystal) and a clear failure (a random
object in the autocorrelation support), and the single standard run styles (physics/phasing/single_run.py)."""
import math

import numpy as np
import pytest

from physics.align import fourier_shift, twin
from physics.errors import InputError
from physics.oversampling import fill_masked
from physics.quality import (GateThresholds, agreement, amplitude_metrics, autocorrelation_support_size,
                             gate_values, judge, judge_set)
from physics.simulate import SimParams, simulate_sample


@pytest.fixture(scope="module")
def crystal():
    return simulate_sample(5_900_000, SimParams(phase_range=(0.5, math.pi)))


def _random_candidate(sample, seed=3):
    rng = np.random.default_rng(seed)
    i = sample["intensity"]
    ac = np.abs(np.fft.fftshift(np.fft.fftn(i)))  # centred, like every array of the project
    sup = ac > 0.1 * ac.max()
    obj = sup * rng.uniform(0, 1, i.shape) * np.exp(2j * np.pi * rng.uniform(size=i.shape))
    return obj.astype(np.complex64), sup


def test_gate_passes_the_true_crystal_and_rejects_a_random_object(crystal, one_torch_thread):
    from physics.phasing import free_pixel_mask

    free = free_pixel_mask(crystal["intensity"].shape, seed=1)
    thr = GateThresholds()
    good = gate_values(crystal["object"], crystal["support"], crystal["intensity"], crystal["mask"], free)
    assert good["llk_free"] < 2.0 and good["obj2_out"] < 0.05
    assert thr.min_support_ratio <= good["support_ratio"] <= thr.max_support_ratio
    # the amplitude figures on the crystal's shape are recorded beside the support's (not judged yet); with a
    # support one voxel wider than the crystal, the shape's mean_to_max stays near the crystal's own
    from scipy.ndimage import binary_dilation

    slack = gate_values(crystal["object"], binary_dilation(crystal["support"]), crystal["intensity"],
                        crystal["mask"], free)
    assert slack["mean_to_max"] > good["mean_to_max"] + 0.05
    assert abs(slack["mean_to_max_shape"] - good["mean_to_max_shape"]) < 0.05 and "sharpness_shape" in good
    # a second, independent-looking candidate: the same crystal's twin, shifted by 1.5 voxels, other phase offset
    other = fourier_shift(twin(crystal["object"]), (1.5, -1.0, 0.5)) * np.exp(1j * 2.0)
    m = agreement(crystal["object"], other)
    assert m < 0.02
    assert judge(good, thr, m) == ("ok", [])

    obj, sup = _random_candidate(crystal)
    bad = gate_values(obj, sup, crystal["intensity"], crystal["mask"], free)
    assert bad["llk_free"] > 2 * thr.max_llk_free  # far outside the limit, not on its edge
    status, why = judge(bad, thr, agreement(crystal["object"], obj))
    assert status == "uncertain" and any("free LLK" in w for w in why)
    assert agreement(crystal["object"], obj) > 0.5


def test_agreement_is_required_when_asked(crystal):
    vals = {"llk_free": 1.0, "obj2_out": 0.0, "support_ratio": 0.12, "mean_to_max": 0.2}
    agree = GateThresholds(require_agreement=True)
    assert judge(vals, agree, None)[0] == "uncertain"
    assert judge(vals, GateThresholds(require_agreement=False), None) == ("ok", [])
    assert judge(vals, agree, 0.5)[0] == "uncertain"
    # judge_set: two agreeing passing candidates are ok, the random one is not, and mismatches are cached
    obj, sup = _random_candidate(crystal)
    objs = [crystal["object"], np.roll(crystal["object"], 2, axis=0), obj]
    vals3 = [vals, vals, {"llk_free": 500.0, "obj2_out": 0.3, "support_ratio": 0.5, "mean_to_max": 0.8}]
    cache = {}
    out = judge_set(objs, vals3, agree, cache)
    assert [o["status"] for o in out] == ["ok", "ok", "uncertain"]
    # independent partners: two candidates of one start do not vouch for each other
    ind = GateThresholds(require_agreement=True, independent_partners=True)
    assert [o["status"] for o in judge_set(objs, vals3, ind, {}, groups=["cnn", "cnn", "run"])] == ["uncertain"] * 3
    assert list(cache) == [(0, 1)] and cache[(0, 1)] < 0.02


def test_autocorrelation_bound_and_amplitude_metrics(crystal):
    n = int(crystal["support"].sum())
    ac = autocorrelation_support_size(crystal["intensity"], crystal["mask"])
    assert 4 * n < ac < 12 * n  # ~8x the volume of a compact crystal
    # bad pixels (0.1 %, isolated) and a detector gap band, zeroed in the data and masked: the bound must not grow
    # with them (zeroed, bright ones put a flat floor under the autocorrelation: 5-40x larger)
    rng = np.random.default_rng(0)
    mask = rng.uniform(size=crystal["intensity"].shape) < 1e-3
    c = np.array(crystal["intensity"].shape) // 2
    mask[tuple(c + 2)] = mask[c[0], c[1], c[2] + 4] = True  # two bright voxels on the peak's flanks (1 % of it)
    mask[:, c[1] + 10:c[1] + 14, :] = True
    zeroed = np.where(mask, 0, crystal["intensity"])
    assert autocorrelation_support_size(zeroed, None) > 2 * ac  # what the data do to a bound that ignores the mask
    assert 0.8 * ac < autocorrelation_support_size(zeroed, mask) < 1.25 * ac
    # a detector gap (6 planes) across the Bragg peak: a local mean cannot bridge it, the autocorrelation's
    # compactness can (physics.oversampling.fill_compact)
    strained = simulate_sample(5_900_000, SimParams(phase_range=(2 * math.pi, 5 * math.pi)))
    i_s = strained["intensity"]
    gap = np.zeros(i_s.shape, bool)
    gap[:, c[1] - 3:c[1] + 3, :] = True
    i_gap, ac_s = np.where(gap, 0, i_s), autocorrelation_support_size(i_s, None)
    local = np.abs(np.fft.fftn(fill_masked(i_gap, gap)))
    assert (local > 1e-3 * local.max()).sum() > 1.5 * ac_s  # the bound as it was (local mean): 1.7x
    assert 0.7 * ac_s < autocorrelation_support_size(i_gap, gap) < 1.2 * ac_s  # measured 0.81x
    # a faint pattern (3e3 photons at the peak): the bound stands above the Poisson noise floor, in photons
    faint = simulate_sample(5_900_000, SimParams(phase_range=(0.5, math.pi), peak_counts=(3e3, 3e3)))
    n_f, i_f = int(faint["support"].sum()), faint["intensity"]
    assert 4 * n_f < autocorrelation_support_size(i_f, faint["mask"]) < 12 * n_f
    assert autocorrelation_support_size(i_f, None, photon_scale=1e12) > 30 * n_f  # 1e-3 of the max alone: noise
    assert 4 * n_f < autocorrelation_support_size(i_f / 50.0, None, photon_scale=50.0) < 12 * n_f  # other units
    with pytest.raises(InputError):
        autocorrelation_support_size(i_f, None, photon_scale=0.0)
    flat = amplitude_metrics(np.ones((8, 8, 8)), np.ones((8, 8, 8), bool))
    assert flat["mean_to_max"] == pytest.approx(0.0) and flat["sharpness"] == pytest.approx(1.0)
    peaky = np.zeros((8, 8, 8))
    peaky[4, 4, 4] = 1.0
    peaky[4, 4, 5] = 0.1
    m = amplitude_metrics(peaky, peaky > 0)
    assert m["mean_to_max"] > 0.4 and m["sharpness"] > 1.5
    with pytest.raises(InputError):
        GateThresholds(min_support_ratio=0.3, max_support_ratio=0.2)


@pytest.mark.parametrize("style", ["pynx", "cohere"])
def test_single_run_styles_solve_an_easy_crystal(style, one_torch_thread):
    from physics.metrics import compare_to_truth
    from physics.phasing.single_run import single_run

    s = simulate_sample(5_900_001, SimParams(phase_range=(0.2, 0.8)))
    r = single_run(s["intensity"], s["mask"], style=style, recipe="HIO**100,RAAR**200,ER**100", seed=2)
    m = compare_to_truth(r["obj"], s["object"], truth_support=s["support"], recon_support=r["support"])
    assert m["phase_rmse"] < 0.5 and m["iou"] > 0.7, m
    assert r["llk"]["obj2_out"] < 0.1 and r["style"] == style
    with pytest.raises(InputError):
        single_run(s["intensity"], style="genetic")


def test_confirmation_zone_needs_an_independent_partner(crystal):
    """Above confirm_mean_to_max a candidate that passes the single checks is ok only when a candidate of another
    start agrees; below it, it passes alone; two refinements of one start do not vouch for each other."""
    thr = GateThresholds()
    assert thr.confirm_mean_to_max is not None and thr.confirm_mean_to_max < thr.max_mean_to_max
    clear = {"llk_free": 1.0, "obj2_out": 0.0, "support_ratio": 0.12, "mean_to_max": thr.confirm_mean_to_max - 0.1}
    zone = dict(clear, mean_to_max=(thr.confirm_mean_to_max + thr.max_mean_to_max) / 2)
    assert judge(clear, thr, None) == ("ok", [])
    status, why = judge(zone, thr, None)
    assert status == "uncertain" and "needs confirmation" in why[0]
    assert judge(zone, thr, thr.max_mismatch / 2) == ("ok", [])
    assert judge(zone, thr, thr.max_mismatch * 2)[0] == "uncertain"
    assert judge(zone, GateThresholds(confirm_mean_to_max=None), None) == ("ok", [])  # the zone switched off
    # judge_set on real objects: the crystal and its shifted copy agree; only across starts
    objs = [crystal["object"], np.roll(crystal["object"], 2, axis=0)]
    same = judge_set(objs, [zone, zone], thr, {}, groups=["cnn", "cnn"])
    assert [o["status"] for o in same] == ["uncertain", "uncertain"] and same[0]["mismatch"] is None
    other = judge_set(objs, [zone, clear], thr, {}, groups=["cnn", "run-2"])
    assert [o["status"] for o in other] == ["ok", "ok"] and other[0]["mismatch"] < 0.02
    # recorded mismatches only (objs None, as the calibration replays): a pair not recorded is no partner
    assert judge_set(None, [zone, clear], thr, {}, groups=["a", "b"])[0]["status"] == "uncertain"
    assert judge_set(None, [zone, clear], thr, {(0, 1): 0.01}, groups=["a", "b"])[0]["status"] == "ok"
    with pytest.raises(InputError, match="confirm_mean_to_max"):
        GateThresholds(confirm_mean_to_max=1.5)


def test_amplitude_on_selects_which_mean_to_max_is_judged():
    """amplitude_on='shape' applies the mean_to_max limits to mean_to_max_shape (over the crystal's shape), so a
    right result whose loose support raises mean_to_max passes; a record without that value fails, not passes."""
    slack = {"llk_free": 1.0, "obj2_out": 0.0, "support_ratio": 0.12, "mean_to_max": 0.62, "mean_to_max_shape": 0.30}
    on_support = GateThresholds(confirm_mean_to_max=None)
    on_shape = GateThresholds(confirm_mean_to_max=None, amplitude_on="shape")
    status, why = judge(slack, on_support)
    assert status == "uncertain" and why[0].startswith("mean_to_max 0.62")
    assert judge(slack, on_shape) == ("ok", [])
    status, why = judge({k: v for k, v in slack.items() if k != "mean_to_max_shape"}, on_shape)
    assert status == "uncertain" and why[0].startswith("mean_to_max_shape nan")
    zoned = GateThresholds(amplitude_on="shape", confirm_mean_to_max=0.25)
    assert zoned.in_confirm_zone(slack) and not zoned.in_confirm_zone(dict(slack, mean_to_max_shape=0.2))
    with pytest.raises(InputError, match="amplitude_on"):
        GateThresholds(amplitude_on="volume")


def test_photon_noise_share_of_obj2_out():
    """photon_noise_fraction: what photon noise alone adds to a magnitude projection, from the data; it grows as
    the peak gets fainter, and the gate judges obj2_out less obj2_out_noise_weight of it (0: the plain limit)."""
    from physics.quality import obj2_out_noise, photon_noise_fraction

    bright = simulate_sample(7, SimParams(peak_counts=(1e6, 1e6)))
    faint = simulate_sample(7, SimParams(peak_counts=(1e3, 1e3)))
    f_bright, f_faint = (photon_noise_fraction(s["intensity"], s["mask"]) for s in (bright, faint))
    assert f_bright < 0.005 < 0.02 < f_faint < 0.5
    # a flat pattern of 1e4 photons per voxel: 1/4 photon of noise energy per voxel
    assert photon_noise_fraction(np.full((16, 16, 16), 1e4)) == pytest.approx(0.25 / 1e4, rel=0.02)
    # in photons: the same counts stored as 10x the intensity give the same share with photon_scale 0.1
    assert photon_noise_fraction(faint["intensity"] * 10, faint["mask"], photon_scale=0.1) == pytest.approx(f_faint)
    assert obj2_out_noise(0.1, 100, 1000) == pytest.approx(0.09)
    vals = {"llk_free": 1.0, "obj2_out": 0.08, "support_ratio": 0.12, "mean_to_max": 0.3, "obj2_out_noise": 0.08}
    assert judge(vals, GateThresholds(confirm_mean_to_max=None))[0] == "ok"  # 0.08 - 0.5 x 0.08 <= 0.05
    status, why = judge(vals, GateThresholds(confirm_mean_to_max=None, obj2_out_noise_weight=0.0))
    assert status == "uncertain" and why == ["obj2_out 0.08 > 0.05"]
    assert "(photon noise)" in judge(dict(vals, obj2_out=0.2), GateThresholds())[1][0]
    with pytest.raises(InputError, match="obj2_out_noise_weight"):
        GateThresholds(obj2_out_noise_weight=2.0)
