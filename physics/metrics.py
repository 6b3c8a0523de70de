"""Quality metrics: against a known crystal (phase RMSE, support IoU, complex error) and from the data alone
(LLK, free LLK, R-factor, computed by the phasing engine's own LLK code). Arrays are centred numpy.
"""
from __future__ import annotations

import numpy as np

from physics.align import align, fourier_shift, twin
from physics.errors import InputError
from physics.phase import phase_ramp, ramp_plane, wrap_phase
from physics.success import SUCCESS, is_success  # noqa: F401  (re-exported beside compare_to_truth)


def support_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool arrays (1 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def moved_mask(mask: np.ndarray, info: dict) -> np.ndarray:
    """A mask on the reconstruction's grid moved onto the truth's with the alignment compare_to_truth found
    (twin, sub-voxel shift), so that more masks of one reconstruction (its support, its shape) can be scored
    against the truth without aligning again."""
    rs = np.asarray(mask, dtype=float)
    if info["twin"]:
        rs = twin(rs).real
    return fourier_shift(rs, info["shift"]).real > 0.5


def compare_to_truth(recon, truth, truth_support=None, recon_support=None, threshold: float = 0.25,
                     upsample: int = 20, remove_ramp: bool = False, allow_twin: bool = True) -> dict:
    """Compare a reconstruction with the known complex object after twin / sub-voxel shift / phase alignment.

    truth_support defaults to |truth| > 0.1 max; the reconstruction support is |recon| > threshold x max after
    alignment unless recon_support is given (then moved with the same twin and shift). remove_ramp fits and
    removes a residual linear phase ramp (reported in rad/voxel). Returns twin, shift, phase_offset, ramp,
    phase_rmse (unweighted, rad), phase_rmse_weighted (|truth|-weighted), iou, dice, volume_ratio,
    complex_error (||g recon - truth|| / ||truth|| with the least-squares complex g), scale (|g|).
    """
    recon = np.asarray(recon)
    truth = np.asarray(truth)
    if recon.shape != truth.shape:
        raise InputError(f"reconstruction shape {recon.shape} differs from the truth shape {truth.shape}")
    if not np.any(truth) or not np.any(recon):
        raise InputError("cannot compare an object that is zero everywhere")
    if truth_support is None:
        truth_support = np.abs(truth) > 0.1 * np.abs(truth).max()
    truth_support = np.asarray(truth_support, dtype=bool)
    if truth_support.shape != truth.shape:
        raise InputError(f"truth support shape {truth_support.shape} differs from the truth shape {truth.shape}")
    if recon_support is not None and np.shape(recon_support) != truth.shape:
        raise InputError(f"recon support shape {np.shape(recon_support)} differs from the truth shape {truth.shape}")
    aligned, info = align(truth, recon, upsample=upsample, allow_twin=allow_twin)
    ramp = np.zeros(truth.ndim)
    if remove_ramp:
        ramp = phase_ramp(np.angle(truth * np.conj(aligned)), truth_support, weights=np.abs(truth))
        aligned = aligned * np.exp(1j * ramp_plane(ramp, truth.shape))
    g = np.vdot(aligned, truth) / np.vdot(aligned, aligned)
    scaled = g * aligned
    complex_error = float(np.linalg.norm(scaled - truth) / np.linalg.norm(truth))
    dphi = np.angle(truth * np.conj(scaled))[truth_support]
    w = np.abs(truth)[truth_support]
    # best constant offset per variant: circular mean (unweighted) / weighted circular mean
    d_u = wrap_phase(dphi - np.angle(np.mean(np.exp(1j * dphi))))
    d_w = wrap_phase(dphi - np.angle(np.sum(w * np.exp(1j * dphi))))
    if recon_support is None:
        rs = np.abs(aligned) > threshold * np.abs(aligned).max()
    else:
        rs = moved_mask(recon_support, info)
    inter = np.logical_and(rs, truth_support).sum()
    return {
        "twin": bool(info["twin"]),
        "shift": tuple(info["shift"]),
        "phase_offset": float(info["phase_offset"]),
        "ramp": tuple(float(r) for r in ramp),
        "phase_rmse": float(np.sqrt(np.mean(d_u ** 2))),
        "phase_rmse_weighted": float(np.sqrt(np.sum(w * d_w ** 2) / np.sum(w))),
        "iou": support_iou(rs, truth_support),
        "dice": float(2 * inter / (rs.sum() + truth_support.sum())),
        "volume_ratio": float(rs.sum() / truth_support.sum()),
        "complex_error": complex_error,
        "scale": float(abs(g)),
    }


def score_result(obj, support, truth, truth_support=None, **kw) -> dict:
    """compare_to_truth of a result as the product reports it: `iou` is the IoU of the crystal's shape
    (physics.shape.crystal_shape, the amplitude isosurface inside the support, which the product writes and masks
    the strain with), `iou_support` that of the phasing support, `volume_ratio` the shape's. The evaluations'
    scoring (physics.success) since 2026-12-07; before, `iou` was the support's. kw: compare_to_truth's options."""
    from physics.shape import crystal_shape

    m = compare_to_truth(obj, truth, truth_support=truth_support, recon_support=support, **kw)
    if truth_support is None:  # compare_to_truth's default
        truth_support = np.abs(np.asarray(truth)) > 0.1 * np.abs(truth).max()
    ts = np.asarray(truth_support, bool)
    moved = moved_mask(crystal_shape(obj, support), m)
    return {**m, "iou_support": m["iou"], "volume_ratio_support": m["volume_ratio"], "iou": support_iou(moved, ts),
            "volume_ratio": float(moved.sum() / ts.sum()), "scored_on": "shape"}


def data_metrics(obj, iobs, mask=None, free_mask=None, support=None, threshold: float = 0.25,
                 device="cpu") -> dict:
    """LLKs (Poisson, Gaussian, Euclidian, free versions), R-factor and obj2_out of an object against data.

    Uses the phasing engine's CDI.compute_llk (one implementation). support defaults to
    |obj| > threshold x max (it sets the LLK normalisation N_obs - N_support - N_free and obj2_out).
    """
    from physics.phasing.cdi import CDI  # torch import kept out of module import

    obj = np.asarray(obj)
    if support is None:
        support = np.abs(obj) > threshold * np.abs(obj).max()
    cdi = CDI(iobs, mask=mask, obj=obj, support=support, device=device, free_mask=free_mask)
    return cdi.compute_llk()
