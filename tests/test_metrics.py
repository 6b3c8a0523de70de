"""Tests of physics.metrics: comparison with a known crystal, and data-only metrics shared with the engine."""
import numpy as np
import pytest
import torch

from physics.align import fourier_shift, twin
from physics.errors import InputError
from physics.metrics import compare_to_truth, data_metrics, support_iou
from physics.phasing import CDI, LLK, free_pixel_mask


def crystal(n=32, counts=1e6, seed=0):
    """Centred ellipsoid with an off-centre bump and a smooth phase (< pi), plus its Poisson intensity."""
    z, y, x = np.indices((n, n, n)) - n // 2
    sup = ((z / 6) ** 2 + (y / 5) ** 2 + (x / 4.5) ** 2 <= 1) | ((z - 3) ** 2 + (y + 3) ** 2 + x ** 2 <= 5)
    phase = 1.0 * np.sin(0.35 * z + 0.15 * y) + 0.3 * np.cos(0.4 * x)
    obj = (sup * np.exp(1j * phase)).astype(np.complex64)
    f = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj), norm="ortho"))
    scale = counts / (np.abs(f) ** 2).max()
    iobs = np.random.default_rng(seed).poisson(np.abs(f) ** 2 * scale).astype(np.float32)
    return (obj * np.sqrt(scale)).astype(np.complex64), sup, iobs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def xtal():
    return crystal()


def test_identical_objects_give_zero_error_and_iou_one(xtal):
    obj, sup, _ = xtal
    m = compare_to_truth(obj, obj, truth_support=sup)
    assert m["phase_rmse"] < 1e-3 and m["phase_rmse_weighted"] < 1e-3
    assert m["complex_error"] < 1e-3
    assert m["iou"] == 1.0 and m["dice"] == 1.0 and m["volume_ratio"] == 1.0
    assert m["twin"] is False and np.allclose(m["shift"], 0, atol=1e-6)


def test_twin_shift_phase_and_scale_are_removed(xtal):
    obj, sup, _ = xtal
    recon = fourier_shift(twin(obj), (2.0, -1.0, 3.0)) * np.exp(1j * 2.5) * 0.3
    m = compare_to_truth(recon, obj, truth_support=sup)
    assert m["twin"] is True
    assert m["phase_rmse"] < 0.02 and m["complex_error"] < 0.02 and m["iou"] > 0.97
    assert m["scale"] == pytest.approx(1 / 0.3, rel=1e-2)


def test_known_phase_error_is_measured(xtal):
    obj, sup, _ = xtal
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.2, obj.shape)
    m = compare_to_truth(obj * np.exp(1j * noise), obj, truth_support=sup)
    assert m["phase_rmse"] == pytest.approx(0.2, abs=0.02)
    assert m["phase_rmse_weighted"] == pytest.approx(0.2, abs=0.02)
    # |1 - e^{i n}| averaged: complex error ~ sqrt(2 - 2 E[cos n]) ~ 0.2 for small n
    assert m["complex_error"] == pytest.approx(0.2, abs=0.03)


def test_phase_ramp_removal(xtal):
    obj, sup, _ = xtal
    n = obj.shape[0]
    z, y, x = np.indices(obj.shape) - n // 2
    recon = obj * np.exp(1j * (0.3 * z - 0.2 * x))
    plain = compare_to_truth(recon, obj, truth_support=sup, allow_twin=False)
    fixed = compare_to_truth(recon, obj, truth_support=sup, allow_twin=False, remove_ramp=True)
    assert plain["phase_rmse"] > 0.5
    assert fixed["phase_rmse"] < 0.02
    np.testing.assert_allclose(fixed["ramp"], (-0.3, 0.0, 0.2), atol=0.01)


def test_recon_support_is_moved_with_the_alignment(xtal):
    obj, sup, _ = xtal
    recon = np.roll(obj, (3, 0, -2), axis=(0, 1, 2))
    rsup = np.roll(sup, (3, 0, -2), axis=(0, 1, 2))
    m = compare_to_truth(recon, obj, truth_support=sup, recon_support=rsup, allow_twin=False)
    assert m["iou"] == 1.0
    half = rsup.copy()
    half[: obj.shape[0] // 2 + 3] = False
    m = compare_to_truth(recon, obj, truth_support=sup, recon_support=half, allow_twin=False)
    assert m["iou"] == pytest.approx(support_iou(np.roll(half, (-3, 0, 2), axis=(0, 1, 2)), sup))
    assert m["iou"] < 0.7


def test_data_metrics_match_the_engine(xtal):
    obj, sup, iobs = xtal
    free = free_pixel_mask(iobs.shape, seed=5)
    d = data_metrics(obj, iobs, free_mask=free, support=sup)
    cdi = CDI(iobs, obj=obj, support=sup, free_mask=free)
    e = (LLK() * cdi).get_llk()
    for key in ("llk_poisson", "llk_poisson_free", "llk_gaussian", "llk_euclidian", "r_factor", "obj2_out"):
        assert d[key] == pytest.approx(e[key], rel=1e-9)
    assert 0.75 < d["llk_poisson"] < 1.25 and 0.75 < d["llk_poisson_free"] < 1.25
    assert d["r_factor"] < 0.1
    worse = data_metrics(obj * np.exp(1j * 0.5 * np.random.default_rng(1).normal(size=obj.shape)), iobs,
                         free_mask=free, support=sup)
    assert worse["llk_poisson"] > 5 * d["llk_poisson"] and worse["r_factor"] > 2 * d["r_factor"]


def test_metrics_reject_bad_input(xtal):
    obj, sup, _ = xtal
    with pytest.raises(InputError, match="shape"):
        compare_to_truth(obj[:16], obj)
    with pytest.raises(InputError, match="zero"):
        compare_to_truth(np.zeros_like(obj), obj)
