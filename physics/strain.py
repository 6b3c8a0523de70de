"""Displacement and heterogeneous strain from a reconstructed BCDI object, in the detector and an orthogonal lab frame.

Pure numpy/scipy/scikit-image, no I/O. Lengths in nm, reciprocal lengths in 1/nm, angles in degrees.

Geometry convention (ID01 vertical diffractometer, our own statement):
- Lab frame (x, y, z): x along the incident beam (downstream), z vertical up, y = z × x (horizontal).
- Detector arm: ``nu`` rotates about -z (outer circle), ``delta`` about -y (inner circle, tilts the arm up); the
  outgoing direction is f = (cos δ cos ν, -cos δ sin ν, sin δ). Detector rows grow downward (-z at δ=ν=0),
  columns along +y at δ=ν=0; both turn with the arm (detector perpendicular to f).
- Sample circles: ``mu`` about -z, ``eta`` about -y, ``phi`` (mounted on eta) about -z at eta = 0.
  These are the ID01 circles as xrayutilities writes them (sample 'z-','y-','z-', detector 'z-','y-', beam x,
  detector pixels 'z-','y+'); ``tests/test_strain.py`` checks G and the three q steps against xrayutilities 1.8.0.
- Vectors are in the lab frame with the sample at the scan's reference angles (the rocking curve's middle).
- G = k_f - k_i with |k| = 2π/λ. A rocking step Δω about axis â moves the crystal-frame q by -Δω (â × G).
- FFT convention: the object is the inverse FFT of the diffracted amplitude; we take φ = G·u, so u = φ/|G| along Ĝ
  (other codes use the opposite sign; flip the phase to compare).
The detector-frame strain is exact for this linearised geometry: the phase gradient in index space is mapped to lab
space with the real-space basis of the detector grid (no interpolation); ``to_lab_frame`` then resamples any map on an
orthogonal grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from physics.errors import InputError
from physics.phase import phase_ramp, ramp_plane, wrap_phase

HC_EV_NM = 1239.8419843320026  # h·c in eV·nm

__all__ = [
    "Geometry",
    "wavelength_nm",
    "remove_phase_ramp",
    "offset_phase",
    "unwrap_in_support",
    "wrapped_gradient",
    "displacement_and_strain",
    "to_lab_frame",
]


def wavelength_nm(energy_eV: float) -> float:
    """X-ray wavelength in nm from the photon energy in eV."""
    if not energy_eV or energy_eV <= 0:
        raise InputError(f"photon energy must be positive, got {energy_eV!r} eV")
    return HC_EV_NM / float(energy_eV)


def _rot(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Right-handed rotation matrix about a unit axis (Rodrigues)."""
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)


