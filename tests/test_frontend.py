"""The physics front end: oversampling measured from the data, crop and CNN grid chosen from it, photon scale,
background, and the one-line refusals (peak on the edge, undersampled data, no crop in range)."""
import numpy as np
import pytest

from physics.detector_sim import detector_sample, truth_on_crop
from physics.errors import InputError
from physics.oversampling import estimate_oversampling
from physics.preprocess import (FrontEndOptions, fourier_resample, photon_scale, plan_crop, prepare,
                                subtract_background)
from physics.simulate import SimParams, simulate_sample

RANGE = (2.2, 4.0)


@pytest.mark.parametrize("seed", range(2_000_100, 2_000_106))
def test_oversampling_within_10_percent_of_the_simulated_one(seed):
    s = simulate_sample(seed)  # 64³, 2π-5π strain, oversampling drawn in 2.2-4 per axis
    est = estimate_oversampling(s["intensity"], s["mask"])
    assert np.all(np.abs(np.array(est.ratio) / s["oversampling"] - 1) < 0.10), (est.ratio, s["oversampling"])


def test_oversampling_at_128_and_3_to_6_within_10_percent():
    s = detector_sample(2_000_101, (128, 128, 128), (3.0, 6.0))
    est = estimate_oversampling(s["intensity"])
    assert np.all(np.abs(np.array(est.ratio) / s["oversampling"] - 1) < 0.10), (est.ratio, s["oversampling"])


def test_oversampling_of_a_truncated_bright_pattern_within_10_percent():
    """A short rocking curve (128 of 256 frames) of a bright crystal (1e10 photons): the pattern is still strong at
    the ends of the rocking axis, whose box side lobes read as an extent 2.5x too large without the window."""
    from physics.oversampling import TUKEY_ALPHA, autocorrelation, per_axis

    s = detector_sample(2_000_012, (128, 256, 256), (3.0, 6.0))
    plain = per_axis(autocorrelation(s["intensity"], s["mask"]), s["mask"])
    assert plain[0][0] < 0.5 * s["oversampling"][0]  # the failure the window mends (2.29 for 5.73)
    est = estimate_oversampling(s["intensity"], s["mask"])
    assert np.all(np.abs(np.array(est.ratio) / s["oversampling"] - 1) < 0.10), (est.ratio, s["oversampling"])
    assert not any(est.undersampled)
    windowed = per_axis(autocorrelation(s["intensity"], s["mask"], window=TUKEY_ALPHA), s["mask"])
    assert est.ratio == tuple(max(p[0], w[0]) for p, w in zip(plain, windowed))  # the smaller extent per axis
    assert est.truncated == (True, False, False)
    fe = prepare(s["intensity"], s["mask"], RANGE).frontend  # the user is told, and the crop takes the whole axis
    assert fe.crop_shape[0] == 128 and fe.cnn_binning[0] == 2
    truncation = [w for w in fe.warnings if "truncated" in w]
    assert len(truncation) == 1 and truncation[0].startswith("axis 0: the pattern is still bright"), fe.warnings
    assert fe.truncated == (True, False, False) and fe.metadata()["truncated"] == [True, False, False]
    # outside the gate's calibration: a strategy's 'ok' then needs an independent start that agrees. A one-candidate
    # path (the paper's (b), here with a useless CNN and 10 ER cycles, for time) can therefore never be 'ok' on it
    from workers.pipeline import ReconOptions
    from workers.strategy import StrategyOptions, run_method

    res = run_method("cnn-er", s["intensity"], s["mask"],
                     lambda i64: np.random.default_rng(0).uniform(-np.pi, np.pi, i64.shape).astype(np.float32),
                     StrategyOptions(recon=ReconOptions(er_cycles=10)))
    c = res.confidence
    assert c["thresholds"]["require_agreement"] and c["thresholds"]["independent_partners"], c["thresholds"]
    assert c["status"] == "uncertain" and res.result.frontend.truncated == (True, False, False)


def test_undersampled_data_are_refused_naming_the_axis():
    s = simulate_sample(2_000_102)
    under = s["intensity"][:, :, ::2]  # every other detector column: oversampling 3.59 -> 1.80 on axis 2
    with pytest.raises(InputError, match="undersampled along axis 2"):
        prepare(np.pad(under, ((0, 0), (0, 0), (16, 16))), None, RANGE)


