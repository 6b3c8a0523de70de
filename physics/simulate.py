"""Simulated BCDI patterns with a known answer: the training-data generator of Masto et al. (2025).

A faceted crystal (Wulff, Winterbottom or a cube with random planar cuts, randomly oriented) carries a
strain phase field (two Gaussians, two cosines or a correlated Gaussian random field) whose range inside
the crystal is drawn from `phase_range`. Its unitary 3D FFT on an n³ grid gives the diffraction; Poisson
noise at a log-uniform photon budget, and optional detector gaps and masked voxels, make it measured-like.
Everything is deterministic per seed and numpy-only, so DataLoader workers can generate samples on the fly.
HDF5/npz storage of samples lives in `workers.io.samples` (this module does no I/O).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sfft
from scipy.spatial.transform import Rotation

from physics.errors import OptionsError

TWO_PI = 2.0 * np.pi

SHAPES = ("wulff", "winterbottom", "cube")
FIELDS = ("gaussians", "cosines", "grf")

# fcc facet families used for Wulff constructions; the surface energy of each family is drawn per crystal.
_FAMILIES = {
    "111": np.array([[s1, s2, s3] for s1 in (1, -1) for s2 in (1, -1) for s3 in (1, -1)], float) / np.sqrt(3),
    "100": np.concatenate([np.eye(3), -np.eye(3)]),
    "110": np.array([[a, b, 0] for a in (1, -1) for b in (1, -1)]
                    + [[a, 0, b] for a in (1, -1) for b in (1, -1)]
                    + [[0, a, b] for a in (1, -1) for b in (1, -1)], float) / np.sqrt(2),
}


@dataclass(frozen=True)
class SimParams:
    """Ranges from which each sample's parameters are drawn (uniform unless stated)."""

    size: int = 64
    phase_range: tuple[float, float] = (2 * np.pi, 5 * np.pi)  # radians, max-min of the phase inside the crystal
    oversampling: tuple[float, float] = (2.2, 4.0)  # per axis: size / crystal extent along that axis
    peak_counts: tuple[float, float] = (1e4, 1e7)  # log-uniform photon count at the Bragg peak
    shapes: tuple[str, ...] = SHAPES
    fields: tuple[str, ...] = FIELDS
    gap_probability: float = 0.0  # chance of one masked detector-gap band (3-6 voxels wide)
    masked_fraction: float = 0.0  # fraction of isolated masked voxels (hot/dead pixels)
    edge_smoothing: tuple[float, float] = (0.4, 0.8)  # width (voxels) of the soft crystal surface
    noise: bool = True

    def __post_init__(self):
        if self.size < 16:
            raise OptionsError(f"size must be >= 16, got {self.size}")
        lo, hi = self.oversampling
        if lo < 2.0 or hi < lo:
            raise OptionsError(f"oversampling range must satisfy 2 <= min <= max, got {self.oversampling}")
        if self.phase_range[0] < 0 or self.phase_range[1] < self.phase_range[0]:
            raise OptionsError(f"phase_range must satisfy 0 <= min <= max, got {self.phase_range}")
        if not (0 < self.peak_counts[0] <= self.peak_counts[1]):
            raise OptionsError(f"peak_counts must satisfy 0 < min <= max, got {self.peak_counts}")
        for s in self.shapes:
            if s not in SHAPES:
                raise OptionsError(f"unknown shape {s!r}; choose from {SHAPES}")
        for f in self.fields:
            if f not in FIELDS:
                raise OptionsError(f"unknown phase field {f!r}; choose from {FIELDS}")


def _grid(n: int) -> np.ndarray:
    """Centred voxel coordinates, shape (3, n, n, n), origin at index n//2."""
    c = np.arange(n, dtype=np.float32) - n // 2
    return np.stack(np.meshgrid(c, c, c, indexing="ij"))