@dataclass
class Geometry:
    """Scan geometry needed to turn phase into displacement/strain and to map detector voxels to lab space."""

    energy_eV: float
    delta_deg: float
    nu_deg: float = 0.0
    distance_m: float | None = None
    pixel_size_m: tuple[float, float] | None = None  # (row, column) after binning
    rocking_motor: str | None = "eta"
    rocking_step_deg: float | None = None  # after binning along the rocking axis
    eta_deg: float = 0.0
    phi_deg: float = 0.0
    mu_deg: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], binning=(1, 1, 1)) -> "Geometry":
        """Build from the metadata dict of workers.io.id01 (keys energy_eV, delta_deg, ...), scaled by binning."""
        if not meta.get("energy_eV") or meta.get("delta_deg") is None:
            raise InputError("geometry needs energy_eV and delta_deg in the scan metadata")
        b = tuple(int(x) for x in binning)
        pix = None
        if meta.get("pixel_size_y_m") and meta.get("pixel_size_x_m"):
            pix = (meta["pixel_size_y_m"] * b[1], meta["pixel_size_x_m"] * b[2])
        step = meta.get("rocking_step_deg")
        return cls(energy_eV=float(meta["energy_eV"]), delta_deg=float(meta["delta_deg"]),
                   nu_deg=float(meta.get("nu_deg") or 0.0), distance_m=meta.get("distance_m"), pixel_size_m=pix,
                   rocking_motor=meta.get("rocking_motor"), rocking_step_deg=None if step is None else step * b[0],
                   eta_deg=float(meta.get("eta_deg") or 0.0), phi_deg=float(meta.get("phi_deg") or 0.0),
                   mu_deg=float(meta.get("mu_deg") or 0.0))

    @property
    def k(self) -> float:
        """Wavenumber 2π/λ in 1/nm."""
        return 2 * np.pi / wavelength_nm(self.energy_eV)

    def outgoing(self) -> np.ndarray:
        """Unit vector of the diffracted beam (towards the detector centre)."""
        d, n = np.radians(self.delta_deg), np.radians(self.nu_deg)
        return np.array([np.cos(d) * np.cos(n), -np.cos(d) * np.sin(n), np.sin(d)])

    def q_bragg(self) -> np.ndarray:
        """Scattering vector G = k_f - k_i at the detector centre, lab frame, 1/nm."""
        return self.k * (self.outgoing() - np.array([1.0, 0.0, 0.0]))

    def detector_axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors of increasing detector row and column index, lab frame."""
        rz = _rot([0, 0, -1], np.radians(self.nu_deg))
        ry = _rot([0, 1, 0], -np.radians(self.delta_deg))
        m = rz @ ry
        return m @ np.array([0.0, 0.0, -1.0]), m @ np.array([0.0, 1.0, 0.0])

    def rocking_axis(self) -> np.ndarray:
        """Unit rotation axis of the rocking motor, lab frame."""
        eta = np.radians(self.eta_deg)
        axes = {"eta": np.array([0.0, -1.0, 0.0]), "mu": np.array([0.0, 0.0, -1.0]),
                "phi": _rot([0, -1, 0], eta) @ np.array([0.0, 0.0, -1.0])}
        if self.rocking_motor not in axes:
            raise InputError(f"unsupported rocking motor {self.rocking_motor!r} (use eta, phi or mu)")
        return axes[self.rocking_motor]

    def reciprocal_basis(self) -> np.ndarray:
        """3x3 matrix whose columns are the q steps (1/nm) of one voxel along (rocking, row, column)."""
        if not self.distance_m or not self.pixel_size_m or not self.rocking_step_deg:
            raise InputError("the detector-frame basis needs distance_m, pixel sizes and rocking_step_deg")
        row, col = self.detector_axes()
        a1 = -np.radians(self.rocking_step_deg) * np.cross(self.rocking_axis(), self.q_bragg())
        a2 = self.k * self.pixel_size_m[0] / self.distance_m * row
        a3 = self.k * self.pixel_size_m[1] / self.distance_m * col
        return np.stack([a1, a2, a3], axis=1)

    def real_space_basis(self, shape) -> np.ndarray:
        """3x3 matrix whose columns are the lab vectors (nm) of one real-space voxel step along each array axis."""
        b = self.reciprocal_basis()
        if abs(np.linalg.det(b)) < 1e-30:
            raise InputError("degenerate geometry: the rocking step is parallel to the detector plane")
        return 2 * np.pi * np.linalg.inv(b).T @ np.diag(1.0 / np.asarray(shape, dtype=float))


def wrapped_gradient(phase: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Index-space phase gradient (3, ...) from wrapped differences, one-sided at the support border, 0 outside.

    Differences are wrapped to [-π, π) before averaging, so a 2π jump in the phase gives no spike. A support voxel
    with no support neighbour along an axis (a one-voxel-thin tip) takes the mean of its neighbours that have one.
    """
    phase = np.asarray(phase, dtype=np.float64)
    support = np.asarray(support, dtype=bool)
    grads = np.zeros((phase.ndim,) + phase.shape)
    for axis in range(phase.ndim):
        fwd = wrap_phase(np.roll(phase, -1, axis) - phase)
        bwd = wrap_phase(phase - np.roll(phase, 1, axis))
        s_next = np.roll(support, -1, axis)
        s_prev = np.roll(support, 1, axis)
        edge = [slice(None)] * phase.ndim
        edge[axis] = -1
        s_next[tuple(edge)] = False  # no wrap-around neighbours at the array edges
        edge[axis] = 0
        s_prev[tuple(edge)] = False
        vf = support & s_next
        vb = support & s_prev
        count = vf.astype(float) + vb
        total = np.where(vf, fwd, 0.0) + np.where(vb, bwd, 0.0)
        g = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        lonely = support & (count == 0)
        if lonely.any():  # mean of the valid gradients in the 3x3x3 neighbourhood
            valid = (count > 0).astype(np.float64)
            num = ndimage.uniform_filter(g * valid, size=3, mode="constant")
            den = ndimage.uniform_filter(valid, size=3, mode="constant")
            g = np.where(lonely, np.where(den > 1e-9, num / np.maximum(den, 1e-9), 0.0), g)
        grads[axis] = np.where(support, g, 0.0)
    return grads


