"""Simulated BCDI patterns with a known answer: the training-data generator of Masto et al. (2025), widened.

A faceted crystal, randomly oriented, carries a strain phase field whose range inside the crystal is drawn
from `phase_range`. Its unitary 3D FFT on an n³ grid gives the diffraction; Poisson noise at a log-uniform
photon budget, an optional flat background, and optional detector gaps and masked voxels make it
measured-like. Everything is deterministic per seed; the numpy path needs numpy only (scipy is used when
present, to keep the seeds' historical behaviour), so DataLoader workers can generate samples on the fly.
`physics.simulate_torch` runs the same recipe on torch tensors (CUDA). HDF5/npz storage of samples lives
in `workers.io.samples` (this module does no I/O).

The paper's families (the defaults, `SHAPES` x `FIELDS`): Wulff, Winterbottom and cut cubes; two Gaussians,
two cosines or a correlated Gaussian random field.

Wider families (`EXTRA_SHAPES`, `EXTRA_FIELDS`; the "wide" training distribution uses them), after:
- shapes of fcc nanocrystals, single-crystal and twinned: octahedra, truncated octahedra, cuboctahedra,
  Ino/Marks decahedra, lamellar (Σ3) twins, rods and platelets — Marks & Peng, J. Phys.: Condens. Matter 28,
  053001 (2016), "Nanoparticle shape, thermodynamics and kinetics"; octahedra and Winterbottom shapes in the
  training data of Masto et al., J. Appl. Cryst. 57 (2024) (arXiv 2403.08596).
- dislocations: isotropic-elasticity displacement fields of straight screw and edge dislocations (Hirth &
  Lothe, "Theory of Dislocations", 2nd ed., Wiley 1982, eqs. 3-2 and 3-45), whose phase G·u winds by 2π·g·b
  around the line; their BCDI signatures: Dupraz et al., J. Appl. Cryst. 48, 621 (2015); Ulvestad et al.,
  Science 348, 1344 (2015); Ulvestad et al., Sci. Rep. 7, 9920 (2017).
- stacking faults / twin boundaries on {111}: a phase jump of ±2π/3 across the plane for reflections with
  G·R not an integer, R = a/6<112> (Dupraz et al. 2015).
- misfitting inclusions and core-shell particles: Eshelby's spherical inclusion in an isotropic matrix,
  u = ε r inside, ε a³ r/|r|³ outside (Eshelby, Proc. R. Soc. A 241, 376 (1957)).
- facet-dependent surface relaxation, decaying over a few voxels below each facet: Watari et al., Nat. Mater.
  10, 862 (2011); Pfeifer et al., Nature 442, 63 (2006).
- compositional gradients (Vegard's law: the lattice parameter follows the composition) with a diffusion
  front of variable width, as in hydriding or alloying fronts (Ulvestad et al., Nano Lett. 15, 4066 (2015)).
- detector gaps between chips/modules and isolated bad pixels (Masto et al. 2024, gap inpainting), and a
  small flat background of diffuse/air scattering.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:  # scipy keeps the historical per-seed results; numpy alone is enough (e.g. a bare GPU machine)
    import scipy.fft as sfft
    from scipy.spatial.transform import Rotation
except ImportError:  # pragma: no cover - exercised on machines without scipy
    sfft, Rotation = None, None

from physics.errors import OptionsError

TWO_PI = 2.0 * np.pi

SHAPES = ("wulff", "winterbottom", "cube")  # the paper's families (default)
FIELDS = ("gaussians", "cosines", "grf")
EXTRA_SHAPES = ("octahedron", "truncated_octahedron", "cuboctahedron", "decahedron", "twinned", "rod", "platelet")
EXTRA_FIELDS = ("screw_dislocation", "edge_dislocation", "planar_fault", "inclusion", "core_shell",
                "surface_relaxation", "gradient")
ALL_SHAPES = SHAPES + EXTRA_SHAPES
ALL_FIELDS = FIELDS + EXTRA_FIELDS
# Shapes scaled isotropically (their aspect ratio is the point); the others are scaled per axis.
_ISOTROPIC = ("rod", "platelet", "decahedron", "twinned")

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
    """Ranges from which each sample's parameters are drawn (uniform unless stated).

    The defaults are the paper's distribution and keep every seed's result unchanged; the new options
    (background, gap_count, the extra shapes and fields) draw nothing when left at their defaults.
    """

    size: int = 64
    phase_range: tuple[float, float] = (2 * np.pi, 5 * np.pi)  # radians, max-min of the phase inside the crystal
    oversampling: tuple[float, float] = (2.2, 4.0)  # per axis: size / crystal extent along that axis
    peak_counts: tuple[float, float] = (1e4, 1e7)  # log-uniform photon count at the Bragg peak
    shapes: tuple[str, ...] = SHAPES
    fields: tuple[str, ...] = FIELDS
    gap_probability: float = 0.0  # chance of masked detector-gap bands (3-6 voxels wide)
    masked_fraction: float = 0.0  # fraction of isolated masked voxels (hot/dead pixels)
    edge_smoothing: tuple[float, float] = (0.4, 0.8)  # width (voxels) of the soft crystal surface
    noise: bool = True
    background: tuple[float, float] = (0.0, 0.0)  # flat background, mean counts per voxel (uniform)
    gap_count: tuple[int, int] = (1, 1)  # number of gap bands when there are gaps (uniform integer)

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
        if not (0 <= self.background[0] <= self.background[1]):
            raise OptionsError(f"background must satisfy 0 <= min <= max, got {self.background}")
        if not (1 <= self.gap_count[0] <= self.gap_count[1]):
            raise OptionsError(f"gap_count must satisfy 1 <= min <= max, got {self.gap_count}")
        for s in self.shapes:
            if s not in ALL_SHAPES:
                raise OptionsError(f"unknown shape {s!r}; choose from {ALL_SHAPES}")
        for f in self.fields:
            if f not in ALL_FIELDS:
                raise OptionsError(f"unknown phase field {f!r}; choose from {ALL_FIELDS}")


# The wide training distribution (issue 11, item 5): every family, oversampling 2-5 per axis (anisotropic),
# peak counts 1e3-1e7, gaps on half the patterns, a few bad pixels and a small background.
WIDE = SimParams(oversampling=(2.0, 5.0), peak_counts=(1e3, 1e7), shapes=ALL_SHAPES, fields=ALL_FIELDS,
                 gap_probability=0.5, gap_count=(1, 2), masked_fraction=1e-3, background=(0.0, 0.2))


# ---------------------------------------------------------------------------------------------------------
# Array back-end: the recipe below runs on numpy arrays (here) or torch tensors (physics.simulate_torch).
# `xp` holds the elementwise functions (numpy names); the methods are the few reductions and transforms.

class NumpyOps:
    """numpy back-end of the simulator recipe."""

    xp = np

    def grid(self, n: int):
        return _grid(n)

    def asarray(self, a):
        return np.asarray(a, dtype=np.float32)

    def roll(self, a, shifts):
        return np.roll(a, tuple(int(s) for s in shifts), axis=(0, 1, 2))

    def nonzero_bounds(self, mask) -> tuple[np.ndarray, np.ndarray]:
        idx = np.nonzero(mask)
        return np.array([i.min() for i in idx]), np.array([i.max() for i in idx])

    def bbox(self, support) -> tuple[np.ndarray, np.ndarray]:
        idx = np.argwhere(support)
        return idx.min(0), idx.max(0)

    def com_shift(self, amp) -> np.ndarray:
        return _centre_of_mass_shift(amp)

    def values(self, f, support):
        return f[support]

    def ptp(self, v) -> tuple[float, float]:
        return float(v.min()), float(v.max())

    def remove_ramp(self, f, support):
        return _remove_ramp(f, support)

    def standard_normal(self, rng: np.random.Generator, shape):
        return rng.standard_normal(shape).astype(np.float32)

    def lowpass(self, noise, corr: float):
        n = noise.shape[0]
        if sfft is not None:
            q = sfft.fftfreq(n).astype(np.float32)
        else:
            q = np.fft.fftfreq(n).astype(np.float32)
        q2 = q[:, None, None] ** 2 + q[None, :, None] ** 2 + q[None, None, :] ** 2
        filt = np.exp(-2 * (np.pi * corr) ** 2 * q2)
        if sfft is not None:
            return sfft.ifftn(sfft.fftn(noise, workers=-1) * filt, workers=-1).real.astype(np.float32)
        return np.fft.ifftn(np.fft.fftn(noise) * filt).real.astype(np.float32)

    def index_grid(self, n: int, axis: int):
        return np.arange(n, dtype=np.float32).reshape([-1 if j == axis else 1 for j in range(3)])


NUMPY = NumpyOps()


def _grid(n: int) -> np.ndarray:
    """Centred voxel coordinates, shape (3, n, n, n), origin at index n//2."""
    c = np.arange(n, dtype=np.float32) - n // 2
    return np.stack(np.meshgrid(c, c, c, indexing="ij"))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotation matrix (Haar measure), float32; scipy's draw when scipy is present."""
    if Rotation is not None:
        return Rotation.random(random_state=rng).as_matrix().astype(np.float32)
    x, y, z, w = (q := rng.normal(size=4)) / np.linalg.norm(q)  # scipy's convention: a normalised (x,y,z,w)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]], dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------
