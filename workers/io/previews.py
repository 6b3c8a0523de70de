"""PNG previews of a BCDI dataset and its reconstruction: three orthogonal central slices per quantity.

Axes are in physical units where the geometry is known (nm for the object, Å⁻¹ for reciprocal space, from the
ID01 energy, detector distance, pixel size and rocking step; see `preview_geometry`), in pixels otherwise. Every
colour bar names its quantity and unit: log10 counts, phase (rad, wrapped to [0, 2π) on a cyclic colormap so a 2π
wrap is not an edge), |ρ| (a.u.), strain (%). Each function returns an RGB uint8 array (H, W, 3), which the Tiled
publisher stores, and `save_png` writes it. Uses the Agg canvas directly (no pyplot state), so it is safe in worker
threads and needs no display.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from physics.phase import wrap_phase

from workers.io.formats import atomic_path

PHASE_CMAP = "twilight"
AXIS_NAMES = ("z", "y", "x")
# (slice name, (vertical axis, horizontal axis)) of the three central slices
_SLICES = (("z", (1, 2)), ("y", (0, 2)), ("x", (0, 1)))
_AXIS_LONG = ("z (rocking)", "y (det. row)", "x (det. col.)")

__all__ = ["preview_geometry", "make_previews", "intensity_preview", "object_preview", "strain_preview",
           "render_previews", "write_previews", "save_png", "figure_to_rgb", "central_slices", "support_box",
           "reciprocal_phase"]


# --------------------------------------------------------------------------------------------------------------------
# geometry: voxel sizes and q steps of the arrays' grid

def preview_geometry(scan_meta: dict[str, Any] | None, shape, binning=(1, 1, 1)) -> dict[str, Any] | None:
    """Step lengths of one voxel along each array axis for the previews, or None when the geometry is incomplete.

    From the ID01 scan metadata (energy_eV, delta_deg, distance_m, pixel sizes, rocking_step_deg; physics.strain):
    {"shape": shape, "voxel_nm": [3 floats], "q_step_inv_A": [3 floats]} for a grid of ``shape`` (the crop grid).
    The detector frame is not orthogonal: each value is the length of the step along that array axis.
    """
    if not scan_meta:
        return None
    from physics.errors import InputError
    from physics.strain import Geometry

    try:
        geo = Geometry.from_metadata(scan_meta, binning)
        rec = geo.reciprocal_basis()  # 1/nm per voxel step
        real = geo.real_space_basis(tuple(shape))  # nm per voxel step
    except (InputError, ValueError, TypeError, np.linalg.LinAlgError):
        return None
    return {"shape": [int(n) for n in shape],
            "voxel_nm": [float(np.linalg.norm(real[:, i])) for i in range(3)],
            "q_step_inv_A": [0.1 * float(np.linalg.norm(rec[:, i])) for i in range(3)]}


def _axis_steps(geometry: dict | None, shape, space: str) -> tuple[list[float], str]:
    """(step per voxel along each axis, unit) for a grid of ``shape``; pixels when the geometry is unknown.

    Reciprocal space: a grid resized from the geometry's grid keeps its q range, so the q step scales by N/M.
    Real space: the voxel size of an object on the geometry's grid (crops of it keep the voxel size).
    """
    if geometry:
        if space == "reciprocal" and geometry.get("q_step_inv_A"):
            ref = geometry.get("shape") or shape
            return [float(q) * n / m for q, n, m in zip(geometry["q_step_inv_A"], ref, shape)], "Å⁻¹"
        if space == "real" and geometry.get("voxel_nm"):
            return [float(v) for v in geometry["voxel_nm"]], "nm"
    return [1.0, 1.0, 1.0], "pixels"


# --------------------------------------------------------------------------------------------------------------------
# figure helpers

def _new_figure(nrows: int, title: str | None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.5, 3.9 * nrows + (0.45 if title else 0)), dpi=80, layout="constrained")
    fig.get_layout_engine().set(h_pad=0.08, hspace=0.06, w_pad=0.05)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, 3, squeeze=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig, axes


def figure_to_rgb(fig) -> np.ndarray:
    """Render a matplotlib Figure to an (H, W, 3) uint8 RGB array."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)


