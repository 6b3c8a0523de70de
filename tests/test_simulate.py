"""The simulator: known-answer consistency, requested ranges, determinism, storage and speed floor."""
import numpy as np
import pytest

from physics.simulate import SimParams, diffraction, object_from_diffraction, simulate_sample
from workers.io.samples import load_set, save_set


def test_sample_is_self_consistent():
    s = simulate_sample(7)
    psi = diffraction(s["object"])
    i_clean = s["intensity_clean"]
    assert np.allclose(np.abs(psi) ** 2, i_clean, rtol=1e-3, atol=1e-3 * i_clean.max())
    strong = i_clean > 1e-3 * i_clean.max()
    dphi = np.angle(np.exp(1j * (np.angle(psi[strong]) - s["phase"][strong])))
    assert np.abs(dphi).max() < 1e-2
    back = object_from_diffraction(np.sqrt(i_clean), s["phase"])
    assert np.abs(back - s["object"]).max() < 1e-3 * np.abs(s["object"]).max()
    for k in ("intensity", "intensity_clean", "phase", "support", "mask"):
        assert s[k].shape == (64, 64, 64)
    assert s["object"].dtype == np.complex64 and s["intensity"].dtype == np.float32


@pytest.mark.parametrize("seed", range(12))
def test_ranges_and_centring(seed):
    p = SimParams()
    s = simulate_sample(seed, p)
    assert 2 * np.pi - 1e-3 <= s["phase_range"] <= 5 * np.pi + 1e-3
    idx = np.argwhere(s["support"])
    extent = idx.max(0) - idx.min(0) + 1
    assert np.all(64 / extent >= 2.0), f"oversampling below 2: {64 / extent}"
    amp = np.abs(s["object"])
    com = [(amp.sum(axis=tuple(j for j in range(3) if j != i)) * np.arange(64)).sum() / amp.sum() for i in range(3)]
    assert np.allclose(com, 32, atol=1.0)
    assert 1e4 * 0.5 <= s["intensity"].max() <= 1e7 * 1.5
    assert s["shape_kind"] in p.shapes and s["field_kind"] in p.fields


def test_every_shape_and_field_family_and_low_strain():
    for shape in ("wulff", "winterbottom", "cube"):
        for field in ("gaussians", "cosines", "grf"):
            s = simulate_sample(3, SimParams(shapes=(shape,), fields=(field,), phase_range=(0.2, np.pi)))
            assert s["shape_kind"] == shape and s["field_kind"] == field
            assert 0.2 - 1e-3 <= s["phase_range"] <= np.pi + 1e-3
            assert s["support"].sum() > 500


def test_deterministic_per_seed_and_different_across_seeds():
    a, b, c = simulate_sample(11), simulate_sample(11), simulate_sample(12)
    assert np.array_equal(a["intensity"], b["intensity"])
    assert not np.array_equal(a["intensity"], c["intensity"])


def test_noise_is_poisson_and_masks_are_applied():
    s = simulate_sample(5, SimParams(gap_probability=1.0, masked_fraction=0.01))
    assert np.all(s["intensity"] == np.round(s["intensity"]))
    assert s["mask"].any() and np.all(s["intensity"][s["mask"]] == 0)
    strong = (s["intensity_clean"] > 100) & ~s["mask"]
    resid = (s["intensity"][strong] - s["intensity_clean"][strong]) / np.sqrt(s["intensity_clean"][strong])
    assert abs(resid.std() - 1) < 0.1  # Poisson: variance equals the mean


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="oversampling"):
        SimParams(oversampling=(1.5, 3))
    with pytest.raises(ValueError, match="shape"):
        SimParams(shapes=("sphere",))


def test_hdf5_set_round_trip(tmp_path):
    samples = [simulate_sample(i, SimParams(size=32)) for i in range(3)]
    n = save_set(tmp_path / "set.h5", iter(samples), params={"size": 32})
    assert n == 3
    back = load_set(tmp_path / "set.h5")
    assert back["intensity"].shape == (3, 32, 32, 32)
    assert np.array_equal(back["object"][2], samples[2]["object"])
    assert list(back["shape_kind"]) == [str(s["shape_kind"]) for s in samples]
    assert not list(tmp_path.glob("*.tmp"))
