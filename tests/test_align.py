"""Tests of physics.align: twin (conjugate inversion), sub-voxel translation and constant phase recovery."""
import numpy as np
import pytest

from physics.align import align, fourier_shift, twin
from physics.errors import InputError


def asymmetric_object(n=32):
    """Centred ellipsoid plus an off-centre blob, with a non-centrosymmetric phase, so the twin is distinct."""
    z, y, x = np.indices((n, n, n)) - n // 2
    sup = ((z / 7) ** 2 + (y / 5) ** 2 + (x / 4) ** 2 <= 1) | ((z - 4) ** 2 + (y + 4) ** 2 + x ** 2 <= 6)
    phase = 0.8 * np.sin(0.3 * z + 0.2 * x) + 0.05 * y ** 2 / 4
    return (sup * np.exp(1j * phase)).astype(np.complex64)


def test_twin_is_conjugate_of_fourier_transform_and_an_involution():
    obj = asymmetric_object()
    f = np.fft.fftn(np.fft.ifftshift(obj))
    t = np.fft.fftshift(np.fft.ifftn(np.conj(f)))
    np.testing.assert_allclose(twin(obj), t, atol=1e-5)
    np.testing.assert_allclose(twin(twin(obj)), obj, atol=0)


def test_fourier_shift_by_integers_is_a_roll():
    obj = asymmetric_object()
    np.testing.assert_allclose(fourier_shift(obj, (2, -3, 1)), np.roll(obj, (2, -3, 1), axis=(0, 1, 2)), atol=1e-5)


@pytest.mark.parametrize("use_twin", [False, True])
def test_align_recovers_known_twin_shift_and_phase(use_twin):
    obj = asymmetric_object()
    cand = twin(obj) if use_twin else obj
    cand = fourier_shift(cand, (1.3, -2.4, 0.7)) * np.exp(1j * 1.1) * 2.0
    aligned, info = align(obj, cand, upsample=20)
    assert info["twin"] is use_twin
    # the twin operation inverts a translation, so the twinned candidate needs the opposite shift
    expected = np.array([1.3, -2.4, 0.7]) * (1 if use_twin else -1)
    np.testing.assert_allclose(info["shift"], expected, atol=0.06)
    assert info["mismatch"] < 1e-2
    # up to the scale factor 2, the aligned candidate is the reference again
    err = np.linalg.norm(aligned / 2.0 - obj) / np.linalg.norm(obj)
    assert err < 0.01, err


def test_align_without_twin_option_keeps_orientation():
    obj = asymmetric_object()
    _, info = align(obj, twin(obj), allow_twin=False)
    _, with_twin = align(obj, twin(obj))
    assert info["twin"] is False and with_twin["twin"] is True
    assert info["mismatch"] > 0.05 and info["mismatch"] > 100 * with_twin["mismatch"]


def test_align_rejects_bad_input():
    obj = asymmetric_object()
    with pytest.raises(InputError, match="shape"):
        align(obj, obj[:16])
    with pytest.raises(InputError, match="zero"):
        align(obj, np.zeros_like(obj))