# Shapes: a union of convex polyhedra ("parts"), each a list of facet normals and distances (crystal units).

def _half_spaces(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Facet normals and distances (unit-size crystal) of one random polyhedron of the paper's kinds."""
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


def _prism(sides: int, radius: np.ndarray, half_height: float, phase: float = 0.0):
    """Prism along z: `sides` side facets at distances `radius` (per side), caps at ±half_height."""
    az = phase + TWO_PI * np.arange(sides) / sides
    normals = np.c_[np.cos(az), np.sin(az), np.zeros(sides)]
    normals = np.concatenate([normals, [[0, 0, 1], [0, 0, -1]]])
    return normals, np.concatenate([np.broadcast_to(radius, sides), [half_height, half_height]])


def _extra_parts(kind: str, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Convex parts (normals, distances) of the wider shape families (see the module docstring)."""
    f111, f100 = _FAMILIES["111"], _FAMILIES["100"]
    if kind == "octahedron":  # {111} only, slightly uneven facets (growth is never perfect)
        parts = [(f111, 1.0 + rng.uniform(-0.06, 0.06, 8))]
    elif kind == "truncated_octahedron":  # d100/d111 = sqrt(3) is the octahedron, 2/sqrt(3) the Archimedean solid
        parts = [(np.concatenate([f111, f100]), np.r_[np.ones(8), rng.uniform(1.0, 1.55, 6)])]
    elif kind == "cuboctahedron":  # d100/d111 = sqrt(3)/2
        parts = [(np.concatenate([f111, f100]), np.r_[np.ones(8), rng.uniform(0.84, 0.95, 6)])]
    elif kind == "decahedron":  # five tetrahedra around a <110> axis: ten {111} faces at 54.74° elevation
        elev = np.arctan(np.sqrt(2.0))
        az = TWO_PI * np.arange(5) / 5
        top = np.c_[np.cos(elev) * np.cos(az), np.cos(elev) * np.sin(az), np.full(5, np.sin(elev))]
        bottom = top * [1, 1, -1]
        # Ino {100} truncation of the five equatorial edges (vertices at 1/(cos(elev) cos 36°) = 2.14)
        side = np.c_[np.cos(az + np.pi / 5), np.sin(az + np.pi / 5), np.zeros(5)]
        parts = [(np.concatenate([top, bottom, side]), np.r_[np.ones(10), rng.uniform(1.6, 2.1, 5)])]
    elif kind == "twinned":  # lamellar Σ3 twin: a {111} mirror plane through a Wulff-like crystal
        gam = {"111": 1.0, "100": rng.uniform(1.0, 1.4), "110": rng.uniform(1.1, 1.6)}
        normals = np.concatenate([_FAMILIES[k] for k in gam])
        dist = np.concatenate([np.full(len(_FAMILIES[k]), gam[k]) for k in gam])
        t = f111[rng.integers(8)]
        o = rng.uniform(-0.4, 0.4)
        # A: the crystal on the side t·r <= o; B: its mirror image across the plane t·r = o, on the other side.
        nt = normals @ t
        mirrored = normals - 2 * nt[:, None] * t[None]
        parts = [(np.concatenate([normals, t[None]]), np.r_[dist, o]),
                 (np.concatenate([mirrored, -t[None]]), np.r_[dist - 2 * o * nt, -o])]
    elif kind == "rod":  # nanowire / nanorod: hexagonal prism, aspect 1.8-3.2, with {111}-like end caps
        hh = rng.uniform(1.8, 3.2)
        normals, dist = _prism(6, 1.0 + rng.uniform(-0.05, 0.05, 6), hh)
        caps = np.c_[0.5 * np.cos(np.pi / 6 + TWO_PI * np.arange(6) / 6),
                     0.5 * np.sin(np.pi / 6 + TWO_PI * np.arange(6) / 6), np.full(6, np.sqrt(0.75))]
        caps = np.concatenate([caps, caps * [1, 1, -1]])
        parts = [(np.concatenate([normals, caps]), np.r_[dist, np.full(12, hh * np.sqrt(0.75) + rng.uniform(0.1, 0.5))])]
    elif kind == "platelet":  # {111} nanoplate: hexagon to truncated triangle, thickness 0.25-0.55 of the width
        sides = np.where(np.arange(6) % 2 == 0, 1.0, rng.uniform(1.0, 1.7))
        parts = [_prism(6, sides, rng.uniform(0.25, 0.55))]
    else:
        raise OptionsError(f"unknown shape {kind!r}; choose from {ALL_SHAPES}")
    return [(np.asarray(n, np.float32), np.asarray(d, np.float32)) for n, d in parts]


def _scalars(a, like):
    """a as is for numpy work, as Python floats for torch tensors (numpy scalars slow torch down)."""
    return a if isinstance(like, np.ndarray) else np.asarray(a).tolist()


def _signed_distance(r, normals, dist, xp=np):
    """Max over facets of (n·r - d): negative inside the convex polyhedron (numpy or torch arrays)."""
    sd = None
    normals, dist = _scalars(normals, r), _scalars(dist, r)
    for n, d in zip(normals, dist):
        v = n[0] * r[0] + n[1] * r[1] + n[2] * r[2] - d
        sd = v if sd is None else xp.maximum(sd, v)
    return sd


def _union_distance(r, parts, xp=np):
    """Signed distance (approximate outside) of a union of convex parts: the min over parts."""
    sd = None
    for normals, dist in parts:
        v = _signed_distance(r, normals, dist, xp)
        sd = v if sd is None else xp.minimum(sd, v)
    return sd


def shape_geometry(rng: np.random.Generator, n: int, kind: str, oversampling: np.ndarray, ops=NUMPY) -> dict:
    """Random orientation and grid scale of one crystal: its rotated parts and voxels per crystal unit per axis.

    The paper's kinds are scaled per axis so that the extent along each axis is n/oversampling (anisotropic);
    rods, platelets, decahedra and twins keep their aspect ratio: the drawn oversampling is met on the most
    constraining axis and exceeded on the others. "oversampling" in the result is the one actually obtained.
    """
    if kind in SHAPES:
        parts = [_half_spaces(kind, rng)]
        half, m = 2.0, 48
    else:
        parts = _extra_parts(kind, rng)
        half, m = 4.0, 64
    rot = random_rotation(rng)
    parts = [(normals @ rot.T, dist) for normals, dist in parts]  # rotate the crystal by rotating its normals
    # Extent of the rotated polyhedron along each lab axis, from a coarse voxelisation.
    c = (np.arange(m, dtype=np.float32) - m // 2) * (2 * half / m)
    coarse = ops.asarray(np.stack(np.meshgrid(c, c, c, indexing="ij")))
    lo, hi = ops.nonzero_bounds(_union_distance(coarse, parts, ops.xp) <= 0)
    extent = np.array([c[h] - c[l] + 2 * half / m for l, h in zip(lo, hi)], dtype=np.float32)
    scale = (n / oversampling).astype(np.float32) / extent  # voxels per crystal unit, per axis
    if kind in _ISOTROPIC:
        scale = np.full(3, scale.min(), np.float32)
    return {"parts": parts, "scale": scale, "rot": rot, "oversampling": (n / (extent * scale)).astype(np.float32)
            if kind in _ISOTROPIC else np.asarray(oversampling, np.float32)}


def render_shape(geom: dict, n: int, edge: float, ops=NUMPY):
    """Soft-edged amplitude (0..1) of the crystal of `geom` on the n³ grid."""
    xp = ops.xp
    scale = geom["scale"]
    r = ops.grid(n) / ops.asarray(scale)[:, None, None, None]
    # Signed distance in crystal units -> voxels (approximately, along the mean scale) for a soft edge.
    sd = _union_distance(r, geom["parts"], xp) * float(scale.mean())
    return xp.clip(0.5 - sd / max(edge, 1e-3), 0.0, 1.0)


def crystal_shape(rng: np.random.Generator, n: int, kind: str, oversampling: np.ndarray,
                  edge: float) -> np.ndarray:
    """Soft-edged amplitude (0..1) of a randomly oriented crystal whose per-axis extent is n/oversampling."""
    return render_shape(shape_geometry(rng, n, kind, oversampling), n, edge).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Phase fields

def _normalised(f, support, target_range: float, ops=NUMPY):
    """Shift and scale a field so that its max-min inside the support equals target_range, min at 0."""
    lo, hi = ops.ptp(ops.values(f, support))
    out = (f - lo) * (target_range / max(hi - lo, 1e-12))
    return out.astype(np.float32) if isinstance(out, np.ndarray) else out


def _fill_to_range(fixed, smooth, support, target: float, ops=NUMPY):
    """fixed + a·smooth with a >= 0 chosen so that the range inside the support is target.

    `fixed` holds the quantised parts of a field (a dislocation's winding, a fault's phase jump) that may not be
    scaled; `smooth` (range 1) fills the rest. If the fixed part alone exceeds target, it is returned as is.
    """
    vf, vs = ops.values(fixed, support), ops.values(smooth, support)
    lo, hi = ops.ptp(vf)
    if hi - lo >= target:
        return fixed - lo
    a_lo, a_hi = 0.0, target + (hi - lo)  # ptp(fixed + a·smooth) >= a - ptp(fixed): a_hi overshoots
    for _ in range(40):  # ptp is convex in a, so the crossing is unique
        a = 0.5 * (a_lo + a_hi)
        lo_, hi_ = ops.ptp(vf + a * vs)
        a_lo, a_hi = (a, a_hi) if hi_ - lo_ < target else (a_lo, a)
    a = 0.5 * (a_lo + a_hi)
    lo_, _ = ops.ptp(vf + a * vs)
    return fixed + a * smooth - lo_


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _frame(xi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors completing xi to a right-handed orthonormal frame."""
    a = np.array([1.0, 0, 0]) if abs(xi[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = np.cross(xi, a)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(xi, e1)


def _dot(v, r):
    return float(v[0]) * r[0] + float(v[1]) * r[1] + float(v[2]) * r[2]


def _smooth_background(rng, r, lo, hi, size, ops, support):
    """A gentle two-Gaussian strain (range 1, ramp removed): the elastic background around a defect."""
    xp = ops.xp
    f = xp.zeros(r.shape[1:], np.float32)
    for _ in range(2):
        c0 = rng.uniform(lo, hi)
        w = rng.uniform(0.3, 0.8) * size
        d2 = (r[0] - float(c0[0])) ** 2 + (r[1] - float(c0[1])) ** 2 + (r[2] - float(c0[2])) ** 2
        f = f + rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * xp.exp(-d2 / (2 * w * w))
    return _normalised(ops.remove_ramp(f, support), support, 1.0, ops)


def _eshelby(r, centre, radius: float, direction, xp):
    """G·u of a misfitting sphere (Eshelby 1957) with G along `direction`: ĝ·r inside, ĝ·r a³/|r|³ outside."""
    d = [r[i] - float(centre[i]) for i in range(3)]
    rho = xp.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2] + 1e-6)
    proj = float(direction[0]) * d[0] + float(direction[1]) * d[1] + float(direction[2]) * d[2]
    return xp.where(rho < radius, proj, proj * (radius / rho) ** 3)


def _extra_field(rng, kind, r, support, target, geom, ops):
    """Phase fields of the wider families (see the module docstring); ranges as in phase_field."""
    xp = ops.xp
    n = r.shape[1]
    lo, hi = ops.bbox(support)
    lo, hi = lo - n // 2, hi - n // 2
    size = float(np.mean(hi - lo + 1))
    centre = lo + (hi - lo) * rng.uniform(0.3, 0.7, 3)  # a defect position well inside the crystal
    g = _unit(rng)  # direction of the measured Bragg vector in the lab frame
    if kind in ("screw_dislocation", "edge_dislocation"):
        xi = _unit(rng)  # line direction
        e1, e2 = _frame(xi)
        d = [r[i] - float(centre[i]) for i in range(3)]
        x, y = _dot(e1, d), _dot(e2, d)
        theta = xp.arctan2(y, x)
        n_wind = int(rng.choice([-1, 1])) * (2 if target >= 4.5 * np.pi and rng.random() < 0.5 else 1)
        rho2 = x * x + y * y + 1.0  # core radius of one voxel
        if kind == "screw_dislocation":  # u = b θ/2π along the line: G·u = (g·b) θ/2π, g·b = 2π n
            fixed, elastic = n_wind * theta, None
        else:  # Hirth & Lothe eq. 3-45, b along e1, glide-plane normal e2; ν of common metals
            nu = rng.uniform(0.28, 0.42)
            m = rng.uniform(-1.0, 1.0)  # G·e2 |b| / 2π: contrast from the displacement normal to the glide plane
            fixed = n_wind * theta
            elastic = (n_wind * (x * y) / (2 * (1 - nu) * rho2)
                       - m * ((1 - 2 * nu) / (4 * (1 - nu)) * xp.log(rho2) + (x * x - y * y) / (4 * (1 - nu) * rho2)))
        smooth = _smooth_background(rng, r, lo, hi, size, ops, support)
        if elastic is not None:
            fixed = fixed + ops.remove_ramp(elastic, support)
        return _fill_to_range(fixed, smooth, support, target, ops)
    if kind == "planar_fault":  # 1-2 parallel {111} stacking faults / twin boundaries, jump ±2π/3 each
        t = _FAMILIES["111"][rng.integers(8)] @ geom["rot"].T
        s = _dot(t, r)
        s_in = [float(t @ (lo + (hi - lo) * rng.uniform(0.25, 0.75, 3))) for _ in range(int(rng.integers(1, 3)))]
        fixed = None
        for s0 in s_in:
            step = (TWO_PI / 3) * int(rng.choice([-1, 1])) * (0.5 + 0.5 * xp.tanh((s - s0) / 0.5))
            fixed = step if fixed is None else fixed + step
        smooth = _smooth_background(rng, r, lo, hi, size, ops, support)
        return _fill_to_range(fixed, smooth, support, target, ops)
    if kind == "inclusion":  # 1-3 small misfitting inclusions (Eshelby)
        f = None
        for _ in range(int(rng.integers(1, 4))):
            c = lo + (hi - lo) * rng.uniform(0.2, 0.8, 3)
            v = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * _eshelby(r, c, rng.uniform(0.08, 0.2) * size, g, xp)
            f = v if f is None else f + v
    elif kind == "core_shell":  # a misfitting core of radius 0.25-0.4 of the crystal size, near the centre
        c = lo + (hi - lo) * rng.uniform(0.42, 0.58, 3)
        f = _eshelby(r, c, rng.uniform(0.25, 0.4) * size, g, xp)
    elif kind == "surface_relaxation":  # facet-dependent relaxation along each facet's normal, decaying inwards
        lam = rng.uniform(1.0, 4.0)  # decay depth in voxels
        scale = geom["scale"]
        rc = r / ops.asarray(scale)[:, None, None, None]
        best, val = None, None
        for normals, dist in geom["parts"]:
            eps = rng.choice([-1.0, 1.0], size=len(normals)) * rng.uniform(0.3, 1.0, len(normals))
            for k, (nk, dk) in enumerate(zip(normals, dist)):
                v = rc[0] * float(nk[0]) + rc[1] * float(nk[1]) + rc[2] * float(nk[2]) - float(dk)
                nlab = nk / scale
                nlab = nlab / np.linalg.norm(nlab)
                u = float(eps[k] * (g @ nlab))
                if best is None:
                    best, val = v, v * 0 + u
                else:
                    val = xp.where(v > best, u, val)
                    best = xp.maximum(best, v)
        depth = xp.clip(-best * float(scale.mean()), 0.0, None)
        # The relaxation is a skin of 0.5-2 rad (a few 0.1 % of strain over a few layers); a smooth bulk
        # field brings the range to the target, as in the dislocation families.
        skin = _normalised(ops.remove_ramp(val * xp.exp(-depth / lam), support), support,
                           min(rng.uniform(0.5, 2.0), target), ops)
        return _fill_to_range(skin, _smooth_background(rng, r, lo, hi, size, ops, support), support, target, ops)
    elif kind == "gradient":  # composition front along a direction (Vegard): ε = ε0 tanh(s/w), u = ε0 w ln cosh
        dvec = _unit(rng)
        w = rng.uniform(0.05, 0.8) * size
        s = (_dot(dvec, r) - float(dvec @ centre)) / w
        a = xp.abs(s)
        f = float(g @ dvec) * w * (a + xp.log(0.5 * (1 + xp.exp(-2 * a))))  # w ln cosh(s), overflow-free
        if abs(float(g @ dvec)) < 0.05:
            f = w * (a + xp.log(0.5 * (1 + xp.exp(-2 * a))))
    else:
        raise ValueError(f"unknown phase field {kind!r}")
    return _normalised(ops.remove_ramp(f, support), support, target, ops)


def phase_field(rng: np.random.Generator, kind: str, support, target_range: float, geom: dict | None = None,
                ops=NUMPY):
    """A strain phase of the given family, scaled to target_range (rad) inside the support.

    The dislocation and fault families hold a quantised part (winding 2π per turn around the line, jumps of
    2π/3); if target_range is smaller than that part, their range exceeds it (the result's phase_range says so).
    """
    xp = ops.xp
    n = support.shape[0]
    r = ops.grid(n)
    if kind in EXTRA_FIELDS:
        return _extra_field(rng, kind, r, support, target_range, geom, ops)
    lo, hi = ops.bbox(support)
    lo, hi = lo - n // 2, hi - n // 2
    size = float(np.mean(hi - lo + 1))
    if kind == "gaussians":
        f = xp.zeros(support.shape, np.float32)
        for _ in range(2):
            c0 = _scalars(rng.uniform(lo, hi).astype(np.float32), r)
            w = rng.uniform(0.2, 0.6) * size
            d2 = sum((r[i] - c0[i]) ** 2 for i in range(3))
            f += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * xp.exp(-d2 / (2 * w * w))
    elif kind == "cosines":
        f = xp.zeros(support.shape, np.float32)
        for _ in range(2):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            k = _scalars(TWO_PI / (rng.uniform(0.6, 2.5) * size) * direction, r)
            f += rng.uniform(0.5, 1.0) * xp.cos(k[0] * r[0] + k[1] * r[1] + k[2] * r[2] + rng.uniform(0, TWO_PI))
    elif kind == "grf":
        corr = rng.uniform(0.12, 0.35) * size
        f = ops.lowpass(ops.standard_normal(rng, support.shape), corr)
    else:
        raise OptionsError(f"unknown phase field {kind!r}; choose from {ALL_FIELDS}")
    return _normalised(ops.remove_ramp(f, support), support, target_range, ops)


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


# ---------------------------------------------------------------------------------------------------------
# Diffraction and detector

def diffraction(obj: np.ndarray) -> np.ndarray:
    """Unitary 3D FFT of a centred object, returned centred (zero frequency at n//2)."""
    if sfft is None:
        return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj), norm="ortho"))
    return sfft.fftshift(sfft.fftn(sfft.ifftshift(obj), norm="ortho", workers=-1))


