"""PyNX (ESRF) as a second phasing engine: the same recipes as physics.phasing, run by real PyNX on its CPU back-end.

PyNX needs numpy 1.x, so it normally lives in Debian's /usr/bin/python3 (deploy/scripts/install-pynx.sh) and runs in a
subprocess (pynx_child.py; npz in/out in a temp dir, JSON parameters). If ``import pynx`` works in this interpreter the
same code runs in-process. `PyNXEngine` is the physics.phasing.Engine for phase_runs; `pynx_run_recipe` runs one
recipe from a given start (the CNN pipeline's refinement). Arrays in and out are centred (physics.phasing
conventions). BCDI_PYNX_PYTHON overrides the interpreter used for the child.

Known PyNX CPU limitation: SupportUpdate ignores ``update_border_n`` (border-only support updates exist only on its
CUDA/OpenCL back-ends), so ``support_update["border_n"]`` has no effect here; compare with border_n=0.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from physics.errors import InputError
from physics.phasing.engine import RunOutcome
from workers.engines import pynx_child

PYNX_PYTHON = os.environ.get("BCDI_PYNX_PYTHON", "/usr/bin/python3")
INSTALL_HINT = "deploy/scripts/install-pynx.sh"
CHILD = Path(pynx_child.__file__).resolve()
DEFAULT_RECIPE = "HIO**400,RAAR**1000,ER**300"
DEFAULT_SUPPORT_UPDATE = dict(threshold_relative=0.25, method="rms", smooth_width=(2.0, 0.5, None), force_shrink=False,
                              border_n=0)  # as physics.phasing.SupportUpdate's defaults


class PyNXUnavailable(RuntimeError):
    """PyNX is not installed where we look for it (this interpreter or /usr/bin/python3)."""


class PyNXError(RuntimeError):
    """PyNX failed while running a recipe; the message is the child's one-line error."""


@functools.lru_cache(maxsize=1)
def _in_process() -> bool:
    """True when ``import pynx.cdi`` works in the current interpreter (then no subprocess is needed)."""
    if importlib.util.find_spec("pynx") is None:
        return False
    try:
        os.environ.setdefault("PYNX_PU", "cpu")
        import pynx.cdi  # noqa: F401
        return True
    except Exception:
        return False