def remove_phase_ramp(phase: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove the linear phase ramp (a shift of the Bragg peak off the array centre) inside the support.

    The ramp is physics.phase.phase_ramp (circular mean increment inside the support, so wraps do not bias it).
    Returns (phase wrapped to [-π, π), ramp in rad/voxel per axis).
    """
    ramp = phase_ramp(phase, support)
    return wrap_phase(np.asarray(phase) - ramp_plane(ramp, np.shape(phase))), ramp


def offset_phase(phase: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Shift a wrapped phase so that its circular mean inside the support is 0 (result in [-π, π))."""
    support = np.asarray(support, dtype=bool)
    offset = np.angle(np.exp(1j * np.asarray(phase)[support]).sum())
    return wrap_phase(np.asarray(phase) - offset)


def unwrap_in_support(phase: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Unwrapped phase inside the support (scikit-image's 3D unwrapper), mean 0 inside, 0 outside."""
    from skimage.restoration import unwrap_phase

    support = np.asarray(support, dtype=bool)
    masked = np.ma.masked_array(np.asarray(phase, dtype=np.float64), mask=~support)
    unwrapped = unwrap_phase(masked)
    out = np.where(support, np.ma.getdata(unwrapped), 0.0)
    out[support] -= out[support].mean()
    return out


def displacement_and_strain(obj: np.ndarray, support: np.ndarray, geometry: Geometry | None = None,
                            voxel_size_nm=(1.0, 1.0, 1.0), g_axis: int = 0, g_norm: float | None = None,
                            remove_ramp: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Phase (ramp and offset removed), displacement along G and heterogeneous strain along G, detector frame.

    With ``geometry`` (energy, angles, distance, pixels, rocking step) the gradient is taken along Ĝ in lab space
    through the detector grid's real-space basis. Without it, the grid is treated as orthogonal with
    ``voxel_size_nm`` and G along array axis ``g_axis`` with norm ``g_norm`` (1/nm; displacement in rad then if
    None). ``remove_ramp=False`` keeps the linear phase (a uniform strain is indistinguishable from a peak offset,
    so only heterogeneous strain is meaningful after ramp removal). Returns (arrays, metadata with units).
    """
    obj = np.asarray(obj)
    support = np.asarray(support, dtype=bool)
    if obj.shape != support.shape:
        raise InputError(f"object shape {obj.shape} differs from support shape {support.shape}")
    if obj.ndim != 3:
        raise InputError(f"object must be 3D, got shape {obj.shape}")
    if not support.any():
        raise InputError("support is empty: no phase to process")
    full_shape = obj.shape
    idx = np.nonzero(support)  # work on the support's bounding box (+2 voxels): the crystal is a small part
    box = tuple(slice(max(int(i.min()) - 2, 0), min(int(i.max()) + 3, n)) for i, n in zip(idx, full_shape))
    obj, support = obj[box], support[box]
    if remove_ramp:
        phase, ramp = remove_phase_ramp(np.angle(obj), support)
    else:
        phase, ramp = np.angle(obj).astype(np.float64), np.zeros(3)
    phase = offset_phase(phase, support)
    grads = wrapped_gradient(phase, support)  # rad per index step
    meta: dict[str, Any] = {"phase_ramp_rad_per_voxel": [float(r) for r in ramp], "frame": "detector",
                            "phase_units": "rad", "strain_units": "1 (dimensionless, along G)",
                            "phase_convention": "phi = G.u, object = inverse FFT of the amplitude"}
    if geometry is not None:
        g_vec = geometry.q_bragg()
        basis = geometry.real_space_basis(full_shape)
        inv_t = np.linalg.inv(basis).T  # index gradient -> lab gradient (rad/nm)
        lab_grad = np.tensordot(inv_t, grads, axes=([1], [0]))
        g_hat = g_vec / np.linalg.norm(g_vec)
        dphi_ds = np.tensordot(g_hat, lab_grad, axes=([0], [0]))
        gn = float(np.linalg.norm(g_vec))
        meta.update(G_lab_inv_nm=[float(x) for x in g_vec], G_norm_inv_nm=gn, d_spacing_nm=2 * np.pi / gn,
                    real_space_basis_nm=basis.tolist(),
                    voxel_size_nm=[float(np.linalg.norm(basis[:, i])) for i in range(3)],
                    geometry_convention="lab x downstream, z up; nu about -z, delta about -y, eta about -y, "
                                        "phi about -z; rows down, columns +y at delta=nu=0 (xrayutilities ID01)")
    else:
        voxel = np.asarray(voxel_size_nm, dtype=float)
        dphi_ds = grads[g_axis] / voxel[g_axis]
        gn = g_norm
        meta.update(G_axis=int(g_axis), voxel_size_nm=[float(v) for v in voxel], G_norm_inv_nm=g_norm)
    unwrapped = unwrap_in_support(phase, support)
    arrays = {"phase": unwrapped.astype(np.float32),
              "phase_wrapped": wrap_phase(np.where(support, phase, 0.0), lower=0.0).astype(np.float32)}
    if gn:
        arrays["displacement"] = np.where(support, unwrapped / gn, 0.0).astype(np.float32)
        arrays["strain"] = np.where(support, dphi_ds / gn, 0.0).astype(np.float32)
        meta["displacement_units"] = "nm (along G)"
    else:
        arrays["displacement"] = arrays["phase"].copy()
        arrays["strain"] = np.where(support, dphi_ds, 0.0).astype(np.float32)
        meta["displacement_units"] = "rad (|G| unknown)"
        meta["strain_units"] = "rad/nm (phase gradient; |G| unknown)"
    for key, value in arrays.items():  # back onto the full grid, 0 outside the box
        full = np.zeros(full_shape, dtype=value.dtype)
        full[box] = value
        arrays[key] = full
    return arrays, meta


def to_lab_frame(volume: np.ndarray, basis: np.ndarray, voxel_size_nm: float | None = None, shape=None,
                 order: int = 1) -> tuple[np.ndarray, dict[str, Any]]:
    """Resample a detector-frame map on an orthogonal lab grid (array axes = lab x, y, z), centred on the same point.

    ``basis``: real-space basis (Geometry.real_space_basis). Complex maps are interpolated as real and imaginary
    parts, bool maps with nearest neighbour. Points outside the detector box are 0. Returns (map, metadata).
    """
    volume = np.asarray(volume)
    shape = tuple(volume.shape if shape is None else shape)
    if voxel_size_nm is None:
        voxel_size_nm = float(min(np.linalg.norm(basis[:, i]) for i in range(3)))
    grids = np.meshgrid(*[(np.arange(n) - n // 2) * voxel_size_nm for n in shape], indexing="ij")
    r = np.stack([g.ravel() for g in grids])  # lab points (3, M)
    v = np.linalg.solve(basis, r) + (np.asarray(volume.shape) // 2)[:, None]  # detector-frame indices

    def sample(a, o):
        return ndimage.map_coordinates(a, v, order=o, mode="constant", cval=0.0).reshape(shape)

    if volume.dtype == bool:
        out = sample(volume.astype(np.float32), 0) > 0.5
    elif np.iscomplexobj(volume):
        out = (sample(volume.real.astype(np.float64), order) + 1j * sample(volume.imag.astype(np.float64), order))
        out = out.astype(np.complex64)
    else:
        out = sample(volume.astype(np.float64), order).astype(np.float32)
    meta = {"frame": "lab", "lab_axes": ["x_downstream", "y_horizontal", "z_up"],
            "voxel_size_nm": [float(voxel_size_nm)] * 3}
    return out, meta
