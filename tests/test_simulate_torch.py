"""The torch simulator (physics.simulate_torch), proved on the CPU against physics.simulate (issue 11, item 4).

It runs the same crystal recipe on torch tensors, so for a given seed the crystal (shape, orientation,
oversampling, field, phase range) is the numpy one up to float rounding, except the random-field noise;
the Poisson draws, the random-field noise and the masks' place in the random stream differ. So the test
compares per seed where the recipe is shared, and by statistics (dispersion, totals) where it is not.
"""
import numpy as np
import pytest
import torch

from physics.simulate import WIDE, SimParams, simulate_sample
from physics.simulate_torch import simulate_batch

SEEDS = (3, 4, 7, 9)  # paper families at seeds 3, 4, 7, 9: cube/wulff/winterbottom, gaussians/cosines/grf


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    return simulate_batch(SEEDS, SimParams(), device="cpu", keep_object=True), [simulate_sample(s) for s in SEEDS]


@pytest.fixture(scope="module")
def wide():
    seeds = (100, 101, 102, 103)
    return simulate_batch(seeds, WIDE, device="cpu"), [simulate_sample(s, WIDE) for s in seeds]


def _extent_oversampling(support: np.ndarray) -> np.ndarray:
    idx = np.argwhere(support)
    return support.shape[0] / (idx.max(0) - idx.min(0) + 1)


def test_same_shapes_dtypes_and_families(paper):
    b, ref = paper
    for k in ("intensity", "intensity_clean", "phase", "support", "mask"):
        assert tuple(b[k].shape) == (len(SEEDS), 64, 64, 64), k
    assert b["intensity"].dtype == torch.float32 and b["phase"].dtype == torch.float32
    assert b["support"].dtype == torch.bool and b["mask"].dtype == torch.bool
    assert b["shape_kind"] == [str(r["shape_kind"]) for r in ref]
    assert b["field_kind"] == [str(r["field_kind"]) for r in ref]


def test_same_crystals_phase_ranges_and_oversampling(paper):
    b, ref = paper
    for i, r in enumerate(ref):
        sup = b["support"][i].numpy()
        iou = (sup & r["support"]).sum() / (sup | r["support"]).sum()
        assert iou > 0.99, (i, iou)
        assert 2 * np.pi - 1e-3 <= float(b["phase_range"][i]) <= 5 * np.pi + 1e-3
        assert abs(float(b["phase_range"][i]) - float(r["phase_range"])) < 1e-3 * float(r["phase_range"])
        assert np.allclose(b["oversampling"][i].numpy(), r["oversampling"])
        assert np.all(_extent_oversampling(sup) >= 2.0)
        assert np.allclose(_extent_oversampling(sup), _extent_oversampling(r["support"]), rtol=0.05)
        amp = b["object"][i].abs().numpy()
        com = [(amp.sum(axis=tuple(j for j in range(3) if j != a)) * np.arange(64)).sum() / amp.sum() for a in range(3)]
        assert np.allclose(com, 32, atol=1.0)


def test_same_diffraction_where_the_recipe_is_shared(paper):
    """Non-random-field samples: the clean intensity and the reciprocal phase agree with numpy's."""
    b, ref = paper
    for i, r in enumerate(ref):
        if r["field_kind"] == "grf":
            continue
        ic, rc = b["intensity_clean"][i].numpy(), r["intensity_clean"]
        assert np.linalg.norm(ic - rc) < 1e-3 * np.linalg.norm(rc)
        strong = rc > 1e-2 * rc.max()
        dphi = np.angle(np.exp(1j * (b["phase"][i].numpy()[strong] - r["phase"][strong])))
        assert np.abs(dphi).max() < 0.05


def test_noise_statistics(paper, wide):
    """Poisson counts: integer, variance equal to the mean on strong voxels, totals equal to the expected ones;
    the peak counts in range; masked voxels zero; background mean as drawn."""
    for b, params in ((paper[0], SimParams()), (wide[0], WIDE)):
        inten, clean, mask = b["intensity"].numpy(), b["intensity_clean"].numpy(), b["mask"].numpy()
        assert np.all(inten == np.round(inten)) and np.all(inten[mask] == 0)
        for i in range(len(inten)):
            peak = float(b["peak_counts"][i])
            assert params.peak_counts[0] * 0.999 <= peak <= params.peak_counts[1] * 1.001
            assert abs(clean[i].max() - peak) < 1e-3 * peak
            ok = ~mask[i]
            expected = clean[i][ok] + float(b["background"][i])
            assert abs(inten[i][ok].sum() - expected.sum()) < 5 * np.sqrt(expected.sum())
            strong = expected > 100
            resid = (inten[i][ok][strong] - expected[strong]) / np.sqrt(expected[strong])
            assert abs(resid.std() - 1) < 0.1 and abs(resid.mean()) < 0.1


def test_wide_distribution_matches_numpy(wide):
    b, ref = wide
    assert b["shape_kind"] == [str(r["shape_kind"]) for r in ref]
    assert b["field_kind"] == [str(r["field_kind"]) for r in ref]
    for i, r in enumerate(ref):
        assert abs(float(b["phase_range"][i]) - float(r["phase_range"])) < 2e-2 * float(r["phase_range"]), i
        assert np.allclose(b["oversampling"][i].numpy(), r["oversampling"], rtol=1e-4)
        assert abs(float(b["background"][i]) - float(r["background"])) < 1e-6  # same draw from the seed
        sup = b["support"][i].numpy()
        assert (sup & r["support"]).sum() / (sup | r["support"]).sum() > 0.99
    # masks: the same kinds of masks (gap bands of whole planes, ~0.1 % bad voxels), drawn at other places
    frac_t = np.mean([m.float().mean().item() for m in b["mask"]])
    frac_n = np.mean([r["mask"].mean() for r in ref])
    assert 1e-3 <= frac_t < 0.25 and abs(frac_t - frac_n) < 0.1
