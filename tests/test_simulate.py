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


# --- the wider families and the "wide" training distribution (issue 11, item 5) ---------------------------

from physics import simulate as sim  # noqa: E402


@pytest.mark.parametrize("shape", sim.EXTRA_SHAPES)
def test_every_extra_shape_is_a_centred_crystal_within_the_oversampling(shape):
    s = simulate_sample(21, SimParams(shapes=(shape,), fields=("gaussians",), oversampling=(2.0, 5.0)))
    assert s["shape_kind"] == shape and s["support"].sum() > 300
    idx = np.argwhere(s["support"])
    extent = idx.max(0) - idx.min(0) + 1
    assert np.all(64 / extent >= 1.9), f"{shape}: oversampling {64 / extent}"
    # the reported oversampling is the one obtained (isotropic shapes exceed the drawn value on some axes)
    assert np.allclose(s["oversampling"], 64 / extent, rtol=0.2)
    amp = np.abs(s["object"])
    com = [(amp.sum(axis=tuple(j for j in range(3) if j != i)) * np.arange(64)).sum() / amp.sum() for i in range(3)]
    assert np.allclose(com, 32, atol=1.0)


@pytest.mark.parametrize("field", sim.EXTRA_FIELDS)
def test_every_extra_field_meets_the_phase_range_and_keeps_the_peak_centred(field):
    for seed in (4, 5):
        s = simulate_sample(seed, SimParams(fields=(field,), shapes=("wulff", "octahedron", "twinned")))
        assert s["field_kind"] == field
        assert 2 * np.pi - 1e-3 <= s["phase_range"] <= 5 * np.pi + 1e-3
        i = s["intensity_clean"]
        com = [(i.sum(axis=tuple(j for j in range(3) if j != a)) * np.arange(64)).sum() / i.sum() for a in range(3)]
        assert np.allclose(com, 32, atol=4.0), f"{field}: intensity centre of mass {com}"
        assert np.isfinite(s["phase"]).all() and np.isfinite(s["intensity"]).all()


def _phase_singularities(s) -> int:
    """Voxel plaquettes (in all three plane orientations, inside the support) around which the phase winds."""
    def wrap(a):
        return np.angle(np.exp(1j * a))
    ph, sup, total = np.angle(s["object"]), s["support"], 0
    for ax in range(3):
        p, m = np.moveaxis(ph, ax, 0), np.moveaxis(sup, ax, 0)
        w = (wrap(p[:, 1:, :-1] - p[:, :-1, :-1]) + wrap(p[:, 1:, 1:] - p[:, 1:, :-1])
             + wrap(p[:, :-1, 1:] - p[:, 1:, 1:]) + wrap(p[:, :-1, :-1] - p[:, :-1, 1:]))
        inside = m[:, 1:, 1:] & m[:, :-1, :-1] & m[:, 1:, :-1] & m[:, :-1, 1:]
        total += int(np.sum(np.abs(w[inside]) > np.pi))
    return total


@pytest.mark.parametrize("field", ["screw_dislocation", "edge_dislocation"])
def test_dislocations_wind_the_phase_by_2pi(field):
    """Around a dislocation line the object's phase winds by 2π·n (n = g·b/2π != 0): a line of singularities
    crosses the crystal. Smooth fields have none (or a stray one where their gradient is steepest)."""
    for seed in (4, 5, 6):
        assert _phase_singularities(simulate_sample(seed, SimParams(fields=(field,), shapes=("octahedron",)))) >= 8
        assert _phase_singularities(simulate_sample(seed, SimParams(fields=("grf",), shapes=("octahedron",)))) <= 2


def test_wide_distribution_covers_the_requested_ranges():
    kinds, os_all = set(), []
    for seed in range(16):
        s = simulate_sample(100 + seed, sim.WIDE)
        kinds.add((str(s["shape_kind"]), str(s["field_kind"])))
        os_all.append(s["oversampling"])
        assert 1e3 * 0.5 <= s["intensity_clean"].max() <= 1e7 * 1.01
        assert 0 <= s["background"] <= 0.2
        assert np.all(s["intensity"][s["mask"]] == 0)
    assert len({k[0] for k in kinds}) >= 5 and len({k[1] for k in kinds}) >= 5
    os_all = np.array(os_all)
    assert os_all.min() < 2.6 and os_all.max() > 4.4  # spans about 2-5 per axis
    assert np.any(np.abs(os_all[:, 0] - os_all[:, 1]) > 0.5)  # anisotropic


def test_background_and_several_gaps():
    p = SimParams(background=(0.5, 0.5), gap_probability=1.0, gap_count=(2, 2), peak_counts=(1e5, 1e5))
    s = simulate_sample(9, p)
    ok = ~s["mask"]
    excess = s["intensity"][ok] - s["intensity_clean"][ok]  # Poisson counts of signal + flat background
    sigma = np.sqrt((s["intensity_clean"][ok] + 0.5).mean() / ok.sum())
    assert abs(excess.mean() - 0.5) < 5 * sigma
    assert s["mask"].any(axis=0).sum() > 64 * 5  # two bands of >= 3 planes (may overlap)
    with pytest.raises(ValueError, match="background"):
        SimParams(background=(0.2, 0.1))
    with pytest.raises(ValueError, match="gap_count"):
        SimParams(gap_count=(0, 1))


def test_stored_configs_without_the_new_keys_keep_their_meaning():
    """A checkpoint written before the widening stores a sim dict without the new keys: it must mean SimParams()."""
    from models.data import SIM_DISTRIBUTIONS, params_from_dict, params_to_dict, sim_distribution

    old = {k: v for k, v in params_to_dict(SimParams()).items() if k not in ("background", "gap_count")}
    assert params_from_dict(old) == SimParams() == SIM_DISTRIBUTIONS["paper"]
    assert params_from_dict(params_to_dict(sim.WIDE)) == sim_distribution("wide")
    with pytest.raises(ValueError, match="unknown simulation distribution"):
        sim_distribution("nope")


def test_numpy_only_rotation_matches_scipy(monkeypatch):
    """Without scipy (a bare GPU machine) the rotation is drawn the same way, to float32 rounding."""
    a = sim.random_rotation(np.random.default_rng(3))
    monkeypatch.setattr(sim, "Rotation", None)
    b = sim.random_rotation(np.random.default_rng(3))
    assert np.allclose(a, b, atol=1e-6) and np.allclose(b @ b.T, np.eye(3), atol=1e-5)
