"""Phase coherence between a predicted and a true reciprocal-space phase: the figure that judges the network.

C = max over the twin sign s in {+1, -1} and a real-space shift x of
    |sum_q w(q) exp(i (s phi_true(q) - phi_pred(q) + q.x))| / sum_q w(q),
with w the paper's weight, log(I+1) min-max normalised. 1 is perfect; a constant phase scores about 0.05 on
highly strained crystals. Unlike the WCA loss it is blind to a shift of the object (a phase ramp in q), which
the refinement does not care about either. The shift is searched on a half-voxel grid: the maximum modulus of
the FFT of the weighted unit product, zero-padded 2x per axis, is exactly the sum above at x = m/2 voxels.
"""
from __future__ import annotations

import numpy as np

from physics.errors import InputError


def coherence_weights(intensity: np.ndarray) -> np.ndarray:
    """The paper's weight: log(I+1), min-max normalised to [0, 1] (negative counts count as 0)."""
    w = np.log1p(np.clip(np.asarray(intensity, dtype=np.float64), 0, None))
    lo, hi = float(w.min()), float(w.max())
    return (w - lo) / (hi - lo) if hi > lo else np.zeros_like(w)


def phase_coherence(phase_pred: np.ndarray, phase_true: np.ndarray, intensity: np.ndarray | None = None,
                    weights: np.ndarray | None = None, pad: int = 2) -> float:
    """Shift- and twin-blind coherence C in [0, 1] of two reciprocal phases (3D, same shape).

    Give the measured intensity (weights from it) or the weights themselves. pad is the zero-padding factor
    per axis of the shift search (2: half-voxel steps).
    """
    phase_pred = np.asarray(phase_pred, dtype=np.float64)
    phase_true = np.asarray(phase_true, dtype=np.float64)
    if phase_pred.shape != phase_true.shape:
        raise InputError(f"phase shapes differ: predicted {phase_pred.shape}, true {phase_true.shape}")
    if weights is None:
        if intensity is None:
            raise InputError("phase_coherence needs the intensity or the weights")
        weights = coherence_weights(intensity)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != phase_true.shape:
        raise InputError(f"weights shape {weights.shape} differs from the phase shape {phase_true.shape}")
    total = float(weights.sum())
    if total <= 0:
        raise InputError("coherence weights sum to zero (empty intensity)")
    padded = tuple(pad * n for n in phase_true.shape)
    best = 0.0
    for sign in (1.0, -1.0):
        f = weights * np.exp(1j * (sign * phase_true - phase_pred))
        best = max(best, float(np.abs(np.fft.fftn(f, s=padded)).max()))
    return min(1.0, best / total)


def coherence_batch(phase_pred: np.ndarray, phase_true: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """phase_coherence per sample of batches shaped (B, ...) with given weights (a channel axis of 1 is dropped).

    The network's input, the normalised log intensity, is exactly the weight, so training passes it as is.
    """
    p, t, w = (np.asarray(a) for a in (phase_pred, phase_true, weights))
    if p.ndim == 5:
        p, t, w = p[:, 0], t[:, 0], w[:, 0]
    return np.array([phase_coherence(p[k], t[k], weights=w[k]) for k in range(len(p))])


def coherence_torch(phi_pred, phi_true, weights):
    """The same C per sample for torch tensors (B, n, n, n) or (B, 1, n, n, n), on their device (the GPU
    training segment validates on the device with it); weights are the network input."""
    import torch

    phi_pred, phi_true, w = (t.reshape(t.shape[0], *t.shape[-3:]).float() for t in (phi_pred, phi_true, weights))
    padded = tuple(2 * n for n in phi_true.shape[-3:])
    total = w.sum(dim=(1, 2, 3)).clamp(min=1e-12)
    best = torch.zeros(len(w), device=w.device)
    for sign in (1.0, -1.0):
        z = w * torch.polar(torch.ones_like(w), sign * phi_true - phi_pred)
        best = torch.maximum(best, torch.fft.fftn(z, s=padded, dim=(1, 2, 3)).abs().amax(dim=(1, 2, 3)) / total)
    return best.clamp(max=1.0)
