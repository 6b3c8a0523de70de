"""The reconstruction pipeline of Masto et al. (2025): crop -> 64³ -> CNN phase -> iFFT -> border-restricted ER
-> strain -> result arrays -> previews.

`reconstruct` works on arrays (no I/O): the refined object on the crop grid, its support, the CNN's 64³ phase,
LLKs and per-stage timings. `run_pipeline` adds the physics after it (displacement and strain, physics.strain)
and the previews, and is what both the CLI (`bcdi-recon reconstruct`) and the service's `run_job` call; the
adapters (CXI, Tiled) only write what it returns.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from contract.options import ReconOptions  # the one options schema (also imported from here by callers)
from physics.errors import InputError
from physics.phasing import device_name, resolve_device
from physics.preprocess import FrontEnd, FrontEndOptions, fit_object_to, prepare, to_cnn_grid
from physics.simulate import object_from_diffraction
from workers.frontend import training_oversampling

CNN_SIZE = 64
Progress = Callable[[str, float], None]


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
    recipe: str = ""  # the refinement recipe that ran (ReconOptions.recipe(), pre_recipe included)
    free_mask: np.ndarray | None = None
    warnings: list = field(default_factory=list)
    frontend: FrontEnd | None = None  # the front end's decisions (oversampling, crop, binning, photon scale)


def _noop(stage: str, fraction: float) -> None:
    return None


def crop_for_cnn(intensity: np.ndarray, mask: np.ndarray | None, options: ReconOptions = ReconOptions(), *,
                 predict=None):
    """The front end (physics.preprocess.prepare): photon scale, background, peak, oversampling, crop by physics.

    Returns (refinement-grid intensity, its mask, crop offsets, FrontEnd decisions). The crop is chosen so that the
    CNN sees an oversampling inside the model's training range (read from the model behind ``predict``);
    ``options.crop_size`` overrides it. A 64³ input without crop_size is kept as it is. The front end's choices
    (background, photon scale, ...) are the options' own fields (FrontEndOptions.from_options).
    """
    rng, source = training_oversampling(predict)
    prep = prepare(intensity, mask, rng, FrontEndOptions.from_options(options), training_range_source=source,
                   cnn_size=CNN_SIZE)
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
                should_cancel: Callable[[], bool] | None = None, free_mask: np.ndarray | None = None) -> ReconResult:
    """Run the whole pipeline on a centred 3D intensity; predict(i64) -> 64³ phase is the CNN (or any predictor).

    free_mask (crop grid): voxels withheld for free LLK, e.g. the same ones as a compared standard run; by
    default ~5 % are drawn with options.seed.
    """
    from physics.phasing import CDI, ER, LLK, InitFreePixels, ScaleObj, SupportUpdate, run_recipe

    timings: dict[str, float] = {}
    t = time.perf_counter()
    progress("preprocess", 0.0)
    intensity = np.asarray(intensity, dtype=np.float32)
    i_crop, m_crop, offsets, fe = crop_for_cnn(intensity, mask, options, predict=predict)
    timings["preprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    progress("cnn", 0.0)
    obj, phase64, i64 = cnn_object(i_crop, m_crop, predict, fe)
    timings["cnn"] = time.perf_counter() - t

    t = time.perf_counter()
    progress("ifft", 0.0)
    cdi = CDI(i_crop, mask=m_crop, obj=obj, device=options.device)  # CDI resolves "auto" itself
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
    recipe = options.recipe()
    if options.er_cycles > 0 and options.engine == "pynx":
        from workers.engines.pynx_engine import pynx_run_recipe

        progress("refine", 0.0)
        out = pynx_run_recipe(i_crop, mask=m_crop, obj=cdi.get_obj(), support=cdi.get_support(),
                              free_mask=cdi.get_free_mask(), recipe=recipe,
                              support_update=dict(threshold_relative=options.support_threshold, method="rms",
                                                  smooth_width=options.smooth, force_shrink=False,
                                                  border_n=options.border_n),
                              update_period=options.update_period, seed=options.seed)
        cdi.set_obj(out["obj"])
        cdi.set_support(out["support"])
    elif options.er_cycles > 0:
        sup = SupportUpdate(threshold_relative=options.support_threshold, method="rms", smooth_width=options.smooth,
                            border_n=options.border_n)
        run_recipe(cdi, recipe, support_update=sup, update_period=options.update_period,
                   progress=lambda done, tot: progress("refine", done / tot), should_cancel=should_cancel)
    cdi = LLK() * cdi
    llk = {**cdi.get_llk(), "llk_scale": fe.photon_scale}
    timings["refine"] = time.perf_counter() - t
    progress("refine", 1.0)
    return ReconResult(obj=cdi.get_obj(), support=cdi.get_support(), intensity_crop=i_crop, mask_crop=m_crop,
                       phase_cnn=phase64, intensity_cnn=i64, crop_offsets=tuple(int(o) for o in offsets),
                       input_shape=tuple(intensity.shape), llk=llk, timings=timings, options=options.to_dict(),
                       recipe=recipe, free_mask=cdi.get_free_mask(), warnings=list(fe.warnings), frontend=fe)


def result_arrays(obj: np.ndarray, support: np.ndarray, intensity_crop: np.ndarray,
                  reciprocal_phase_predicted: np.ndarray, scan_meta: dict | None = None,
                  binning=(1, 1, 1), lab_frame: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """All result arrays from the refined object: amplitude, phases, the crystal's shape (physics.shape: the
    amplitude isosurface inside the phasing support), and displacement and strain inside that shape (physics.strain).

    ``intensity_crop`` is the linear cropped intensity (stored as log10(1+I)). With ``scan_meta`` carrying the
    geometry (energy, angles, distance, pixels, rocking step) the strain is along G through the detector-frame basis;
    otherwise the phase gradient along the rocking axis in rad/voxel. With the geometry and ``lab_frame``, the
    amplitude, support, displacement and strain are also resampled on an orthogonal lab grid (``*_lab``).
    Returns (arrays, strain metadata with units).
    """
    from physics.shape import crystal_shape, shape_definition
    from physics.strain import Geometry, displacement_and_strain, to_lab_frame

    obj = np.asarray(obj).astype(np.complex64)
    support = np.asarray(support, dtype=bool)
    shape = crystal_shape(obj, support)
    geometry = None
    if scan_meta:
        try:
            geometry = Geometry.from_metadata(scan_meta, binning)
            geometry.real_space_basis(obj.shape)
        except InputError:  # incomplete or inconsistent geometry: strain along the rocking axis, in rad/voxel
            geometry = None
    derived, strain_meta = displacement_and_strain(obj, shape, geometry)
    strain_meta["geometry_used"] = geometry is not None
    strain_meta["shape"] = shape_definition(shape, support)
    lab: dict[str, np.ndarray] = {}
    if geometry is not None and lab_frame:
        basis = geometry.real_space_basis(obj.shape)
        lab["amplitude_lab"], lab_meta = to_lab_frame(np.abs(obj).astype(np.float32), basis)
        lab["support_lab"], _ = to_lab_frame(support, basis)
        lab["shape_lab"], _ = to_lab_frame(shape, basis)
        lab["displacement_lab"], _ = to_lab_frame(derived["displacement"], basis)
        lab["strain_lab"], _ = to_lab_frame(derived["strain"], basis)
        for key in ("displacement_lab", "strain_lab"):  # outside the lab-grid shape: 0, as in the detector frame
            lab[key] = np.where(lab["shape_lab"], lab[key], 0.0).astype(np.float32)
        strain_meta["lab_frame"] = lab_meta
    arrays = {
        "amplitude": np.abs(obj).astype(np.float32),
        "phase": derived["phase"],
        "phase_wrapped": derived["phase_wrapped"],
        "support": support,
        "shape": shape,
        "object": obj,
        "reciprocal_phase_predicted": np.asarray(reciprocal_phase_predicted, dtype=np.float32),
        "intensity_crop": np.log10(1.0 + np.clip(np.asarray(intensity_crop, dtype=np.float32), 0, None)),
        "displacement": derived["displacement"],
        "strain": derived["strain"],
        **lab,
    }
    return arrays, strain_meta


@dataclass
class PipelineOutput:
    """Outcome of `run_pipeline`: the reconstruction, its result arrays (strain included), their units, previews."""

    result: ReconResult
    arrays: dict  # name -> array, as result_arrays returns them (what a Tiled result container holds)
    strain_meta: dict  # units, G, frame, ramp removed
    previews: dict  # name -> uint8 RGB image; empty when previews were not asked for
    timings: dict  # per stage, reconstruct's stages + strain (+ previews)
    confidence: dict = field(default_factory=dict)  # the quality gate's record (workers.strategy): method,
    # winner, gate values, ok | uncertain, number of candidates, seconds, hint
    summary: str = ""  # its one-line summary (the CLI prints it)


def run_pipeline(intensity: np.ndarray, mask: np.ndarray | None, predict: Callable[[np.ndarray], np.ndarray],
                 options: ReconOptions = ReconOptions(), *, scan_meta: dict | None = None,
                 previews: bool = True, title: str | None = None, progress: Progress = _noop,
                 should_cancel: Callable[[], bool] | None = None,
                 free_mask: np.ndarray | None = None) -> PipelineOutput:
    """reconstruct -> displacement and strain -> result arrays -> previews: the one path of the CLI and the service.

    scan_meta: the scan's metadata (geometry for the strain along G; without it, strain in rad/voxel).
    """
    from workers.strategy import StrategyOptions, run_method, summary_line as strat_summary

    strat = run_method(options.method, intensity, mask, predict,
                       StrategyOptions(recon=options, max_runs=options.max_runs, max_seconds=options.max_seconds),
                       progress=progress, should_cancel=should_cancel, free_mask=free_mask)
    res = strat.result
    timings = dict(res.timings)
    t = time.perf_counter()
    progress("strain", 0.0)
    recip = res.phase_cnn
    if recip is None:  # the standard method has no CNN: store the reconstruction's own reciprocal phase
        from workers.io.previews import reciprocal_phase

        recip = reciprocal_phase(res.obj)
    arrays, strain_meta = result_arrays(res.obj, res.support, res.intensity_crop, recip, scan_meta)
    strain_meta["reciprocal_phase_source"] = "cnn" if res.phase_cnn is not None else "reconstruction"
    rgb: dict = {}
    if previews:
        from workers.io.previews import make_previews, preview_geometry

        geometry = preview_geometry(scan_meta or {}, res.intensity_crop.shape)  # nm / Å⁻¹ axes when known
        rgb = make_previews(arrays, geometry, title=title)
    timings["strain"] = time.perf_counter() - t
    progress("strain", 1.0)
    return PipelineOutput(result=res, arrays=arrays, strain_meta=strain_meta, previews=rgb, timings=timings,
                          confidence=strat.confidence, summary=strat_summary(strat))


# ------------------------------------------------------------------------------------------------------------
# The service's job runner: scan from Tiled -> reconstruct -> strain -> results and previews into Tiled.

_MODELS: dict = {}


def _model(device: str, path: str | None = None):
    """The CNN, loaded once per (weights, device) and kept across jobs."""
    from models.predict import load_model

    device = str(resolve_device(device))  # "auto" and "cpu" on a CPU host are one cache entry
    key = (path, device)
    if key not in _MODELS:
        _MODELS[key] = load_model(path, device=device)
    return _MODELS[key]


def warm_up(device: str | None = None) -> None:
    """Load the model before the first job (the worker calls this once at start)."""
    _model(device or "auto")


def job_options(spec: dict) -> ReconOptions:
    """The options of a queued job: its request's options (schema names) on the worker's device."""
    return ReconOptions.from_mapping(spec.get("options") or {}, device=spec.get("device") or "auto")


def run_job(spec: dict, progress: Progress = _noop, should_cancel: Callable[[], bool] | None = None) -> dict:
    """Run one queued job: spec has job_id, scan (Tiled reference), options, device and tiled {url, api_key}.

    Returns a small summary (Tiled path of the results, LLKs, support size, timings); the arrays go to Tiled.
    """
    from workers.io.tiled_store import connect, load_scan_tiled, write_result

    options = job_options(spec)  # before any I/O: bad options fail the job at once
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
    model = _model(options.device, options.model)
    out = run_pipeline(frames, mask, model.predict_phase, options, scan_meta=meta, title=f"job {spec['job_id']}",
                       progress=progress, should_cancel=should_cancel)
    res, arrays, previews = out.result, out.arrays, out.previews
    timings.update(out.timings)
    if should_cancel is not None and should_cancel():
        from physics.phasing import Cancelled

        raise Cancelled("cancelled before publishing")
    t = time.perf_counter()
    progress("publish", 0.0)
    llk = {k: v for k, v in res.llk.items() if isinstance(v, (int, float))}
    metadata = {"scan": spec["scan"], "model": {"name": model.name, "sha256": model.sha256,
                                                "arch": model.arch_config},
                "confidence": out.confidence,
                "device": device_name(options.device), "engine": options.engine, "recipe": res.recipe,
                "parameters": options.to_dict(),
                "metrics": {**llk, "support_size": int(res.support.sum())}, "timings": timings,
                "crop_offsets": list(res.crop_offsets), "input": meta, "strain": out.strain_meta}
    path = write_result(client, spec["scan"], spec["job_id"], arrays, metadata, previews)
    timings["publish"] = time.perf_counter() - t
    progress("publish", 1.0)
    return {"tiled_path": path, "llk_poisson": llk.get("llk_poisson"), "llk_poisson_free": llk.get("llk_poisson_free"),
            "obj2_out": llk.get("obj2_out"), "support_size": int(res.support.sum()),
            "shape_size": int(np.count_nonzero(arrays["shape"])),
            **{k: out.confidence.get(k) for k in ("method", "status", "winner", "nb_candidates", "seconds", "hint")},
            **{f"t_{k}": round(v, 4) for k, v in timings.items()}}
