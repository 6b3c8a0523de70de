"""Input normalisation and the Weighted Coherent Average (WCA) phase loss of Masto et al. 2025 (eq. 1-2).

The WCA loss compares phases through the weighted coherent sum of exp(i·Δφ), so it is blind to what the
measured intensity cannot tell: a constant phase offset, 2π wraps, and the twin image (φ -> -φ in reciprocal
space). It is not blind to a linear ramp (a real-space shift), so the training data must be centred.
"""

from __future__ import annotations

import numpy as np
import torch

from physics.errors import InputError


def _sample_axes(ndim: int) -> tuple[int, ...]:
    """Axes of one sample: all for a single 3D volume, all but the first (batch) axis otherwise."""
    if ndim < 3:
        raise InputError(f"expected a 3D volume or a batch of them, got {ndim} dimension(s)")
    return tuple(range(ndim)) if ndim == 3 else tuple(range(1, ndim))


def normalise_intensity(intensity):
    """log(I+1) min-max scaled to [0, 1] per sample (the network input and the WCA weights).

    Accepts a numpy array or a torch tensor, shape (D,H,W) for one sample or (B,...) for a batch; returns the
    same type (float32 for numpy). Negative counts are clipped to 0; a constant sample maps to zeros.
    """
    if isinstance(intensity, torch.Tensor):
        x = intensity if intensity.is_floating_point() else intensity.float()
        if not bool(torch.isfinite(x).all()):
            raise InputError("intensity contains NaN or infinite values")
        axes = _sample_axes(x.ndim)
        x = torch.log1p(torch.clamp(x, min=0))
        lo = torch.amin(x, dim=axes, keepdim=True)
        hi = torch.amax(x, dim=axes, keepdim=True)
        span = hi - lo
        return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                           torch.zeros_like(x))
    x = np.asarray(intensity)
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise InputError(f"intensity must be a real numeric array, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise InputError("intensity contains NaN or infinite values")
    axes = _sample_axes(x.ndim)
    x = np.log1p(np.clip(x, 0, None))
    lo = x.min(axis=axes, keepdims=True)
    span = x.max(axis=axes, keepdims=True) - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1), 0)
    return out.astype(np.float32, copy=False)


def wca_per_sample(phi_pred: torch.Tensor, phi_true: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """WCA loss per sample, shape (B,): min over ± of 1 - |Σ w exp(i(±φ_true - φ_pred))|, w normalised to sum 1.

    All three tensors share one shape (B, ...) (e.g. (B,1,64,64,64)); weights are non-negative (normally the
    normalised log intensity). Computed with real cos/sin sums, so it is differentiable and float32 safe.
    """
    if phi_pred.shape != phi_true.shape or phi_pred.shape != weights.shape:
        raise InputError(f"WCA loss needs equal shapes, got phi_pred {tuple(phi_pred.shape)}, "
                         f"phi_true {tuple(phi_true.shape)}, weights {tuple(weights.shape)}")
    if phi_pred.ndim < 2:
        raise InputError(f"WCA loss needs a batch axis, got shape {tuple(phi_pred.shape)}")
    axes = tuple(range(1, phi_pred.ndim))
    w = weights.to(phi_pred.dtype)
    total = w.sum(dim=axes, keepdim=True)
    w = w / torch.where(total > 0, total, torch.ones_like(total))
    losses = []
    for sign in (1.0, -1.0):
        d = sign * phi_true - phi_pred
        re = (w * torch.cos(d)).sum(dim=axes)
        im = (w * torch.sin(d)).sum(dim=axes)
        # tiny epsilon keeps the gradient of |z| finite when the coherent sum vanishes
        losses.append(1.0 - torch.sqrt(re * re + im * im + 1e-12))
    return torch.minimum(losses[0], losses[1])


def wca_loss(phi_pred: torch.Tensor, phi_true: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Batch mean of the WCA loss (0 for a perfect phase up to offset/wraps/twin, up to 1 for no coherence)."""
    return wca_per_sample(phi_pred, phi_true, weights).mean()
