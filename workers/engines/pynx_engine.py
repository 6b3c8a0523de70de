"""PyNX (ESRF) as a second phasing engine: the same recipes as physics.phasing, run by real PyNX on its CPU back-end.

PyNX needs numpy 1.x, so it normally lives in Debian's /usr/bin/python3 (deploy/scripts/install-pynx.sh) and runs in a
subprocess (pynx_child.py; npz in/out in a temp dir, JSON parameters). If ``import pynx`` works in this interpreter the
same code runs in-process. Arrays in and out are centred (CONTRACT.md conventions).

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
from workers.engines import pynx_child

PYNX_PYTHON = os.environ.get("BCDI_PYNX_PYTHON", "/usr/bin/python3")
INSTALL_HINT = "deploy/scripts/install-pynx.sh"
CHILD = Path(pynx_child.__file__).resolve()
DEFAULT_RECIPE = "HIO**400,RAAR**1000,ER**300"
DEFAULT_SUPPORT_UPDATE = dict(threshold_relative=0.25, method="rms", smooth_width=0.5, force_shrink=False, border_n=0)


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
    """Environment for the child: CPU back-end, no inherited venv Python paths, a few threads at most."""
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
    su["smooth_width"] = [float(v) for v in sw] if isinstance(sw, (list, tuple)) else float(sw)
    su["threshold_relative"] = float(su["threshold_relative"])
    su["border_n"] = int(su["border_n"])  # ignored by PyNX's CPU back-end (documented above)
    return su


def validate_recipe(recipe: str) -> list[tuple[str, int]]:
    """Parse our recipe string; InputError with the reason if it is malformed."""
    try:
        return pynx_child.parse_recipe(recipe)
    except ValueError as e:
        raise InputError(str(e)) from None


def our_llk(iobs, obj_last, mask=None, free_mask=None, support=None) -> dict:
    """Our LLK numbers (physics.metrics) for the last iterate of a PyNX run, so both engines are scored alike."""
    from physics import metrics

    return metrics.llk_from_object(iobs, obj_last, mask=mask, free_mask=free_mask, support=support)


def pynx_run_recipe(iobs, mask=None, obj=None, support=None, free_mask=None, recipe: str = DEFAULT_RECIPE,
                    support_update: dict | None = None, update_period: int = 20, seed: int = 0,
                    timeout: float | None = None) -> dict:
    """Run our recipe string once in PyNX from the given start; returns centred obj/support and LLK figures.

    obj None: random start inside the support; support None: autocorrelation support (threshold 0.1).
    ``llk_poisson``/``llk_poisson_free`` are ours (physics.metrics on PyNX's last iterate); PyNX's own normalised
    values are under ``pynx_llk_poisson``/``pynx_llk_poisson_free`` (its CPU helper is 2x the GPU kernels' scale).
    """
    iobs = _check_iobs(iobs)
    shape = iobs.shape
    mask = _check_array("mask", mask, shape, "bool")
    obj = _check_array("obj", obj, shape, "complex")
    support = _check_array("support", support, shape, "bool")
    free_mask = _check_array("free_mask", free_mask, shape, "bool")
    if support is not None and not support.any():
        raise InputError("support is empty")
    validate_recipe(recipe)
    su = _support_params(DEFAULT_SUPPORT_UPDATE if support_update is None else support_update)
    params = dict(recipe=recipe, update_period=int(update_period), support_update=su, runs=[dict(seed=int(seed))],
                  return_last=True)
    t0 = time.perf_counter()
    out, info = _run_job(dict(iobs=iobs, mask=mask, obj=obj, support=support, free_mask=free_mask), params, timeout)
    run = info["runs"][0]
    return _result(iobs, mask, out, run, 0, info, time.perf_counter() - t0)


def _result(iobs, mask, out, run, i, info, wall) -> dict:
    """Assemble the per-run result dict (ours + PyNX's own LLK numbers)."""
    obj, support, free = out[f"obj_{i}"], out[f"support_{i}"].astype(bool), out["free_mask"].astype(bool)
    res = dict(obj=obj, support=support, free_mask=free, obj2_out=run["obj2_out"], support_size=int(support.sum()),
               seconds=run["seconds"], wall_seconds=wall, chain=run["chain"], threshold_relative=run["threshold_relative"],
               pynx_llk_poisson=run["llk_poisson"], pynx_llk_poisson_free=run["llk_poisson_free"],
               pynx_version=info.get("pynx_version"), seed=run["seed"])
    last = out.get(f"last_{i}")
    if last is not None:
        ours = our_llk(iobs, last, mask=mask, free_mask=free, support=support)
        res["llk_poisson"] = float(ours["llk_poisson"])
        res["llk_poisson_free"] = float(ours["llk_poisson_free"])
    else:
        res["llk_poisson"], res["llk_poisson_free"] = run["llk_poisson"], run["llk_poisson_free"]
    return res
