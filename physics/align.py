"""Align one complex 3D object on another: twin (conjugate + inversion), sub-voxel translation, constant phase.

Used to compare phasing runs (modes) and reconstructions with a known truth (metrics). Arrays are centred numpy.
"""
from __future__ import annotations

import numpy as np
from skimage.registration import phase_cross_correlation

from physics.errors import InputError


def twin(obj: np.ndarray) -> np.ndarray:
    """Conjugate-inverted twin conj(obj(-x)) about the array centre n//2 (= conj(FFT) in reciprocal space)."""
    out = np.conj(obj[(slice(None, None, -1),) * obj.ndim])
    # flipping maps index i -> n-1-i; the centre n//2 must map to itself, which needs a roll of 1 for even n
    shifts = tuple(1 if n % 2 == 0 else 0 for n in obj.shape)
    return np.roll(out, shifts, axis=tuple(range(obj.ndim)))


def fourier_shift(obj: np.ndarray, shift) -> np.ndarray:
    """Translate obj by `shift` voxels (result(x) = obj(x - shift)) with a Fourier phase ramp (periodic)."""
    f = np.fft.fftn(obj)
    ramp = np.zeros(obj.shape, dtype=np.float64)
    for axis, (n, s) in enumerate(zip(obj.shape, shift)):
        k = np.fft.fftfreq(n).reshape([-1 if i == axis else 1 for i in range(obj.ndim)])
        ramp = ramp + k * s
    out = np.fft.ifftn(f * np.exp(-2j * np.pi * ramp))
    return out.astype(np.result_type(obj.dtype, np.complex64))


def _register(reference, candidate, upsample):
    """Sub-voxel shift that moves candidate onto reference, from the cross-correlation of the moduli."""
    shift, _, _ = phase_cross_correlation(np.abs(reference), np.abs(candidate), upsample_factor=upsample,
                                          normalization=None)
    return np.asarray(shift, dtype=float)  # the translation that registers candidate on reference


def _match(reference, candidate):
    """Constant phase offset maximising Re<ref, e^{i a} cand>, and 1 - |<ref,cand>|/(|ref||cand|)."""
    c = np.vdot(candidate, reference)  # sum conj(candidate) * reference
    nr = np.linalg.norm(reference) * np.linalg.norm(candidate)
    mismatch = 1.0 - abs(c) / nr if nr > 0 else 1.0
    return float(np.angle(c)), float(mismatch)


def align(reference, candidate, upsample: int = 20, allow_twin: bool = True):
    """Align candidate on reference; returns (aligned_candidate, info).

    Tries the candidate and its twin, each registered by DFT-upsampled cross-correlation of the moduli
    (skimage, x upsample), refined by the complex cross-correlation when that matches better, applied as a
    Fourier phase ramp, then rotated by the best constant phase; keeps the
    one with the higher normalised complex correlation. info: twin (bool), shift (voxels applied to the
    possibly-twinned candidate), phase_offset (rad added), mismatch (1 - normalised |correlation|).
    """
    reference = np.asarray(reference)
    candidate = np.asarray(candidate)
    if reference.shape != candidate.shape:
        raise InputError(f"cannot align arrays of shapes {candidate.shape} and {reference.shape}")
    if reference.ndim not in (2, 3):
        raise InputError(f"align needs 2D or 3D arrays, got {reference.ndim}D")
    if not np.any(reference) or not np.any(candidate):
        raise InputError("cannot align an array that is zero everywhere")
    best = None
    options = [False, True] if allow_twin else [False]
    for is_twin in options:
        c0 = twin(candidate) if is_twin else candidate.astype(np.result_type(candidate.dtype, np.complex64))
        shift = _register(reference, c0, upsample)
        c = fourier_shift(c0, shift)
        offset, mismatch = _match(reference, c)
        # refine with the complex correlation (sharper than moduli, whose sub-voxel shifts ring); keep if better
        extra, _, _ = phase_cross_correlation(reference, c, upsample_factor=upsample, normalization=None)
        if np.all(np.abs(extra) <= 1.0) and np.any(extra != 0):
            c2 = fourier_shift(c0, shift + extra)
            offset2, mismatch2 = _match(reference, c2)
            if mismatch2 < mismatch:
                c, shift, offset, mismatch = c2, shift + np.asarray(extra), offset2, mismatch2
        if best is None or mismatch < best[1]["mismatch"]:
            best = (c * np.exp(1j * offset).astype(c.dtype),
                    {"twin": is_twin, "shift": tuple(float(s) for s in shift), "phase_offset": offset,
                     "mismatch": mismatch})
    return best
