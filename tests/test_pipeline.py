"""Reconstruction pipeline mechanics on simulated crystals with a known answer.

The CNN is replaced here by phase predictors with known quality (the true phase, or a wrong one): that
checks every stage around the network (crop, resize, iFFT, re-interpolation, scaling, border-restricted ER)
without depending on how well the shipped model is trained; the shipped model is tested in test_model_quality.py.
"""
import numpy as np
import pytest

from physics.errors import InputError
from physics.metrics import compare_to_truth
from physics.phasing import Cancelled
from physics.simulate import SimParams, simulate_sample
from workers.pipeline import ReconOptions, reconstruct, run_pipeline

SEED = 2_000_003


@pytest.fixture(scope="module")
def crystal():
    return simulate_sample(SEED)


def test_true_phase_gives_the_crystal_and_refinement_keeps_it(crystal):
    truth = lambda i64: crystal["phase"]  # noqa: E731 - the perfect predictor
    cnn_only = reconstruct(crystal["intensity"], crystal["mask"], truth, ReconOptions(er_cycles=0))
    refined = reconstruct(crystal["intensity"], crystal["mask"], truth, ReconOptions(er_cycles=100))
    for r in (cnn_only, refined):
        m = compare_to_truth(r.obj, crystal["object"], truth_support=crystal["support"], recon_support=r.support)
        assert m["phase_rmse"] < 0.1 and m["iou"] > 0.7
        assert r.crop_offsets == (0, 0, 0) and r.obj.shape == (64, 64, 64)  # 64³ input: no crop
    assert refined.llk["llk_poisson"] < 2.0  # ~1 for a statistically ideal fit
    assert refined.llk["obj2_out"] < 0.05
    assert set(refined.timings) == {"preprocess", "cnn", "ifft", "refine"}


def test_wrong_phase_is_detected_by_the_data_metrics(crystal):
    zeros = reconstruct(crystal["intensity"], crystal["mask"], lambda i: np.zeros_like(i), ReconOptions(er_cycles=100))
    m = compare_to_truth(zeros.obj, crystal["object"], truth_support=crystal["support"], recon_support=zeros.support)
    assert m["phase_rmse"] > 0.5 and zeros.llk["llk_poisson"] > 10


def test_border_restricted_refinement_only_moves_the_border(crystal):
    from physics.phasing import CDI, SupportUpdate, dilate_box  # noqa: F401 - engine import for the band test

    r0 = reconstruct(crystal["intensity"], crystal["mask"], lambda i: crystal["phase"], ReconOptions(er_cycles=0))
    r1 = reconstruct(crystal["intensity"], crystal["mask"], lambda i: crystal["phase"],
                     ReconOptions(er_cycles=40, update_period=20, border_n=1))
    changed = r0.support ^ r1.support
    from scipy import ndimage

    box = np.ones((3, 3, 3), bool)
    band2 = ndimage.binary_dilation(r0.support, box, iterations=2) & ~ndimage.binary_erosion(r0.support, box,
                                                                                             iterations=2)
    assert changed.sum() > 0
    assert not (changed & ~band2).any()  # two updates of border_n=1 move the border by at most 2 voxels


def test_large_array_is_cropped_around_the_peak_and_offsets_recorded():
    s = simulate_sample(5, SimParams(size=64))
    big = np.zeros((80, 96, 100), np.float32)
    big[10:74, 20:84, 30:94] = s["intensity"]
    r = reconstruct(big, None, lambda i: s["phase"], ReconOptions(er_cycles=0, crop_size=64))
    from physics.preprocess import find_peak

    peak = np.add(find_peak(s["intensity"]), (10, 20, 30))  # the crop is centred on the peak (max, then COM)
    assert r.obj.shape == (64, 64, 64)
    assert r.crop_offsets == tuple(int(p) - 32 for p in peak)
    o = r.crop_offsets
    assert np.array_equal(r.intensity_crop, big[o[0]:o[0] + 64, o[1]:o[1] + 64, o[2]:o[2] + 64])


