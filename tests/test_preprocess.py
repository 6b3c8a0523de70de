"""Tests for physics.preprocess: peak finding, FFT-friendly crops, binning, resizing and their inverses."""

import numpy as np
import pytest

from physics.errors import InputError
from physics.preprocess import (bin_array, crop, crop_box, crop_like, find_peak, fft_friendly_size, fit_object_to,
                                resize_to)


def gaussian_peak(shape, centre, sigma=2.0, height=1e5):
    """A 3D Gaussian Bragg peak at a sub-voxel centre."""
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    return (height * np.exp(-r2 / (2 * sigma**2))).astype(np.float32)


def _prime_factors_ok(n):
    for p in (2, 3, 5, 7):
        while n % p == 0:
            n //= p
    return n == 1


def test_fft_friendly_size_is_even_and_7_smooth():
    for n in range(2, 600):
        m = fft_friendly_size(n)
        assert m <= n and m % 2 == 0 and _prime_factors_ok(m)
        # no larger friendly even size was skipped
        assert not any(k % 2 == 0 and _prime_factors_ok(k) for k in range(m + 1, n + 1))
    assert fft_friendly_size(11 * 2) == 20 and fft_friendly_size(13 * 2 * 2) == 50


def test_find_peak_ignores_hot_pixel_outside_box_and_masked_voxels():
    intensity = gaussian_peak((40, 80, 90), (20.3, 50.0, 30.6))
    intensity[2, 2, 2] = 5e5  # a hot pixel brighter than the peak, masked
    mask = np.zeros(intensity.shape, bool)
    mask[2, 2, 2] = True
    assert find_peak(intensity, mask) == (20, 50, 31)
    # without the mask the max lands on the hot pixel: the box COM stays there (documented limit of max-first)
    assert find_peak(intensity)[0] < 10


def test_find_peak_refines_from_max_to_centre_of_mass():
    # asymmetric peak: max at one voxel, mass centred elsewhere
    intensity = gaussian_peak((48, 48, 48), (24, 24, 24), sigma=3.0)
    intensity[24, 24, 27] += 1.5e5  # spike: the global max
    peak = find_peak(intensity, box=16)
    assert peak[2] in (24, 25) and peak[:2] == (24, 24)


def test_find_peak_all_zero_is_input_error():
    with pytest.raises(InputError, match="zero everywhere"):
        find_peak(np.zeros((8, 8, 8)))


def test_crop_centres_peak_and_records_offsets():
    shape = (51, 200, 180)
    intensity = gaussian_peak(shape, (25, 110, 70))
    mask = np.zeros(shape, bool)
    mask[:, 100, :] = True
    cropped, offsets = crop(intensity, size=(64, 96, 96), mask=mask)
    # rocking axis: largest symmetric even 7-smooth box around frame 25 in 51 frames is 50
    assert cropped.shape == (50, 96, 96)
    assert offsets == (0, 110 - 48, 70 - 48)
    assert np.unravel_index(np.argmax(cropped), cropped.shape) == (25, 48, 48)
    mcrop = crop_like(mask, offsets, cropped.shape)
    assert mcrop[:, 100 - offsets[1], :].all() and mcrop.sum() == 50 * 96
    # peak voxel maps back to the full stack
    assert tuple(int(v) for v in np.add((25, 48, 48), offsets)) == (25, 110, 70)


def test_crop_box_shrinks_symmetrically_near_edge_and_sizes_are_friendly():
    box = crop_box((100, 100, 100), (50, 20, 80), size=64)
    sizes = [s.stop - s.start for s in box]
    assert sizes == [64, 40, 40]
    for s, c in zip(box, (50, 20, 80)):
        assert c - s.start == (s.stop - s.start) // 2


def test_crop_peak_on_edge_is_clear_error():
    with pytest.raises(InputError, match=r"axis 2 .*edge"):
        crop_box((60, 60, 60), (30, 30, 3), size=32, min_size=16)


def test_bin_array_sum_mean_any():
    a = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)
    b = bin_array(a, (2, 3, 2))
    assert b.shape == (2, 2, 2)
    assert b[0, 0, 0] == a[:2, :3, :2].sum()
    assert np.isclose(bin_array(a, 2, mode="mean")[1, 1, 1], a[2:4, 2:4, 2:4].mean())
    m = np.zeros((4, 4, 4), bool)
    m[3, 0, 1] = True
    mb = bin_array(m, 2, mode="any")
    assert mb.dtype == bool and mb.sum() == 1 and mb[1, 0, 0]
    with pytest.raises(InputError):
        bin_array(a, 0)


def test_resize_to_keeps_shape_positivity_and_peak_position():
    intensity = gaussian_peak((50, 96, 128), (25, 48, 64), sigma=4)
    small = resize_to(intensity, (64, 64, 64))
    assert small.shape == (64, 64, 64) and small.dtype == np.float32
    assert small.min() >= 0
    assert np.unravel_index(np.argmax(small), small.shape) == (32, 32, 32)
    mask = np.zeros((50, 96, 128), bool)
    mask[:, 40:56, :] = True
    mres = resize_to(mask, (64, 64, 64))
    assert mres.dtype == bool and np.isclose(mres.mean(), mask.mean(), atol=0.03)


def test_fit_object_to_is_centred_pad_and_crop():
    obj = np.zeros((64, 64, 64), np.complex64)
    obj[30:34, 31:33, 32] = 1 + 1j
    big = fit_object_to(obj, (50, 96, 80))
    assert big.shape == (50, 96, 80)
    assert np.abs(big).sum() == pytest.approx(np.abs(obj).sum())
    assert big[25 + (30 - 32), 48 + (31 - 32), 40] == obj[30, 31, 32]
    back = fit_object_to(big, (64, 64, 64))
    assert np.array_equal(back, obj)


def test_prepare_refines_binned_on_request_keeping_counts_and_masking_any():
    from physics.detector_sim import detector_sample
    from physics.preprocess import FrontEndOptions, prepare

    s = detector_sample(2_000_001, (128, 128, 128), (5.6, 5.6))  # oversampling 5.6: crop 128, binned x2 -> 2.8
    mask = np.zeros(s["intensity"].shape, bool)
    mask[:, 70, :] = True
    full = prepare(s["intensity"], mask, (2.2, 4.0))
    assert full.frontend.crop_shape == (128, 128, 128) and full.frontend.cnn_binning == (2, 2, 2)
    assert full.intensity.shape == (128, 128, 128) and full.frontend.refine_binning == (1, 1, 1)
    binned = prepare(s["intensity"], mask, (2.2, 4.0), FrontEndOptions(refine_binned=True))
    assert binned.intensity.shape == (64, 64, 64) and binned.frontend.refine_binning == (2, 2, 2)
    o = full.frontend.crop_offsets
    row = (70 - o[1]) // 2  # the masked detector row lands in one binned row, masked whole (mode "any")
    assert binned.mask[:, row, :].all() and binned.mask.sum() == 64 * 64
    # binning sums counts: every unmasked binned voxel is the sum of its 8 full-resolution voxels
    ref = bin_array(np.where(full.mask, 0, full.intensity), 2)
    assert np.allclose(binned.intensity[~binned.mask], ref[~binned.mask])
    assert binned.metadata()["crop_offsets"] == list(o)