def _half_spaces(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Facet normals and distances (unit-size crystal) of one random polyhedron of the given kind."""
    if kind in ("wulff", "winterbottom"):
        gam = {"111": 1.0, "100": rng.uniform(1.0, 1.35), "110": rng.uniform(1.05, 1.5)}
        normals = np.concatenate([_FAMILIES[k] for k in gam])
        dist = np.concatenate([np.full(len(_FAMILIES[k]), gam[k]) for k in gam])
        if kind == "winterbottom":  # truncated by the substrate interface along one {111} or {100} normal
            fam = _FAMILIES["111" if rng.random() < 0.5 else "100"]
            n_sub = fam[rng.integers(len(fam))]
            normals = np.concatenate([normals, -n_sub[None]])
            dist = np.concatenate([dist, [rng.uniform(0.0, 0.6)]])
    else:  # cube with 1-4 random planar cuts
        normals = _FAMILIES["100"].copy()
        dist = np.ones(6)
        k = rng.integers(1, 5)
        cut_n = rng.normal(size=(k, 3))
        cut_n /= np.linalg.norm(cut_n, axis=1, keepdims=True)
        normals = np.concatenate([normals, cut_n])
        dist = np.concatenate([dist, rng.uniform(0.55, 1.2, size=k)])
    return normals.astype(np.float32), dist.astype(np.float32)


def _signed_distance(r: np.ndarray, normals: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Max over facets of (n·r - d): negative inside the convex polyhedron."""
    sd = np.full(r.shape[1:], -np.inf, dtype=np.float32)
    for n, d in zip(normals, dist):
        np.maximum(sd, n[0] * r[0] + n[1] * r[1] + n[2] * r[2] - d, out=sd)
    return sd


def crystal_shape(rng: np.random.Generator, n: int, kind: str, oversampling: np.ndarray,
                  edge: float) -> np.ndarray:
    """Soft-edged amplitude (0..1) of a randomly oriented crystal whose per-axis extent is n/oversampling."""
    normals, dist = _half_spaces(kind, rng)
    rot = Rotation.random(random_state=rng).as_matrix().astype(np.float32)
    normals = normals @ rot.T  # rotate the crystal by rotating its facet normals
    # Extent of the rotated polyhedron along each lab axis, from a coarse voxelisation (support function).
    m = 48
    c = (np.arange(m, dtype=np.float32) - m // 2) * (4.0 / m)
    coarse = np.stack(np.meshgrid(c, c, c, indexing="ij"))
    inside = _signed_distance(coarse, normals, dist) <= 0
    idx = np.nonzero(inside)
    extent = np.array([(c[i.max()] - c[i.min()]) + 4.0 / m for i in idx], dtype=np.float32)
    scale = (n / oversampling).astype(np.float32) / extent  # voxels per crystal unit, per axis
    r = _grid(n) / scale[:, None, None, None]
    # Signed distance in crystal units -> voxels (approximately, along the mean scale) for a soft edge.
    sd = _signed_distance(r, normals, dist) * float(scale.mean())
    return np.clip(0.5 - sd / max(edge, 1e-3), 0.0, 1.0).astype(np.float32)


def _normalised(f: np.ndarray, support: np.ndarray, target_range: float) -> np.ndarray:
    """Shift and scale a field so that its max-min inside the support equals target_range, min at 0."""
    v = f[support]
    lo, hi = float(v.min()), float(v.max())
    return ((f - lo) * (target_range / max(hi - lo, 1e-12))).astype(np.float32)


def phase_field(rng: np.random.Generator, kind: str, support: np.ndarray, target_range: float) -> np.ndarray:
    """A smooth strain phase of the given family, scaled to target_range (rad) inside the support."""
    n = support.shape[0]
    r = _grid(n)
    idx = np.argwhere(support)
    lo, hi = idx.min(0) - n // 2, idx.max(0) - n // 2
    size = float(np.mean(hi - lo + 1))
    if kind == "gaussians":
        f = np.zeros(support.shape, np.float32)
        for _ in range(2):
            c0 = rng.uniform(lo, hi).astype(np.float32)
            w = rng.uniform(0.2, 0.6) * size
            d2 = sum((r[i] - c0[i]) ** 2 for i in range(3))
            f += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * np.exp(-d2 / (2 * w * w))
    elif kind == "cosines":
        f = np.zeros(support.shape, np.float32)
        for _ in range(2):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            k = TWO_PI / (rng.uniform(0.6, 2.5) * size) * direction
            f += rng.uniform(0.5, 1.0) * np.cos(k[0] * r[0] + k[1] * r[1] + k[2] * r[2] + rng.uniform(0, TWO_PI))
    elif kind == "grf":
        corr = rng.uniform(0.12, 0.35) * size
        noise = rng.standard_normal(support.shape).astype(np.float32)
        q = sfft.fftfreq(n).astype(np.float32)
        q2 = q[:, None, None] ** 2 + q[None, :, None] ** 2 + q[None, None, :] ** 2
        filt = np.exp(-2 * (np.pi * corr) ** 2 * q2)
        f = sfft.ifftn(sfft.fftn(noise, workers=-1) * filt, workers=-1).real.astype(np.float32)
    else:
        raise OptionsError(f"unknown phase field {kind!r}; choose from {FIELDS}")
    return _normalised(_remove_ramp(f, support), support, target_range)


def _remove_ramp(f: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Subtract the least-squares linear trend of a smooth, unwrapped field over the support (before it becomes a phase).

    A mean phase gradient is a shift of the Bragg peak; measured data are centred on the peak, so the
    reference lattice has no mean strain and the simulated intensity stays centred like the real one.
    This is a fit of a real field, not a ramp estimate of a wrapped phase (that is physics.phase.phase_ramp);
    it stays a least-squares fit so that every seed simulates the same crystal as the model was trained on.
    """
    idx = np.argwhere(support).astype(np.float64)
    a = np.c_[idx, np.ones(len(idx))]
    coef, *_ = np.linalg.lstsq(a, f[support].astype(np.float64), rcond=None)
    ramp = sum(coef[i] * np.arange(f.shape[i]).reshape([-1 if j == i else 1 for j in range(3)]) for i in range(3))
    return (f - ramp).astype(np.float32)


def _centre_of_mass_shift(amp: np.ndarray) -> np.ndarray:
    """Integer shift that puts the centre of mass of amp at index n//2."""
    n = np.array(amp.shape)
    w = amp / amp.sum()
    com = np.array([(w.sum(axis=tuple(j for j in range(3) if j != i)) * np.arange(n[i])).sum() for i in range(3)])
    return np.round(n // 2 - com).astype(int)


def diffraction(obj: np.ndarray) -> np.ndarray:
    """Unitary 3D FFT of a centred object, returned centred (zero frequency at n//2)."""
    return sfft.fftshift(sfft.fftn(sfft.ifftshift(obj), norm="ortho", workers=-1))


def object_from_diffraction(amplitude: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Inverse of `diffraction`: the centred object whose unitary FFT is amplitude·exp(i·phase)."""
    psi = amplitude * np.exp(1j * phase)
    return sfft.fftshift(sfft.ifftn(sfft.ifftshift(psi), norm="ortho", workers=-1)).astype(np.complex64)


def detector_mask(rng: np.random.Generator, n: int, gap_probability: float, masked_fraction: float) -> np.ndarray:
    """Masked voxels: an optional gap band (whole planes along one detector axis) and isolated bad voxels."""
    mask = np.zeros((n, n, n), bool)
    if rng.random() < gap_probability:
        width = int(rng.integers(3, 7))
        axis = int(rng.integers(1, 3))  # a detector row or column band, through every frame
        start = n // 2 + int(rng.integers(-n // 4, n // 4 - width))
        sl = [slice(None)] * 3
        sl[axis] = slice(start, start + width)
        mask[tuple(sl)] = True
    if masked_fraction > 0:
        mask |= rng.random((n, n, n)) < masked_fraction
    return mask


def simulate_sample(seed: int, params: SimParams = SimParams()) -> dict:
    """One simulated BCDI sample, deterministic per seed (see the module docstring for the contents)."""
    rng = np.random.default_rng(seed)
    n = params.size
    shape_kind = params.shapes[rng.integers(len(params.shapes))]
    field_kind = params.fields[rng.integers(len(params.fields))]
    os_ = rng.uniform(*params.oversampling, size=3)
    amp = crystal_shape(rng, n, shape_kind, os_, rng.uniform(*params.edge_smoothing))
    amp = np.roll(amp, tuple(_centre_of_mass_shift(amp)), axis=(0, 1, 2))
    support = amp > 0.5
    target = rng.uniform(*params.phase_range)
    phi = phase_field(rng, field_kind, support, target)
    obj = (amp * np.exp(1j * phi)).astype(np.complex64)

    psi = diffraction(obj)
    i_clean = (psi.real ** 2 + psi.imag ** 2).astype(np.float32)
    peak = float(np.exp(rng.uniform(np.log(params.peak_counts[0]), np.log(params.peak_counts[1]))))
    scale = peak / float(i_clean.max())
    i_clean *= scale
    obj *= np.float32(np.sqrt(scale))
    intensity = rng.poisson(i_clean).astype(np.float32) if params.noise else i_clean.copy()
    mask = detector_mask(rng, n, params.gap_probability, params.masked_fraction)
    intensity[mask] = 0.0
    return {
        "intensity": intensity,
        "intensity_clean": i_clean,
        "mask": mask,
        "phase": np.angle(psi).astype(np.float32),
        "object": obj,
        "support": support,
        "phase_range": np.float32(np.ptp(phi[support])),
        "oversampling": os_.astype(np.float32),
        "peak_counts": np.float32(peak),
        "shape_kind": np.str_(shape_kind),
        "field_kind": np.str_(field_kind),
        "seed": np.int64(seed),
    }