def test_cancel_stops_between_cycles(crystal):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(Cancelled):
        reconstruct(crystal["intensity"], crystal["mask"], lambda i: crystal["phase"], ReconOptions(er_cycles=400),
                    should_cancel=cancel)


def test_bad_options_are_named():
    with pytest.raises(InputError, match="border_n"):
        ReconOptions(border_n=-1)
    with pytest.raises(InputError, match="refine"):
        ReconOptions(er_cycles=-5)
    with pytest.raises(InputError, match="pre-recipe"):
        ReconOptions(pre_recipe="RAAR**20,Sup")
    with pytest.raises(InputError, match="er_cycles > 0"):
        ReconOptions(er_cycles=0, pre_recipe="RAAR**20")
    with pytest.raises(InputError, match="recipe"):
        ReconOptions(pre_recipe="RAAR*20")


def test_pre_recipe_escapes_er_stagnation_and_keeps_the_border_rule(crystal):
    """From a bad start (a constant phase) ER alone stagnates; RAAR cycles first reach a lower LLK, and their
    support updates obey the same border rule as the ER's."""
    flat = lambda i64: np.zeros_like(i64)  # noqa: E731 - a useless predictor
    er = reconstruct(crystal["intensity"], crystal["mask"], flat, ReconOptions(er_cycles=200))
    pre = reconstruct(crystal["intensity"], crystal["mask"], flat, ReconOptions(er_cycles=200, pre_recipe="RAAR**200"))
    assert pre.options["pre_recipe"] == "RAAR**200"
    assert pre.recipe == "RAAR**200,ER**200" and er.recipe == "ER**200"  # what ran, as writers record it
    assert pre.llk["llk_poisson_free"] < 0.6 * er.llk["llk_poisson_free"]

    from scipy import ndimage

    r0 = reconstruct(crystal["intensity"], crystal["mask"], lambda i: crystal["phase"], ReconOptions(er_cycles=0))
    r1 = reconstruct(crystal["intensity"], crystal["mask"], lambda i: crystal["phase"],
                     ReconOptions(er_cycles=20, pre_recipe="RAAR**20", update_period=20, border_n=1))
    box = np.ones((3, 3, 3), bool)
    band2 = ndimage.binary_dilation(r0.support, box, iterations=2) & ~ndimage.binary_erosion(r0.support, box,
                                                                                             iterations=2)
    changed = r0.support ^ r1.support
    assert changed.sum() > 0 and not (changed & ~band2).any()  # 2 updates of border_n=1 (one per recipe part)


def test_run_pipeline_adds_strain_and_previews_to_the_reconstruction(crystal):
    """The one path of the CLI and the service: reconstruct -> displacement and strain -> arrays -> previews."""
    stages = []
    out = run_pipeline(crystal["intensity"], crystal["mask"], lambda i: crystal["phase"],
                       ReconOptions(method="cnn-er", er_cycles=20),  # the CNN path's stages (adaptive adds its own)
                       title="t", progress=lambda stage, f: stages.append(stage))
    res, a = out.result, out.arrays
    assert stages[-1] == "strain" and "refine" in stages
    assert set(out.timings) == {"preprocess", "cnn", "ifft", "refine", "strain", "total"}  # total: the strategy's
    np.testing.assert_array_equal(a["support"], res.support)
    np.testing.assert_allclose(a["amplitude"], np.abs(res.obj))
    for key in ("displacement", "strain", "phase"):
        assert a[key].shape == res.obj.shape and np.all(a[key][~res.support] == 0), key
    # the strain is the phase gradient (rad/voxel along the rocking axis, no geometry here): a real strain field
    assert np.abs(a["strain"][res.support]).max() > 0 and not out.strain_meta["geometry_used"]
    assert set(out.previews) == {"preview_object", "preview_strain", "preview_reciprocal"}
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in out.previews.values())
    bare = run_pipeline(crystal["intensity"], crystal["mask"], lambda i: crystal["phase"], ReconOptions(method="cnn-er", er_cycles=0), previews=False)
    assert bare.previews == {} and bare.result.recipe == "ER**0"