@functools.lru_cache(maxsize=1)
def pynx_available() -> bool:
    """True if PyNX can be used, in-process or through Debian's /usr/bin/python3."""
    if _in_process():
        return True
    if not os.path.exists(PYNX_PYTHON):
        return False
    try:
        r = subprocess.run([PYNX_PYTHON, "-c", "import pynx.cdi"], env=_child_env(), capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def require_pynx() -> None:
    """Raise PyNXUnavailable with the install command if PyNX cannot be used."""
    if not pynx_available():
        raise PyNXUnavailable(f"PyNX is not installed for {PYNX_PYTHON}: run {INSTALL_HINT} (Debian python3-pynx)")


def _child_env() -> dict:
    """Environment for the child: PyNX's CPU back-end and no Python paths inherited from our virtual environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYNX_PU"] = "cpu"
    return env


def _run_job(arrays: dict, params: dict, timeout: float | None = None) -> tuple[dict, dict]:
    """Run one child job (in-process or subprocess); returns (centred output arrays, info dict)."""
    require_pynx()
    arrays = {k: v for k, v in arrays.items() if v is not None}
    if _in_process():
        try:
            return pynx_child.run_job(arrays, params)
        except Exception as e:
            raise PyNXError(f"PyNX failed: {type(e).__name__}: {e}".splitlines()[0]) from e
    with tempfile.TemporaryDirectory(prefix="bcdi-pynx-") as d:
        np.savez(os.path.join(d, "in.npz"), **arrays)
        with open(os.path.join(d, "params.json"), "w") as f:
            json.dump(params, f)
        try:
            r = subprocess.run([PYNX_PYTHON, str(CHILD), d], env=_child_env(), capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PyNXError(f"PyNX child timed out after {timeout} s") from None
        err = os.path.join(d, "error.txt")
        if r.returncode != 0 or os.path.exists(err):
            if os.path.exists(err):
                msg = open(err).read().strip()
            else:
                tail = (r.stderr or r.stdout or "").strip().splitlines()
                msg = tail[-1] if tail else f"exit status {r.returncode}"
            raise PyNXError(f"PyNX failed: {msg}")
        with np.load(os.path.join(d, "out.npz")) as f:
            out = {k: f[k] for k in f.files}
        with open(os.path.join(d, "out.json")) as f:
            info = json.load(f)
    return out, info


def _check_array(name: str, a, shape=None, kind=None):
    """Validate an input array (3D, shape match, finite) and return it as numpy; InputError on bad input."""
    if a is None:
        return None
    a = np.asarray(a)
    if a.ndim != 3:
        raise InputError(f"{name} must be a 3D array, got shape {a.shape}")
    if shape is not None and a.shape != shape:
        raise InputError(f"{name} shape {a.shape} does not match iobs shape {shape}")
    if kind == "bool":
        return a.astype(bool)
    if kind == "complex":
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name} contains NaN or inf")
        return a.astype(np.complex64)
    return a


def _check_iobs(iobs):
    """Validate the intensity: 3D, finite, non-negative, not all zero."""
    iobs = np.asarray(iobs)
    if iobs.ndim != 3:
        raise InputError(f"iobs must be a 3D array, got shape {iobs.shape}")
    if not np.all(np.isfinite(iobs)):
        raise InputError("iobs contains NaN or inf")
    if (iobs < 0).any():
        raise InputError("iobs has negative values: mask them instead (mask=True)")
    if not iobs.any():
        raise InputError("iobs is all zero")
    return iobs.astype(np.float32)


def _support_params(support_update) -> dict | None:
    """Fill our support-update dict with defaults; None disables support updates."""
    if support_update is None:
        return None
    unknown = set(support_update) - set(DEFAULT_SUPPORT_UPDATE)
    if unknown:
        raise InputError(f"unknown support_update keys: {', '.join(sorted(unknown))}")
    su = dict(DEFAULT_SUPPORT_UPDATE, **support_update)
    if su["method"] not in ("rms", "max", "average"):
        raise InputError(f"support method must be rms, max or average, got {su['method']!r}")
    sw = su["smooth_width"]
    su["smooth_width"] = ([None if v is None else float(v) for v in sw] if isinstance(sw, (list, tuple))
                          else float(sw))
    su["threshold_relative"] = float(su["threshold_relative"])
    su["border_n"] = int(su["border_n"])  # ignored by PyNX's CPU back-end (documented above)
    return su


def compile_recipe(recipe: str, update_period: int, support_update: dict | None, zero_mask=False,
                   has_mask: bool = True) -> tuple[list, dict | None]:
    """Our recipe -> PyNX segments [[name, n, zero_mask], ...] from the one schedule (physics.phasing.schedule),
    and the support settings with a (begin, end, None) smooth schedule resolved to the recipe's HIO+RAAR cycles."""
    from physics.phasing.schedule import resolve_smooth_width, schedule

    if update_period is None or int(update_period) < 0:
        raise InputError(f"update_period must be >= 0, got {update_period}")
    su = _support_params(support_update)
    sched = schedule(recipe, int(update_period), zero_mask, support_update=su is not None, has_mask=has_mask)
    if su is not None and isinstance(su["smooth_width"], list):
        if len(su["smooth_width"]) != 3:
            raise InputError(f"smooth_width must be a float or (begin, end, n_cycles), got {su['smooth_width']!r}")
        su["smooth_width"] = list(resolve_smooth_width(su["smooth_width"], sched))
    return sched.as_lists(), su


def our_llk(iobs, obj_last, mask=None, free_mask=None, support=None) -> dict:
    """Our LLK numbers (physics.phasing's LLK operator) for the last iterate of a PyNX run, so both engines are
    scored by the same code on the same state (support and free mask included)."""
    from physics.phasing import CDI, LLK

    cdi = CDI(iobs, mask=mask, obj=obj_last, support=support, free_mask=free_mask)
    cdi = LLK() * cdi
    return cdi.get_llk()


def pynx_run_recipe(iobs, mask=None, obj=None, support=None, free_mask=None, recipe: str = DEFAULT_RECIPE,
                    support_update: dict | None = DEFAULT_SUPPORT_UPDATE, update_period: int = 20, seed: int = 0,
                    zero_mask=False, timeout: float | None = None) -> dict:
    """Run our recipe string once in PyNX from the given start; returns centred obj/support and LLK figures.

    obj None: random start inside the support; support None: autocorrelation support (threshold 0.1);
    support_update None: no support update (as in run_recipe); its border_n is ignored by PyNX's CPU back-end.
    obj is PyNX's last iterate (as get_obj() after run_recipe), obj_projected the object after its final magnitude
    projection. ``llk_poisson``/``llk_poisson_free`` are ours (physics.phasing's LLK on PyNX's last iterate, support
    and free mask); PyNX's own get_llk() values are ``pynx_llk_poisson``/``pynx_llk_poisson_free`` (same scale on
    the CPU back-end; PyNX's GPU kernels are 2x smaller).
    """
    iobs = _check_iobs(iobs)
    shape = iobs.shape
    mask = _check_array("mask", mask, shape, "bool")
    obj = _check_array("obj", obj, shape, "complex")
    support = _check_array("support", support, shape, "bool")
    free_mask = _check_array("free_mask", free_mask, shape, "bool")
    if support is not None and not support.any():
        raise InputError("support is empty")
    segments, su = compile_recipe(recipe, update_period, support_update, zero_mask,
                                  has_mask=mask is not None and bool(mask.any()))
    params = dict(recipe=recipe, segments=segments, support_update=su, runs=[dict(seed=int(seed))],
                  return_projected=True)
    t0 = time.perf_counter()
    out, info = _run_job(dict(iobs=iobs, mask=mask, obj=obj, support=support, free_mask=free_mask), params, timeout)
    run = info["runs"][0]
    return _result(iobs, mask, out, run, 0, info, time.perf_counter() - t0)


def _result(iobs, mask, out, run, i, info, wall) -> dict:
    """Assemble the per-run result dict (ours + PyNX's own LLK numbers)."""
    obj, support, free = out[f"obj_{i}"], out[f"support_{i}"].astype(bool), out["free_mask"].astype(bool)
    res = dict(obj=obj, support=support, free_mask=free, obj2_out=run["obj2_out"], support_size=int(support.sum()),
               seconds=run["seconds"], wall_seconds=wall, chain=run["chain"],
               threshold_relative=run["threshold_relative"],
               pynx_llk_poisson=run["llk_poisson"], pynx_llk_poisson_free=run["llk_poisson_free"],
               pynx_version=info.get("pynx_version"), seed=run["seed"])
    if f"projected_{i}" in out:
        res["obj_projected"] = out[f"projected_{i}"]
    ours = our_llk(iobs, obj, mask=mask, free_mask=free, support=support)
    res["llk_poisson"] = float(ours["llk_poisson"])
    res["llk_poisson_free"] = float(ours["llk_poisson_free"])
    return res


class PyNXEngine:
    """physics.phasing.Engine running each run's schedule in real PyNX (CPU back-end, subprocess or in-process).

    phase_runs builds every start with our operators (same seeds as the built-in engine: free mask,
    autocorrelation support, random object scaled by ScaleObj('F'); PyNX's CPU ScaleObj is not unitary) and
    PyNX runs the schedule's segments from it. A diverging support restarts the run with the threshold retuned
    by 1.1 (PyNX runner style, at most max_restart times; PyNX has no in-place retune). config.device,
    border_n (PyNX CPU ignores it), num_threads (PyNX's numpy back-end is single-threaded) and batch have no
    effect. timeout (s) bounds each PyNX child process.
    """

    name = "pynx"

    def __init__(self, timeout: float | None = None):
        self.timeout = timeout

    def run(self, problem, specs, sched, config, progress=None, should_cancel=None):
        from physics.phasing.schedule import resolve_smooth_width

        require_pynx()
        iobs = _check_iobs(problem.iobs)
        mask = _check_array("mask", problem.mask, iobs.shape, "bool")
        free_mask = _check_array("free_mask", problem.free_mask, iobs.shape, "bool")
        su = _support_params(dict(threshold_relative=config.threshold_range[0], method=config.method,
                                  smooth_width=config.smooth_width, force_shrink=config.force_shrink,
                                  border_n=config.border_n))
        if isinstance(su["smooth_width"], list):
            su["smooth_width"] = list(resolve_smooth_width(su["smooth_width"], sched))
        segments = sched.as_lists()
        nb_run = len(specs)
        # progress granularity is one run: one child per run when progress/cancel is wanted, else one for all
        per_call = 1 if (progress is not None or should_cancel is not None) else nb_run
        for first in range(0, nb_run, per_call):
            if should_cancel is not None and should_cancel():
                from physics.phasing.cdi import Cancelled

                raise Cancelled(f"cancelled after {first} of {nb_run} PyNX runs")
            chunk = specs[first:first + per_call]
            arrays = dict(iobs=iobs, mask=mask, free_mask=free_mask)
            prm_runs = []
            for spec in chunk:
                start = problem.start_state(spec)
                i = spec.run
                arrays[f"obj_start_{i}"], arrays[f"support_start_{i}"] = start.get_obj(), start.get_support()
                prm_runs.append(dict(seed=i, threshold_relative=spec.threshold, obj=f"obj_start_{i}",
                                     support=f"support_start_{i}"))
            params = dict(recipe=sched.recipe, segments=segments, support_update=su, runs=prm_runs,
                          keep_going=True, max_tries=config.max_restart + 1, beta=config.beta)
            out, info = _run_job(arrays, params, self.timeout)
            for k, (spec, rinfo) in enumerate(zip(chunk, info["runs"])):
                if "error" in rinfo:
                    yield RunOutcome(spec.run, restarts=config.max_restart, error=rinfo["error"])
                    continue
                yield RunOutcome(spec.run, obj=out[f"obj_{k}"], support=out[f"support_{k}"].astype(bool),
                                 threshold=rinfo["threshold_relative"], restarts=rinfo["tries"] - 1,
                                 extra=dict(seconds=rinfo["seconds"], pynx_llk_poisson=rinfo["llk_poisson"],
                                            pynx_llk_poisson_free=rinfo["llk_poisson_free"],
                                            pynx_obj2_out=rinfo["obj2_out"], chain=rinfo["chain"]))
            if progress is not None:
                done = min(first + per_call, nb_run) * sched.nb_cycles
                progress(done, nb_run * sched.nb_cycles)
