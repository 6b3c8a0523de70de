"""The reconstruction pipeline of Masto et al. (2025): crop -> 64³ -> CNN phase -> iFFT -> border-restricted ER.

`reconstruct` works on arrays (no I/O) and returns everything a writer needs (CXI file, Tiled container):
the refined object on the crop grid, its support, the CNN's 64³ phase, LLKs and per-stage timings.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np

from physics.errors import InputError
from physics.preprocess import FrontEnd, FrontEndOptions, fit_object_to, prepare, to_cnn_grid
from physics.simulate import object_from_diffraction
from workers.frontend import training_oversampling

CNN_SIZE = 64
Progress = Callable[[str, float], None]


@dataclass
class ReconOptions:
    """Options of one reconstruction (recorded in the output's process information)."""

    refine: int = 400  # ER cycles after the CNN (0: CNN-only object)
    pre_recipe: str = ""  # optional HIO/RAAR cycles before the ER, e.g. "RAAR**200" (same border-only support)
    update_period: int = 20  # support update every K ER cycles
    border_n: int = 2  # support updates may only change voxels within n of the border
    threshold: float = 0.25  # shrink-wrap threshold, relative to the rms of the smoothed modulus in the support
    smooth: float = 0.5  # Gaussian sigma (voxels) of the shrink-wrap smoothing during refinement
    init_threshold: float = 0.2  # initial support: smoothed |object| > init_threshold * max
    crop_size: int | tuple | None = None  # crop box (FFT-friendly); None: 64³ inputs are not cropped, else largest box
    free_ratio: float = 0.05  # fraction of voxels withheld for free LLK
    device: str = "cpu"
    seed: int = 0
    engine: str = "builtin"  # refinement engine: builtin (torch) or pynx (CPU back-end ignores border_n)

    def __post_init__(self):
        if self.engine == "torch":
            self.engine = "builtin"
        if self.engine not in ("builtin", "pynx"):
            raise InputError(f"unknown engine {self.engine!r}: use builtin or pynx")
        if self.refine < 0:
            raise InputError(f"refine must be >= 0 ER cycles, got {self.refine}")
        if self.pre_recipe:
            from physics.phasing.recipe import parse_recipe

            steps = parse_recipe(self.pre_recipe)
            bad = sorted(set(steps) - {"ER", "HIO", "RAAR"})
            if bad:
                raise InputError(f"pre-recipe {self.pre_recipe!r} may only use ER, HIO and RAAR, not {', '.join(bad)}")
            if self.refine == 0:
                raise InputError("a pre-recipe needs refine > 0: it runs before the ER cycles")
        if self.update_period < 1:
            raise InputError(f"update period must be >= 1, got {self.update_period}")
        if self.border_n < 0:
            raise InputError(f"border_n must be >= 0, got {self.border_n}")
        if not 0 < self.threshold < 1 or not 0 < self.init_threshold < 1:
            raise InputError(f"support thresholds must be in (0, 1), got {self.threshold}, {self.init_threshold}")
        if self.crop_size is not None and min(np.atleast_1d(self.crop_size)) < 16:
            raise InputError(f"crop size must be >= 16 per axis, got {self.crop_size}")


@dataclass
class ReconResult:
    """Outcome of `reconstruct`, on the crop grid (centred arrays)."""

    obj: np.ndarray  # complex64, crop grid
    support: np.ndarray  # bool, crop grid
    intensity_crop: np.ndarray  # float32 counts, crop grid (masked voxels 0)
    mask_crop: np.ndarray  # bool, crop grid
    phase_cnn: np.ndarray  # float32, 64³: the CNN's reciprocal phase
    intensity_cnn: np.ndarray  # float32, 64³: the resized intensity the CNN saw
    crop_offsets: tuple
    input_shape: tuple
    llk: dict
    timings: dict
    options: dict
    free_mask: np.ndarray | None = None
    warnings: list = field(default_factory=list)
    frontend: FrontEnd | None = None  # the front end's decisions (oversampling, crop, binning, photon scale)


def _noop(stage: str, fraction: float) -> None:
    return None


def crop_for_cnn(intensity: np.ndarray, mask: np.ndarray | None, crop_size: int | tuple | None = None, *,
                 frontend: FrontEndOptions | None = None, predict=None):
    """The front end (physics.preprocess.prepare): photon scale, background, peak, oversampling, crop by physics.

    Returns (refinement-grid intensity, its mask, crop offsets, FrontEnd decisions). The crop is chosen so that the
    CNN sees an oversampling inside the model's training range (read from the model behind ``predict``);
    ``crop_size`` overrides it. A 64³ input without crop_size is kept as it is.
    """
    options = frontend or FrontEndOptions()
    if crop_size is not None:
        options = replace(options, crop_size=crop_size)
    rng, source = training_oversampling(predict)
    prep = prepare(intensity, mask, rng, options, training_range_source=source, cnn_size=CNN_SIZE)
    fe = prep.frontend
    return prep.intensity, prep.mask, fe.crop_offsets, fe


def cnn_object(intensity_crop: np.ndarray, mask_crop: np.ndarray, predict: Callable[[np.ndarray], np.ndarray],
               frontend: FrontEnd | None = None):
    """The CNN's first object: 64³ input and predicted phase -> iFFT -> back onto the crop grid.

    Returns (object on the crop grid, predicted 64³ phase, the 64³ intensity the CNN saw). The 64³ input is the
    crop binned (sum) or Fourier-resampled as the front end decided (physics.preprocess.to_cnn_grid), in photons
    (x the photon scale, since the network's log(I+1) input depends on the units). Both keep the q-range, so the
    real-space voxel size is unchanged and the 64³ object maps back onto the crop grid by a centred zero-pad.
    """
    scale = frontend.photon_scale if frontend is not None else 1.0
    binning = None
    if frontend is not None and intensity_crop.shape == tuple(frontend.crop_shape):
        binning = frontend.cnn_binning
    i64 = to_cnn_grid(intensity_crop, mask_crop, binning, CNN_SIZE) * np.float32(scale)
    phase = np.asarray(predict(i64), dtype=np.float32)
    if phase.shape != i64.shape:
        raise InputError(f"the phase predictor returned shape {phase.shape}, expected {i64.shape}")
    obj64 = object_from_diffraction(np.sqrt(i64), phase)
    return fit_object_to(obj64, intensity_crop.shape), phase, i64


def reconstruct(intensity: np.ndarray, mask: np.ndarray | None, predict: Callable[[np.ndarray], np.ndarray],
                options: ReconOptions = ReconOptions(), progress: Progress = _noop,
                should_cancel: Callable[[], bool] | None = None, free_mask: np.ndarray | None = None,
                frontend: FrontEndOptions | None = None) -> ReconResult:
    """Run the whole pipeline on a centred 3D intensity; predict(i64) -> 64³ phase is the CNN (or any predictor).

    free_mask (crop grid): voxels withheld for free LLK, e.g. the same ones as a compared standard run; by
    default ~5 % are drawn with options.seed.
    """
    from physics.phasing import CDI, ER, LLK, InitFreePixels, ScaleObj, SupportUpdate, run_recipe

    timings: dict[str, float] = {}
    t = time.perf_counter()
    progress("preprocess", 0.0)
    intensity = np.asarray(intensity, dtype=np.float32)
    i_crop, m_crop, offsets, fe = crop_for_cnn(intensity, mask, options.crop_size, frontend=frontend, predict=predict)
    timings["preprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    progress("cnn", 0.0)
    obj, phase64, i64 = cnn_object(i_crop, m_crop, predict, fe)
    timings["cnn"] = time.perf_counter() - t

    t = time.perf_counter()
    progress("ifft", 0.0)
    cdi = CDI(i_crop, mask=m_crop, obj=obj, device=options.device)
    cdi.llk_scale = fe.photon_scale  # Poisson LLK on photon-equivalent intensities (stated in llk["llk_scale"])
    if free_mask is None:
        cdi = InitFreePixels(ratio=options.free_ratio, seed=options.seed) * cdi
    elif np.shape(free_mask) != i_crop.shape:
        raise InputError(f"free mask shape {np.shape(free_mask)} differs from the crop shape {i_crop.shape}")
    else:
        cdi.set_free_mask(free_mask)
    cdi = ScaleObj("F") * cdi
    # Initial support from the CNN object itself (the support starts as the whole array, so use the max).
    cdi = SupportUpdate(threshold_relative=options.init_threshold, method="max", smooth_width=1.0) * cdi
    timings["ifft"] = time.perf_counter() - t

    t = time.perf_counter()
    recipe = f"{options.pre_recipe},ER**{options.refine}" if options.pre_recipe else f"ER**{options.refine}"
    if options.refine > 0 and options.engine == "pynx":
        from workers.engines.pynx_engine import pynx_run_recipe

        progress("refine", 0.0)
        out = pynx_run_recipe(i_crop, mask=m_crop, obj=cdi.get_obj(), support=cdi.get_support(),
                              free_mask=cdi.get_free_mask(), recipe=recipe,
                              support_update=dict(threshold_relative=options.threshold, method="rms",
                                                  smooth_width=options.smooth, force_shrink=False,
                                                  border_n=options.border_n),
                              update_period=options.update_period, seed=options.seed)
        cdi.set_obj(out["obj"])
        cdi.set_support(out["support"])
    elif options.refine > 0:
        sup = SupportUpdate(threshold_relative=options.threshold, method="rms", smooth_width=options.smooth,
                            border_n=options.border_n)
        run_recipe(cdi, recipe, support_update=sup, update_period=options.update_period,
                   progress=lambda done, tot: progress("refine", done / tot), should_cancel=should_cancel)
    cdi = LLK() * cdi
    llk = {**cdi.get_llk(), "llk_scale": fe.photon_scale}
    timings["refine"] = time.perf_counter() - t
    progress("refine", 1.0)
    return ReconResult(obj=cdi.get_obj(), support=cdi.get_support(), intensity_crop=i_crop, mask_crop=m_crop,
                       phase_cnn=phase64, intensity_cnn=i64, crop_offsets=tuple(int(o) for o in offsets),
                       input_shape=tuple(intensity.shape), llk=llk, timings=timings, options=asdict(options),
                       free_mask=cdi.get_free_mask(), warnings=list(fe.warnings), frontend=fe)


# ------------------------------------------------------------------------------------------------------------
# The service's job runner: scan from Tiled -> reconstruct -> strain -> results and previews into Tiled.

_MODELS: dict = {}


def _model(device: str, path: str | None = None):
    """The CNN, loaded once per (weights, device) and kept across jobs."""
    from models.predict import load_model

    key = (path, device)
    if key not in _MODELS:
        _MODELS[key] = load_model(path, device=device)
    return _MODELS[key]


def warm_up(device: str | None = None) -> None:
    """Load the model before the first job (the worker calls this once at start)."""
    _model(device or "cpu")


def run_job(spec: dict, progress: Progress = _noop, should_cancel: Callable[[], bool] | None = None) -> dict:
    """Run one queued job: spec has job_id, scan (Tiled reference), options, device and tiled {url, api_key}.

    Returns a small summary (Tiled path of the results, LLKs, support size, timings); the arrays go to Tiled.
    """
    from workers.io.tiled_store import build_result_arrays, connect, load_scan_tiled, make_previews, write_result

    opts_in = dict(spec.get("options") or {})
    device = spec.get("device") or "cpu"
    timings: dict[str, float] = {}
    t = time.perf_counter()
    progress("read", 0.0)
    tiled = spec.get("tiled") or {}
    client = connect(tiled.get("url"), tiled.get("api_key"))
    ref = dict(spec["scan"])
    if ref.get("run_uid") and not ref.get("tiled_path"):  # a Bluesky run: its start document names the scan
        from workers.io.tiled_store import resolve_run_uid

        ref = {**resolve_run_uid(client, ref["run_uid"]), "run_uid": ref["run_uid"]}
    spec = {**spec, "scan": {k: v for k, v in ref.items() if k != "run_uid"}}
    frames, mask, meta = load_scan_tiled(client, spec["scan"])
    meta = {**meta, **({"run_uid": ref["run_uid"]} if ref.get("run_uid") else {})}
    timings["read"] = time.perf_counter() - t
    crop_size = opts_in.get("crop_size")
    options = ReconOptions(refine=int(opts_in.get("er_cycles", 400)),
                           pre_recipe=str(opts_in.get("pre_recipe") or ""),
                           threshold=float(opts_in.get("support_threshold", 0.25)),
                           border_n=int(opts_in.get("border_n", 2)),
                           crop_size=tuple(crop_size) if crop_size else None,
                           engine=opts_in.get("engine", "builtin"), device=device)
    model = _model(device, opts_in.get("model"))
    res = reconstruct(frames, mask, model.predict_phase, options, progress=progress, should_cancel=should_cancel)
    timings.update(res.timings)
    t = time.perf_counter()
    progress("strain", 0.0)
    arrays, strain_meta = build_result_arrays(res.obj, res.support, res.intensity_crop, res.phase_cnn, meta)
    previews = make_previews(arrays, title=f"job {spec['job_id']}")
    timings["strain"] = time.perf_counter() - t
    if should_cancel is not None and should_cancel():
        from physics.phasing import Cancelled

        raise Cancelled("cancelled before publishing")
    t = time.perf_counter()
    progress("publish", 0.0)
    llk = {k: v for k, v in res.llk.items() if isinstance(v, (int, float))}
    metadata = {"scan": spec["scan"], "model": {"name": model.name, "sha256": model.sha256,
                                                "arch": model.arch_config},
                "engine": options.engine, "recipe": f"ER**{options.refine}", "parameters": asdict(options),
                "metrics": {**llk, "support_size": int(res.support.sum())}, "timings": timings,
                "crop_offsets": list(res.crop_offsets), "input": meta, "strain": strain_meta}
    path = write_result(client, spec["scan"], spec["job_id"], arrays, metadata, previews)
    timings["publish"] = time.perf_counter() - t
    progress("publish", 1.0)
    return {"tiled_path": path, "llk_poisson": llk.get("llk_poisson"), "llk_poisson_free": llk.get("llk_poisson_free"),
            "obj2_out": llk.get("obj2_out"), "support_size": int(res.support.sum()),
            **{f"t_{k}": round(v, 4) for k, v in timings.items()}}