def central_slices(vol: np.ndarray, centre=None) -> list[np.ndarray]:
    """The three orthogonal slices of a 3D array through `centre` (default: the array centre n//2)."""
    c = [n // 2 for n in vol.shape] if centre is None else [int(round(x)) for x in centre]
    return [vol[c[0], :, :], vol[:, c[1], :], vol[:, :, c[2]]]


def _extent(n: int, step: float, origin: float) -> tuple[float, float]:
    """Edges of n voxels of size step, voxel index `origin` at 0."""
    return (-origin - 0.5) * step, (n - origin - 0.5) * step


def _row(fig, axes, vol, *, cmap, vmin, vmax, quantity, bar_label, steps, unit, centre=None, origin=None):
    """One row of three central slices of `vol` with physical axes and one labelled colour bar."""
    from matplotlib.ticker import MaxNLocator

    c = [n // 2 for n in vol.shape] if centre is None else [int(round(x)) for x in centre]
    o = c if origin is None else origin
    im = None
    for ax, sl, (name, (va, ha)) in zip(axes, central_slices(vol, c), _SLICES):
        x0, x1 = _extent(vol.shape[ha], steps[ha], o[ha])
        y0, y1 = _extent(vol.shape[va], steps[va], o[va])
        im = ax.imshow(sl, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest",
                       extent=(x0, x1, y0, y1), aspect="equal")
        ax.set_title(f"{quantity}, {name} = centre", fontsize=9)
        ax.set_xlabel(f"{_AXIS_LONG[ha]} ({unit})", fontsize=8)
        ax.set_ylabel(f"{_AXIS_LONG[va]} ({unit})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(4))  # long Å⁻¹ tick labels must not run into each other
        ax.yaxis.set_major_locator(MaxNLocator(5))
    bar = fig.colorbar(im, ax=list(axes), shrink=0.9, pad=0.015)
    bar.set_label(bar_label, fontsize=9)
    bar.ax.tick_params(labelsize=7)
    return bar


def _phase_bar(bar) -> None:
    bar.set_ticks([0, np.pi / 2, np.pi, 3 * np.pi / 2, 2 * np.pi])
    bar.set_ticklabels(["0", "π/2", "π", "3π/2", "2π"])


def _phase_row(fig, axes, phase, *, quantity, steps, unit, centre=None, origin=None):
    bar = _row(fig, axes, wrap_phase(phase, lower=0.0), cmap=PHASE_CMAP, vmin=0.0, vmax=2 * np.pi, quantity=quantity,
               bar_label="phase (rad, wrapped to [0, 2π))", steps=steps, unit=unit, centre=centre, origin=origin)
    _phase_bar(bar)


def _log_row(fig, axes, log_i, *, steps, unit):
    finite = np.isfinite(log_i)
    vmax = float(np.nanmax(log_i)) if finite.any() else 1.0
    _row(fig, axes, log_i, cmap="viridis", vmin=0.0, vmax=max(vmax, 1e-3), quantity="intensity",
         bar_label="log10(counts + 1)", steps=steps, unit=unit)


def support_box(support: np.ndarray, margin: int = 4) -> tuple[slice, ...]:
    """Bounding box of a support plus `margin` voxels, clipped to the array; the whole array if empty."""
    idx = np.nonzero(support)
    if len(idx[0]) == 0:
        return tuple(slice(0, n) for n in support.shape)
    return tuple(slice(max(int(i.min()) - margin, 0), min(int(i.max()) + margin + 1, n))
                 for i, n in zip(idx, support.shape))


def _crop_to_support(support, margin, *vols):
    """(cropped vols, cropped support, slice centre, axis origin in the crop) — origin: the full array's centre."""
    full = support.shape
    box = support_box(support, margin)
    sup = support[box]
    centre = np.argwhere(sup).mean(axis=0) if sup.any() else None
    origin = [n // 2 - b.start for n, b in zip(full, box)]  # 0 on the axes = the array centre, as in the data
    return [v[box] for v in vols], sup, centre, origin


# --------------------------------------------------------------------------------------------------------------------
# the previews

def intensity_preview(iobs: np.ndarray, phase: np.ndarray | None = None, mask: np.ndarray | None = None,
                      title: str | None = None, geometry: dict | None = None, *, log10: bool = False,
                      phase_label: str = "reciprocal phase") -> np.ndarray:
    """Central slices of log10(counts + 1) (masked voxels blank) and, if given, of a reciprocal phase; RGB uint8.

    ``log10=True``: ``iobs`` already holds log10(counts + 1) (as the Tiled result stores it). The phase may be on
    another grid (the CNN's 64³): each row gets its own q axes from ``geometry`` (see preview_geometry).
    """
    iobs = np.asarray(iobs, dtype=np.float32)
    logi = iobs if log10 else np.log10(np.maximum(iobs, 0) + 1.0)
    if mask is not None:
        logi = np.where(np.asarray(mask, bool), np.nan, logi)
    nrows = 2 if phase is not None else 1
    fig, axes = _new_figure(nrows, title)
    steps, unit = _axis_steps(geometry, logi.shape, "reciprocal")
    _log_row(fig, axes[0], logi, steps=steps, unit=unit)
    if phase is not None:
        ph = np.asarray(phase, dtype=np.float32)
        if mask is not None and np.shape(mask) == ph.shape:
            ph = np.where(np.asarray(mask, bool), np.nan, ph)
        steps, unit = _axis_steps(geometry, ph.shape, "reciprocal")
        _phase_row(fig, axes[1], ph, quantity=phase_label + (f" ({ph.shape[0]}³ grid)" if ph.shape != logi.shape
                                                             else ""), steps=steps, unit=unit)
    return figure_to_rgb(fig)


def object_preview(obj: np.ndarray | None = None, support: np.ndarray | None = None, title: str | None = None,
                   margin: int = 4, geometry: dict | None = None, *, amplitude: np.ndarray | None = None,
                   phase: np.ndarray | None = None) -> np.ndarray:
    """Central slices (through the support's centre) of |ρ| and of the phase wrapped to [0, 2π); RGB uint8.

    Give the complex ``obj``, or ``amplitude`` and ``phase`` (e.g. the unwrapped, ramp-removed phase of a result).
    With a support the view is cropped to its bounding box (+margin) and the phase outside it is left blank.
    """
    if obj is not None:
        obj = np.asarray(obj)
        amp, ph = np.abs(obj), np.angle(obj)
    else:
        amp, ph = np.asarray(amplitude, dtype=np.float32), np.asarray(phase, dtype=np.float32)
    centre = origin = None
    if support is not None:
        support = np.asarray(support, bool)
        (amp, ph), support, centre, origin = _crop_to_support(support, margin, amp, ph)
        ph = np.where(support, ph, np.nan)
    steps, unit = _axis_steps(geometry, amp.shape, "real")
    fig, axes = _new_figure(2, title)
    _row(fig, axes[0], amp, cmap="gray", vmin=0.0, vmax=float(np.nanmax(amp)) or 1.0, quantity="|ρ|",
         bar_label="|ρ| (a.u.)", steps=steps, unit=unit, centre=centre, origin=origin)
    _phase_row(fig, axes[1], ph, quantity="phase", steps=steps, unit=unit, centre=centre, origin=origin)
    return figure_to_rgb(fig)


def strain_preview(strain: np.ndarray, support: np.ndarray, title: str | None = None, geometry: dict | None = None,
                   margin: int = 4) -> np.ndarray:
    """Central slices of the strain along G (diverging colormap, symmetric 99th-percentile range); RGB uint8.

    With the geometry the strain is dimensionless and shown in %; without it, it is the phase gradient along the
    rocking axis in rad/voxel (physics.strain without a geometry).
    """
    support = np.asarray(support, bool)
    (s,), sup, centre, origin = _crop_to_support(support, margin, np.asarray(strain, dtype=np.float64))
    known = bool(geometry and geometry.get("voxel_nm"))
    vals = np.where(sup, s * 100.0 if known else s, np.nan)
    lim = float(np.nanpercentile(np.abs(vals), 99)) if np.isfinite(vals).any() else 1.0
    lim = lim or 1e-6
    steps, unit = _axis_steps(geometry, vals.shape, "real")
    fig, axes = _new_figure(1, title)
    _row(fig, axes[0], vals, cmap="coolwarm", vmin=-lim, vmax=lim, quantity="strain",
         bar_label="strain along G (%)" if known else "phase gradient along z (rad/voxel)", steps=steps, unit=unit,
         centre=centre, origin=origin)
    return figure_to_rgb(fig)


def make_previews(arrays: dict[str, np.ndarray], geometry: dict | None = None,
                  title: str | None = None) -> dict[str, np.ndarray]:
    """The Tiled result's previews from its arrays as they are (no resampling, no undoing of logs); RGB uint8.

    ``arrays``: support (or shape, the crystal's, which is preferred: phase and strain are drawn inside it),
    amplitude and phase (or object), strain, intensity_crop (log10(counts + 1), crop grid)
    and reciprocal_phase_predicted (the CNN's 64³ phase). ``geometry``: see preview_geometry (None: pixel axes).
    Returns preview_object, preview_strain (when strain is given) and preview_reciprocal (when the intensity is).
    """
    support = np.asarray(arrays["shape"] if "shape" in arrays else arrays["support"], dtype=bool)
    out: dict[str, np.ndarray] = {}
    if "amplitude" in arrays and "phase" in arrays:
        out["preview_object"] = object_preview(None, support, title=title, geometry=geometry,
                                               amplitude=arrays["amplitude"], phase=arrays["phase"])
    else:
        out["preview_object"] = object_preview(arrays["object"], support, title=title, geometry=geometry)
    if "strain" in arrays:
        out["preview_strain"] = strain_preview(arrays["strain"], support, title=title, geometry=geometry)
    if "intensity_crop" in arrays:
        out["preview_reciprocal"] = intensity_preview(arrays["intensity_crop"],
                                                      arrays.get("reciprocal_phase_predicted"), None, title=title,
                                                      geometry=geometry, log10=True,
                                                      phase_label="CNN reciprocal phase")
    return out


def save_png(rgb: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an (H, W, 3) uint8 array as a PNG, atomically (temp file + rename)."""
    from matplotlib import image as mpimg

    out = Path(path)
    with atomic_path(out) as tmp:
        mpimg.imsave(tmp, np.asarray(rgb, dtype=np.uint8), format="png")
    return out


def reciprocal_phase(obj: np.ndarray) -> np.ndarray:
    """Phase of the unitary FFT of a centred object (the reciprocal-space phase the data lost)."""
    f = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj), norm="ortho"))
    return np.angle(f).astype(np.float32)


def render_previews(*, iobs: np.ndarray | None = None, obj: np.ndarray | None = None,
                    support: np.ndarray | None = None, mask: np.ndarray | None = None,
                    title: str | None = None, geometry: dict | None = None) -> dict[str, np.ndarray]:
    """RGB uint8 previews: 'intensity' (log I + reciprocal phase of obj) if iobs is given, 'object' if obj is."""
    images: dict[str, np.ndarray] = {}
    if iobs is not None:
        phase = reciprocal_phase(obj) if obj is not None else None
        images["intensity"] = intensity_preview(iobs, phase, mask, title=title, geometry=geometry)
    if obj is not None:
        images["object"] = object_preview(obj, support, title=title, geometry=geometry)
    return images


def write_previews(directory: str | os.PathLike, *, iobs: np.ndarray | None = None, obj: np.ndarray | None = None,
                   support: np.ndarray | None = None, mask: np.ndarray | None = None,
                   stem: str = "", title: str | None = None, geometry: dict | None = None) -> dict[str, Path]:
    """Write [stem_]intensity.png and [stem_]object.png (see render_previews) into `directory`; name -> path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    prefix = f"{stem}_" if stem else ""
    images = render_previews(iobs=iobs, obj=obj, support=support, mask=mask, title=title, geometry=geometry)
    return {name: save_png(rgb, d / f"{prefix}{name}.png") for name, rgb in images.items()}
