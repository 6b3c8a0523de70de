"""PNG previews of a BCDI dataset and its reconstruction: three orthogonal central slices per quantity.

Intensity: log10 of the counts beside the reciprocal-space phase. Object: modulus beside the phase wrapped to
[0, 2π) on a cyclic colormap (so a 2π wrap is not shown as an edge). Each function returns an RGB uint8 array
(H, W, 3), which the Tiled publisher stores, and `save_png` writes it. Uses the Agg canvas directly (no pyplot
state), so it is safe in worker threads and needs no display.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from workers.io.formats import atomic_path

PHASE_CMAP = "twilight"
AXIS_NAMES = ("z", "y", "x")
_SLICE_LABELS = ("z = centre (y, x)", "y = centre (z, x)", "x = centre (z, y)")


def _new_figure(nrows: int, title: str | None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.5, 3.4 * nrows + (0.4 if title else 0)), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, 3, squeeze=False)
    if title:
        fig.suptitle(title)
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


def _row(fig, axes, slices, *, cmap, vmin, vmax, label):
    for ax, sl, name in zip(axes, slices, _SLICE_LABELS):
        im = ax.imshow(sl, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{label}: {name}", fontsize=9)
        ax.tick_params(labelsize=7)
    bar = fig.colorbar(im, ax=list(axes), shrink=0.85, pad=0.01)
    bar.ax.tick_params(labelsize=7)
    return bar


def _wrap(phase: np.ndarray) -> np.ndarray:
    return np.mod(phase, 2 * np.pi)


def _phase_bar(bar) -> None:
    bar.set_ticks([0, np.pi / 2, np.pi, 3 * np.pi / 2, 2 * np.pi])
    bar.set_ticklabels(["0", "π/2", "π", "3π/2", "2π"])


def intensity_preview(iobs: np.ndarray, phase: np.ndarray | None = None, mask: np.ndarray | None = None,
                      title: str | None = None) -> np.ndarray:
    """Central slices of log10(intensity) (masked voxels blank) and, if given, of the reciprocal phase; RGB uint8."""
    iobs = np.asarray(iobs, dtype=np.float32)
    logi = np.log10(np.maximum(iobs, 0) + 1.0)
    if mask is not None:
        logi = np.where(np.asarray(mask, bool), np.nan, logi)
    nrows = 2 if phase is not None else 1
    fig, axes = _new_figure(nrows, title)
    vmax = float(np.nanmax(logi)) if np.isfinite(logi).any() else 1.0
    _row(fig, axes[0], central_slices(logi), cmap="viridis", vmin=0.0, vmax=max(vmax, 1e-3),
         label="log10(I+1)")
    if phase is not None:
        ph = _wrap(np.asarray(phase, dtype=np.float32))
        if mask is not None:
            ph = np.where(np.asarray(mask, bool), np.nan, ph)
        bar = _row(fig, axes[1], central_slices(ph), cmap=PHASE_CMAP, vmin=0.0, vmax=2 * np.pi,
                   label="reciprocal phase")
        _phase_bar(bar)
    return figure_to_rgb(fig)


def support_box(support: np.ndarray, margin: int = 4) -> tuple[slice, ...]:
    """Bounding box of a support plus `margin` voxels, clipped to the array; the whole array if empty."""
    idx = np.nonzero(support)
    if len(idx[0]) == 0:
        return tuple(slice(0, n) for n in support.shape)
    return tuple(slice(max(int(i.min()) - margin, 0), min(int(i.max()) + margin + 1, n))
                 for i, n in zip(idx, support.shape))


def object_preview(obj: np.ndarray, support: np.ndarray | None = None, title: str | None = None,
                   margin: int = 4) -> np.ndarray:
    """Central slices (through the support's centre) of |obj| and of its phase wrapped to [0, 2π); RGB uint8.

    With a support the view is cropped to its bounding box (+margin) and the phase outside it is left blank.
    """
    obj = np.asarray(obj)
    if support is not None:
        support = np.asarray(support, bool)
        box = support_box(support, margin)
        obj, support = obj[box], support[box]
        centre = np.argwhere(support).mean(axis=0) if support.any() else None
    else:
        centre = None
    amp = np.abs(obj)
    ph = _wrap(np.angle(obj))
    if support is not None:
        ph = np.where(support, ph, np.nan)
    fig, axes = _new_figure(2, title)
    _row(fig, axes[0], central_slices(amp, centre), cmap="gray", vmin=0.0, vmax=float(amp.max()) or 1.0,
         label="|object|")
    bar = _row(fig, axes[1], central_slices(ph, centre), cmap=PHASE_CMAP, vmin=0.0, vmax=2 * np.pi,
               label="phase (rad)")
    _phase_bar(bar)
    return figure_to_rgb(fig)


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
                    title: str | None = None) -> dict[str, np.ndarray]:
    """RGB uint8 previews: 'intensity' (log I + reciprocal phase of obj) if iobs is given, 'object' if obj is."""
    images: dict[str, np.ndarray] = {}
    if iobs is not None:
        phase = reciprocal_phase(obj) if obj is not None else None
        images["intensity"] = intensity_preview(iobs, phase, mask, title=title)
    if obj is not None:
        images["object"] = object_preview(obj, support, title=title)
    return images


def write_previews(directory: str | os.PathLike, *, iobs: np.ndarray | None = None, obj: np.ndarray | None = None,
                   support: np.ndarray | None = None, mask: np.ndarray | None = None,
                   stem: str = "", title: str | None = None) -> dict[str, Path]:
    """Write [stem_]intensity.png and [stem_]object.png (see render_previews) into `directory`; name -> path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    prefix = f"{stem}_" if stem else ""
    images = render_previews(iobs=iobs, obj=obj, support=support, mask=mask, title=title)
    return {name: save_png(rgb, d / f"{prefix}{name}.png") for name, rgb in images.items()}
