"""Tests of the network input normalisation and the WCA phase loss (invariances the paper relies on)."""

import numpy as np
import pytest
import torch

from models.loss import normalise_intensity, wca_loss, wca_per_sample
from physics.errors import InputError


def _pattern(seed: int, n: int = 32):
    """Intensity and reciprocal phase of a small strained crystal (cube with a smooth real-space phase)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:n, :n, :n] / n - 0.5
    support = (np.abs(z) < 0.2) & (np.abs(y) < 0.15) & (np.abs(x) < 0.18)
    a = rng.normal(size=3)
    obj = support * np.exp(1j * 3 * np.sin(2 * np.pi * (a[0] * x * y + a[1] * z + a[2] * x * x)))
    f = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj), norm="ortho"))
    return (np.abs(f) ** 2 * 1e4).astype(np.float32), np.angle(f).astype(np.float32)


@pytest.fixture(scope="module")
def batch():
    """Batch of two patterns as torch tensors (B,1,n,n,n): phase and WCA weights."""
    pats = [_pattern(s) for s in (1, 2)]
    phi = torch.from_numpy(np.stack([p[1] for p in pats]))[:, None]
    w = normalise_intensity(torch.from_numpy(np.stack([p[0] for p in pats]))[:, None])
    return phi, w


def test_normalise_intensity_per_sample_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    arr = np.stack([rng.poisson(50, (8, 8, 8)), rng.poisson(5000, (8, 8, 8))]).astype(np.float32)
    out = normalise_intensity(arr)
    assert out.dtype == np.float32 and out.shape == arr.shape
    for i in range(2):  # each sample spans exactly [0, 1]
        assert out[i].min() == 0.0 and out[i].max() == pytest.approx(1.0)
        ref = np.log(arr[i].astype(np.float64) + 1)
        np.testing.assert_allclose(out[i], (ref - ref.min()) / (ref.max() - ref.min()), atol=5e-5)
    np.testing.assert_allclose(normalise_intensity(torch.from_numpy(arr)).numpy(), out, atol=5e-5)
    np.testing.assert_allclose(normalise_intensity(arr[1]), out[1], atol=1e-6)  # single volume


def test_normalise_intensity_edge_cases():
    assert not normalise_intensity(np.full((4, 4, 4), 7.0)).any()  # constant -> zeros, no NaN
    assert normalise_intensity(np.array([[[-3.0, 0.0, 9.0]]])).tolist() == [[[0.0, 0.0, 1.0]]]  # negatives clipped
    bad = np.ones((4, 4, 4))
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        normalise_intensity(bad)
    with pytest.raises(InputError, match="NaN"):
        normalise_intensity(torch.from_numpy(bad))
    with pytest.raises(InputError, match="dimension"):
        normalise_intensity(np.ones((4, 4)))


def test_exact_phase_gives_zero_loss(batch):
    phi, w = batch
    assert abs(wca_loss(phi, phi, w).item()) < 1e-5


def test_invariant_to_offset_wraps_and_twin(batch):
    phi, w = batch
    gen = torch.Generator().manual_seed(0)
    offset = torch.tensor([0.7, -2.1]).view(2, 1, 1, 1, 1)
    wraps = 2 * np.pi * torch.randint(-3, 4, phi.shape, generator=gen).float()
    for pred in (phi + offset, phi + wraps, -phi, -phi + offset + wraps):
        per = wca_per_sample(pred, phi, w)
        assert per.shape == (2,)
        assert per.abs().max().item() < 1e-4


def test_not_invariant_to_a_wrong_phase(batch):
    phi, w = batch
    gen = torch.Generator().manual_seed(1)
    random = (torch.rand(phi.shape, generator=gen) * 2 - 1) * np.pi
    scrambled = phi.flatten()[torch.randperm(phi.numel(), generator=gen)].view_as(phi)
    ramp = phi + torch.linspace(0, 6 * np.pi, phi.shape[-1])  # a real-space shift is NOT forgiven
    for pred in (random, scrambled, torch.zeros_like(phi), ramp):
        assert wca_per_sample(pred, phi, w).min().item() > 0.3
    # a partly wrong phase lands between: noise of 0.5 rad costs about 1 - exp(-0.5**2/2)
    noisy = phi + 0.5 * torch.randn(phi.shape, generator=gen)
    assert 0.05 < wca_loss(noisy, phi, w).item() < 0.2


def test_batch_mean_and_weight_scale(batch):
    phi, w = batch
    pred = phi.clone()
    pred[1] = 0.0
    per = wca_per_sample(pred, phi, w)
    assert per[0].item() < 1e-5 and per[1].item() > 0.3
    assert wca_loss(pred, phi, w).item() == pytest.approx(per.mean().item())
    assert wca_loss(pred, phi, 5 * w).item() == pytest.approx(wca_loss(pred, phi, w).item(), abs=1e-6)


def test_gradient_descent_recovers_the_phase(batch):
    phi, w = batch
    gen = torch.Generator().manual_seed(2)
    pred = (phi + 0.8 * torch.randn(phi.shape, generator=gen)).requires_grad_(True)
    opt = torch.optim.Adam([pred], lr=0.05)
    start = wca_loss(pred, phi, w).item()
    for _ in range(60):
        opt.zero_grad()
        loss = wca_loss(pred, phi, w)
        loss.backward()
        assert torch.isfinite(pred.grad).all()
        opt.step()
    assert loss.item() < 0.2 * start


def test_shape_mismatch_is_an_input_error(batch):
    phi, w = batch
    with pytest.raises(InputError, match="equal shapes"):
        wca_loss(phi[:, :, :16], phi, w)
