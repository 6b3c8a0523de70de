"""The network's judge: phase coherence is blind to offset, twin and object shift, and ranks errors."""
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from physics.coherence import coherence_batch, coherence_weights, phase_coherence
from physics.errors import InputError
from physics.simulate import SimParams, simulate_sample


@pytest.fixture(scope="module")
def sample():
    return simulate_sample(2_000_003, SimParams())


def test_truth_offset_twin_and_shift_are_perfect(sample):
    ph, i = sample["phase"], sample["intensity"]
    q = np.indices(ph.shape) - 32
    assert phase_coherence(ph, ph, i) == pytest.approx(1.0, abs=1e-9)
    assert phase_coherence(ph + 2.1, ph, i) == pytest.approx(1.0, abs=1e-9)
    assert phase_coherence(-ph + 0.7, ph, i) == pytest.approx(1.0, abs=1e-9)
    ramp = 2 * np.pi * (2.5 * q[0] - 4.0 * q[1] + 1.0 * q[2]) / 64  # object shifted by half-voxel steps
    assert phase_coherence(ph + ramp, ph, i) == pytest.approx(1.0, abs=1e-6)


def test_errors_are_ranked_and_a_constant_scores_low(sample):
    ph, i = sample["phase"], sample["intensity"]
    rng = np.random.default_rng(1)
    e = gaussian_filter(rng.normal(size=ph.shape), 4)
    e /= e.std()
    c1, c2 = phase_coherence(ph + e, ph, i), phase_coherence(ph + 2 * e, ph, i)
    c0 = phase_coherence(np.zeros_like(ph), ph, i)
    assert 0.45 < c1 < 0.8  # ~0.6 for a smooth 1 rad rms error, as the issue states
    assert c2 < c1 - 0.2
    assert c0 < 0.2 and c0 < c2


def test_batch_matches_single_and_weights_match_the_network_input(sample):
    import torch

    from models.loss import normalise_intensity

    ph, i = sample["phase"], sample["intensity"]
    w = coherence_weights(i)
    assert np.allclose(w, normalise_intensity(torch.from_numpy(i)).numpy(), atol=1e-6)
    pred = np.stack([ph, np.zeros_like(ph)])[:, None]
    got = coherence_batch(pred, np.stack([ph, ph])[:, None], np.stack([w, w])[:, None])
    assert got[0] == pytest.approx(1.0, abs=1e-6)
    assert got[1] == pytest.approx(phase_coherence(np.zeros_like(ph), ph, i), abs=1e-6)


def test_bad_input_is_one_error():
    with pytest.raises(InputError, match="shapes differ"):
        phase_coherence(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), np.ones((4, 4, 4)))
    with pytest.raises(InputError, match="sum to zero"):
        phase_coherence(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))


def test_torch_version_matches_numpy(sample):
    """One definition, two back-ends: the GPU segment's torch coherence equals the numpy one."""
    import torch

    from physics.coherence import coherence_torch

    ph, w = sample["phase"], coherence_weights(sample["intensity"])
    rng = np.random.default_rng(2)
    pred = ph + gaussian_filter(rng.normal(size=ph.shape), 3) * 3
    got = coherence_torch(torch.from_numpy(np.stack([pred, ph])), torch.from_numpy(np.stack([ph, ph])),
                          torch.from_numpy(np.stack([w, w]).astype(np.float32)))
    assert float(got[0]) == pytest.approx(phase_coherence(pred, ph, weights=w), abs=1e-3)
    assert float(got[1]) == pytest.approx(1.0, abs=1e-4)