def object_from_diffraction(amplitude: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Inverse of `diffraction`: the centred object whose unitary FFT is amplitude·exp(i·phase)."""
    psi = amplitude * np.exp(1j * phase)
    if sfft is None:
        return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(psi), norm="ortho")).astype(np.complex64)
    return sfft.fftshift(sfft.ifftn(sfft.ifftshift(psi), norm="ortho", workers=-1)).astype(np.complex64)


def detector_mask(rng: np.random.Generator, n: int, gap_probability: float, masked_fraction: float,
                  gap_count: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Masked voxels: optional gap bands (whole planes along a detector axis) and isolated bad voxels."""
    mask = np.zeros((n, n, n), bool)
    if rng.random() < gap_probability:
        count = gap_count[0] if gap_count[1] == gap_count[0] else int(rng.integers(gap_count[0], gap_count[1] + 1))
        for _ in range(count):
            width = int(rng.integers(3, 7))
            axis = int(rng.integers(1, 3))  # a detector row or column band, through every frame
            start = n // 2 + int(rng.integers(-n // 4, n // 4 - width))
            sl = [slice(None)] * 3
            sl[axis] = slice(start, start + width)
            mask[tuple(sl)] = True
    if masked_fraction > 0:
        mask |= rng.random((n, n, n)) < masked_fraction
    return mask


def draw_crystal(rng: np.random.Generator, params: SimParams, ops=NUMPY) -> dict:
    """The crystal of one sample: amplitude, phase field and support (on ops' arrays) and what was drawn."""
    n = params.size
    shape_kind = params.shapes[rng.integers(len(params.shapes))]
    field_kind = params.fields[rng.integers(len(params.fields))]
    os_ = rng.uniform(*params.oversampling, size=3)
    edge = rng.uniform(*params.edge_smoothing)
    geom = shape_geometry(rng, n, shape_kind, os_, ops)
    amp = render_shape(geom, n, edge, ops)
    if isinstance(amp, np.ndarray):
        amp = amp.astype(np.float32)
    shift = ops.com_shift(amp)
    amp = ops.roll(amp, shift)  # centre of mass at n//2; the facets move with it (n·(r - s)/scale <= d)
    geom = {**geom, "parts": [(nrm, (d + nrm @ (shift / geom["scale"])).astype(np.float32))
                              for nrm, d in geom["parts"]]}
    support = amp > 0.5
    target = rng.uniform(*params.phase_range)
    phi = phase_field(rng, field_kind, support, target, geom, ops)
    return {"amp": amp, "phi": phi, "support": support, "shape_kind": shape_kind, "field_kind": field_kind,
            "oversampling": geom["oversampling"], "target": target}


def simulate_sample(seed: int, params: SimParams = SimParams()) -> dict:
    """One simulated BCDI sample, deterministic per seed (see the module docstring for the contents)."""
    rng = np.random.default_rng(seed)
    n = params.size
    c = draw_crystal(rng, params)
    amp, phi, support = c["amp"], c["phi"], c["support"]
    obj = (amp * np.exp(1j * phi)).astype(np.complex64)

    psi = diffraction(obj)
    i_clean = (psi.real ** 2 + psi.imag ** 2).astype(np.float32)
    peak = float(np.exp(rng.uniform(np.log(params.peak_counts[0]), np.log(params.peak_counts[1]))))
    scale = peak / float(i_clean.max())
    i_clean *= scale
    obj *= np.float32(np.sqrt(scale))
    bg = float(rng.uniform(*params.background)) if params.background[1] > 0 else 0.0
    expected = i_clean + np.float32(bg) if bg > 0 else i_clean
    intensity = rng.poisson(expected).astype(np.float32) if params.noise else expected.copy()
    mask = detector_mask(rng, n, params.gap_probability, params.masked_fraction, params.gap_count)
    intensity[mask] = 0.0
    return {
        "intensity": intensity,
        "intensity_clean": i_clean,
        "mask": mask,
        "phase": np.angle(psi).astype(np.float32),
        "object": obj,
        "support": support,
        "phase_range": np.float32(np.ptp(phi[support])),
        "oversampling": np.asarray(c["oversampling"], np.float32),
        "peak_counts": np.float32(peak),
        "background": np.float32(bg),
        "shape_kind": np.str_(c["shape_kind"]),
        "field_kind": np.str_(c["field_kind"]),
        "seed": np.int64(seed),
    }
