"""physics.shape: the crystal's shape from a reconstruction, and physics.metrics.score_result, which scores it."""
import numpy as np
import pytest
from scipy.ndimage import binary_dilation, gaussian_filter

from physics.errors import InputError
from physics.metrics import compare_to_truth, score_result, support_iou
from physics.shape import amplitude_reference, crystal_shape, shape_definition


def small_crystal(n=48, half=(3, 4, 5), seed=0, noise=0.0):
    """A small box crystal (the size where shrink-wrap's slack matters) with a strain-like phase, its amplitude
    blurred as a finite resolution does, and a phasing-like support one voxel wider all round."""
    rng = np.random.default_rng(seed)
    truth_support = np.zeros((n,) * 3, bool)
    c = n // 2
    truth_support[c - half[0]:c + half[0], c - half[1]:c + half[1], c - half[2]:c + half[2]] = True
    amp = gaussian_filter(truth_support.astype(float), 0.7)
    amp = amp + noise * rng.standard_normal(amp.shape) * truth_support
    z = np.indices(truth_support.shape)[0]
    obj = (np.abs(amp) * np.exp(1j * 0.3 * z)).astype(np.complex64)
    slack = binary_dilation(truth_support, iterations=1)
    return obj, truth_support, slack


def test_shape_undoes_the_support_slack_of_a_small_crystal():
    obj, ts, slack = small_crystal()
    shape = crystal_shape(obj, slack)
    assert support_iou(slack, ts) < 0.6  # a one-voxel slack on a 6x8x10 crystal
    assert support_iou(shape, ts) > 0.9
    assert not np.any(shape & ~slack)  # never outside the support


def test_shape_fills_enclosed_cavities_and_falls_back_to_the_support():
    obj, ts, slack = small_crystal(half=(6, 6, 6))
    holed = obj.copy()
    c = obj.shape[0] // 2
    holed[c, c, c] = 0  # one dead interior voxel (noise on faint data)
    assert crystal_shape(holed, slack)[c, c, c]
    assert not crystal_shape(holed, slack, fill_holes=False)[c, c, c]
    zero = np.zeros_like(obj)
    assert np.array_equal(crystal_shape(zero, slack), slack)


def test_percentile_reference_and_definition():
    obj, ts, slack = small_crystal(noise=0.05, seed=3)
    amp = np.abs(obj)
    assert amplitude_reference(amp, slack, "q99") <= amplitude_reference(amp, slack, "max")
    assert amplitude_reference(amp, slack, "q50") == pytest.approx(np.median(amp[slack]))
    d = shape_definition()
    assert {"level", "reference", "fill_holes"} <= set(d) and 0 < d["level"] < 1


@pytest.mark.parametrize("kw, msg", [(dict(level=0.0), "level"), (dict(level=1.5), "level"),
                                     (dict(reference="mean"), "reference"), (dict(reference="q0"), "reference")])
def test_bad_shape_options_are_refused(kw, msg):
    obj, ts, slack = small_crystal()
    with pytest.raises(InputError, match=msg):
        crystal_shape(obj, slack, **kw)


def test_bad_shape_inputs_are_refused():
    obj, ts, slack = small_crystal()
    with pytest.raises(InputError, match="empty"):
        crystal_shape(obj, np.zeros_like(slack))
    with pytest.raises(InputError, match="differs"):
        crystal_shape(obj[:-1], slack)


def test_score_result_scores_the_shape_and_keeps_the_support_figure():
    obj, ts, slack = small_crystal()
    shifted = np.roll(obj, 2, axis=1)  # the alignment must move the shape as it moves the object
    m = score_result(shifted, np.roll(slack, 2, axis=1), obj, truth_support=ts)
    ref = compare_to_truth(shifted, obj, truth_support=ts, recon_support=np.roll(slack, 2, axis=1))
    assert m["iou_support"] == pytest.approx(ref["iou"])
    assert m["iou"] > 0.9 > 0.6 > m["iou_support"]
    assert m["scored_on"] == "shape" and m["volume_ratio"] == pytest.approx(1.0, abs=0.15)
    assert m["phase_rmse"] == pytest.approx(ref["phase_rmse"])


def test_shape_level_rule_counts_phase_right_crystals_then_median():
    from bench import shape_level as sl

    def rec(rmse, **iou):
        base = {sl.key(*g): 0.5 for g in sl.GRID}
        return {"phase_rmse": rmse, "crystals": "paper", "iou_support": 0.6,
                **base, **{sl.key(*k): v for k, v in iou.items()}}

    a, b = ("max", 0.35, True), ("q99", 0.45, True)
    recs = [rec(0.1, **{}), rec(0.1), rec(0.9)]
    for r in recs[:2]:
        r[sl.key(*a)], r[sl.key(*b)] = 0.75, 0.9
    recs[2][sl.key(*a)] = 0.99  # a crystal whose phase is wrong does not count
    assert sl.choose(recs)[:2] == (sl.key(*b), 2)  # tie on the count: the higher median wins
    recs[1][sl.key(*b)] = 0.65
    assert sl.choose(recs)[:2] == (sl.key(*a), 2)  # more crystals at IoU >= 0.7 wins first