def test_peak_on_the_edge_is_refused():
    s = simulate_sample(2_000_103)
    shifted = np.zeros((64, 96, 96), np.float32)
    shifted[:, 16:80, :35] = s["intensity"][:, :, 29:]  # the peak now sits 3 voxels from the edge of axis 2
    with pytest.raises(InputError, match="on the edge .* axis 2"):
        prepare(shifted, None, RANGE)


def test_plan_prefers_binning_then_fourier_and_says_when_no_crop_fits():
    from physics.oversampling import Oversampling

    def os_(*r):
        return Oversampling(tuple(r), (0, 0, 0), (False,) * 3, (0.0,) * 3)

    p = plan_crop((128, 256, 300), (64, 128, 150), os_(3.0, 6.0, 4.2), RANGE)
    assert p["crop"][0] == 64 and p["binning"][0] == 1 and not p["resampled"][0]  # 3.0 at 64: as is
    assert p["crop"][1] == 128 and p["binning"][1] == 2 and not p["resampled"][1]  # 6.0 -> 3.0 binned x2
    assert p["resampled"][2] and RANGE[0] <= p["oversampling_cnn"][2] <= RANGE[1]  # 4.2: 4.2 at 64, 2.1 at 128: no multiple fits
    assert p["offsets"] == (64 - 32, 128 - 64, 150 - p["crop"][2] // 2)
    with pytest.raises(InputError, match=r"axis 1: oversampling 9.00 needs a crop of at least 144 .* at most 80"):
        plan_crop((64, 80, 64), (32, 40, 32), os_(3.0, 9.0, 3.0), RANGE)
    with pytest.raises(InputError, match="larger than the array"):
        plan_crop((64, 80, 64), (32, 40, 32), os_(3.0, 3.0, 3.0), RANGE, crop_size=96)


def test_fourier_resample_keeps_the_sum_the_peak_and_is_exact_for_band_limited_data():
    s = simulate_sample(2_000_104)
    big = detector_sample(2_000_104, (96, 96, 96), (3.3, 6.0))["intensity_clean"]
    small = fourier_resample(big, (64, 64, 64))
    assert small.shape == (64, 64, 64) and small.min() >= 0
    assert small.sum() == pytest.approx(big.sum(), rel=1e-3)
    peak_big = np.array(np.unravel_index(np.argmax(big), big.shape))
    assert np.all(np.abs(np.unravel_index(np.argmax(small), small.shape) - ((peak_big - 48) * 2 / 3 + 32)) <= 1)
    assert s["intensity"].shape == (64, 64, 64)
    # up and back down: a band-limited pattern survives the round trip
    up = fourier_resample(s["intensity_clean"], (80, 80, 80))
    back = fourier_resample(up, (64, 64, 64))
    assert np.abs(back - s["intensity_clean"]).sum() / s["intensity_clean"].sum() < 1e-3


def test_photon_scale_of_counts_normalised_and_flat_fielded_data():
    s = simulate_sample(2_000_105, SimParams(peak_counts=(1e4, 1e4)))  # many one-photon voxels, for the flat field
    counts = s["intensity"]
    assert photon_scale(counts) == (1.0, "integer counts")
    bright = simulate_sample(2_000_105, SimParams(peak_counts=(1e7, 1e7)))["intensity"]  # lowest count > 1
    assert photon_scale(bright / 250.0)[0] == pytest.approx(250.0, rel=0.01)
    scale, how = photon_scale(counts * 0.37)
    assert scale == pytest.approx(1 / 0.37, rel=0.02) and "estimated" in how
    flat = np.random.default_rng(0).uniform(0.9, 1.1, counts.shape[1:])[None]
    scale, _ = photon_scale(counts * flat)
    assert scale == pytest.approx(1.0, rel=0.12)


def test_non_integer_intensities_give_the_same_reconstruction_and_llk_as_counts():
    from workers.pipeline import ReconOptions, reconstruct

    s = simulate_sample(2_000_105)
    truth = lambda i: s["phase"]  # noqa: E731
    a = reconstruct(s["intensity"], None, truth, ReconOptions(er_cycles=20))
    b = reconstruct(s["intensity"] / 250.0, None, truth, ReconOptions(er_cycles=20))
    assert b.frontend.photon_scale == pytest.approx(250.0, rel=0.02) and b.llk["llk_scale"] == b.frontend.photon_scale
    assert b.llk["llk_poisson"] == pytest.approx(a.llk["llk_poisson"], rel=0.05)
    assert a.llk["llk_scale"] == 1.0 and a.frontend.photon_scale_source == "integer counts"


def test_the_options_schema_carries_the_front_end_into_the_pipeline():
    """photon scale, background and negative handling are ReconOptions fields: the CLI, the API and the strategies
    reach the front end through them (FrontEndOptions.from_options), with no second carrier."""
    from workers.pipeline import ReconOptions, crop_for_cnn, reconstruct

    s = simulate_sample(2_000_105)
    truth = lambda i: s["phase"]  # noqa: E731
    r = reconstruct(s["intensity"], None, truth, ReconOptions(er_cycles=0, photon_scale=4.0, background=1.0,
                                                              negative="mask"))
    assert r.frontend.photon_scale == 4.0 and r.frontend.photon_scale_source == "given" and r.llk["llk_scale"] == 4.0
    bg = r.frontend.background
    assert bg["background"] == 1.0 and bg["negative"] == "mask" and bg["negative_voxels"] > 0  # the empty voxels
    assert r.mask_crop.any()  # below the background: left out of the fit
    assert r.options["negative"] == "mask" and r.options["photon_scale"] == 4.0  # recorded with the other options
    with pytest.raises(InputError, match="--negative clip"):
        crop_for_cnn(s["intensity"] - 1.0, None, ReconOptions(background=1.0))  # default negative: error


def test_background_subtraction_hints_clip_or_mask_for_negative_values():
    s = simulate_sample(2_000_106)
    data = s["intensity"] + 2.0
    with pytest.raises(InputError, match=r"negative values after subtracting the background 3 .*--negative clip"):
        subtract_background(data, None, background=3.0)
    clipped, m, info = subtract_background(data, None, background=3.0, negative="clip")
    assert clipped.min() == 0 and not m.any() and info["negative_voxels"] > 0
    masked, m, info = subtract_background(data, None, background=3.0, negative="mask")
    assert m.sum() == info["negative_voxels"] and masked[m].max() == 0
    thr, _, info = subtract_background(s["intensity"], None, threshold=2.0)
    assert thr[(s["intensity"] > 0) & (s["intensity"] < 2)].max() == 0 and info["thresholded_voxels"] > 0


def test_detector_sample_is_the_same_crystal_and_truth_on_crop_matches_the_64_version():
    s64 = simulate_sample(2_000_107, SimParams(fields=("gaussians", "cosines")))
    s = detector_sample(2_000_107, (64, 128, 128), (4.4, 8.0), SimParams(fields=("gaussians", "cosines")))
    assert s["intensity"].shape == (64, 128, 128) and s["intensity"].dtype == np.float32
    assert np.array_equal(s["intensity"], np.rint(s["intensity"]))  # counts, as a detector writes them
    assert s["shape_kind"] == s64["shape_kind"] and s["phase_range"] == pytest.approx(s64["phase_range"], rel=1e-4)
    # oversampling 4.4-8 is 2x the 64³ draw 2.2-4: on a 128 grid the crystal spans the same voxels as at 64
    assert np.allclose(s["oversampling"], 2 * s64["oversampling"], rtol=1e-5)
    obj, sup = truth_on_crop(s, (0, 32, 32), (64, 64, 64))
    assert obj.shape == (64, 64, 64)
    # the crop halves the q-range on every axis (axis 0 is already 64 of the 128³ pattern): voxels 2x larger
    assert sup.sum() == pytest.approx(s64["support"].sum() / 8, rel=0.15)


def test_128_pattern_through_the_front_end_and_true_phase_recovers_the_crystal():
    from physics.metrics import compare_to_truth
    from workers.pipeline import ReconOptions, reconstruct

    s = detector_sample(2_000_108, (128, 128, 128), (4.6, 4.6))  # 4.6: no multiple of 64 fits -> Fourier
    captured = {}

    def true_phase_on_cnn_grid(i64):
        captured["i64"] = i64
        return np.zeros_like(i64)

    r = reconstruct(s["intensity"], None, true_phase_on_cnn_grid, ReconOptions(er_cycles=0))
    fe = r.frontend
    assert any(fe.cnn_resampled) and fe.resampling == "fourier"
    assert all(RANGE[0] <= o <= RANGE[1] for o in fe.oversampling_cnn)
    assert captured["i64"].shape == (64, 64, 64)
    truth, sup = truth_on_crop(s, fe.crop_offsets, fe.crop_shape)
    m = compare_to_truth(r.obj, truth, truth_support=sup)  # zero phase: a poor object, but on the right grid
    assert r.obj.shape == tuple(fe.crop_shape) and np.isfinite(m["phase_rmse"])


def test_oversampling_is_measured_on_the_whole_axis_when_the_peak_is_off_centre():
    """A strained crystal's strongest voxel may sit off the array's centre (here at frame 74 of 128); a box
    centred on it cut the pattern and read 1.98 on that axis (refused as undersampled). The whole axis is used."""
    from bench.cnn_eval import sample_for, test_crystals
    from physics.preprocess import find_peak, oversampling_box

    seed, params = next(c for c in test_crystals(24, 0) if c[0] == 2_000_019)
    s = sample_for(seed, params, "128")
    peak = find_peak(s["intensity"], s["mask"])
    assert abs(peak[0] - 64) >= 8  # the case this test is about
    assert oversampling_box((128, 128, 128), peak) == (slice(0, 128),) * 3
    assert oversampling_box((600, 128), (590, 3), bound=256) == (slice(344, 600), slice(0, 128))
    est = prepare(s["intensity"], s["mask"], RANGE).metadata()["oversampling"]
    assert np.all(np.abs(np.array(est) / s["oversampling"] - 1) < 0.10), (est, s["oversampling"])


def test_the_cnn_grid_is_aimed_at_the_target_oversampling_and_binned_only_near_it():
    from physics.oversampling import Oversampling
    from physics.preprocess import cnn_target

    def os_(*r):
        return Oversampling(tuple(r), (0, 0, 0), (False,) * 3, (0.0,) * 3)

    assert cnn_target(RANGE) == pytest.approx(np.sqrt(2.2 * 4.0))  # default: the range's geometric centre
    assert cnn_target(RANGE, 3.4) == 3.4
    with pytest.raises(InputError, match="cnn oversampling 4.5 is outside the model's training range 2.2-4"):
        cnn_target(RANGE, 4.5)
    shape, peak = (256, 256, 256), (128, 128, 128)
    centre = plan_crop(shape, peak, os_(6.0, 5.0, 4.4), RANGE)
    high = plan_crop(shape, peak, os_(6.0, 5.0, 4.4), RANGE, target=3.6)
    for a in range(3):  # a higher target: a smaller crop, a higher oversampling on the CNN grid, near the target
        assert high["crop"][a] < centre["crop"][a]
        assert high["oversampling_cnn"][a] == pytest.approx(3.6, rel=0.06)
        assert centre["oversampling_cnn"][a] == pytest.approx(np.sqrt(2.2 * 4.0), rel=0.06)
    # 6.0 binned x2 gives 3.0, as near the centre as any crop: binned; for target 3.6, 3.0 is 17 % short: resampled
    assert centre["crop"][0] == 128 and centre["binning"][0] == 2 and not centre["resampled"][0]
    assert high["crop"][0] != 128 and high["resampled"][0]
    # 5.0 binned x2 gives 2.5, 17 % below the centre, where a Fourier-resampled crop lands within 1 %: resampled
    assert centre["resampled"][1] and centre["crop"][1] != 128
    s = detector_sample(2_000_101, (128, 128, 128), (3.0, 6.0))  # the option reaches the planner through prepare
    aimed = prepare(s["intensity"], s["mask"], RANGE, FrontEndOptions(cnn_oversampling=3.6)).frontend
    plain = prepare(s["intensity"], s["mask"], RANGE).frontend
    assert np.mean(aimed.oversampling_cnn) > np.mean(plain.oversampling_cnn) + 0.3
