"""Run a phasing recipe in real PyNX (CPU back-end); executed by Debian's /usr/bin/python3 or imported in-process.

Protocol (subprocess): ``python3 pynx_child.py JOBDIR``. JOBDIR holds ``in.npz`` (centred arrays: iobs, and
optionally mask, obj, support, free_mask) and ``params.json`` with the segments [[name, n, zero_mask], ...] of
physics.phasing.schedule (the one schedule; this child only runs it). The child writes ``out.npz`` (obj_<i>,
support_<i>, free_mask, all centred) and ``out.json`` (per-run figures), or ``error.txt`` (one line) and exits with status 1.
This file must import only numpy/scipy and PyNX: Debian's Python has numpy 1.x and none of our packages.
"""

import json
import os
import sys
import time

import numpy as np

CYCLES = ("ER", "HIO", "RAAR", "CF")
def chain_string(segments):
    """PyNX-style (right-to-left) text of the operator chain, grouping repeated segment pairs; for logs and docs."""
    ops = [f"{seg[0]}**{seg[1]}" if seg[1] > 1 else seg[0] for seg in segments]
    groups = []  # [(text, repeat)] in application order; a cycle block followed by Sup becomes one unit
    i = 0
    while i < len(ops):
        unit = f"Sup*{ops[i]}" if i + 1 < len(ops) and ops[i + 1] == "Sup" and ops[i] != "Sup" else ops[i]
        i += 2 if unit.startswith("Sup*") else 1
        if groups and groups[-1][0] == unit:
            groups[-1][1] += 1
        else:
            groups.append([unit, 1])
    return "*".join(f"({u})**{r}" if r > 1 else u for u, r in reversed(groups))


def _import_pynx():
    """Import PyNX's CDI API on the CPU back-end (PYNX_PU=cpu), silencing its start-up print."""
    os.environ["PYNX_PU"] = "cpu"
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        import pynx.cdi as pc
        from pynx.version import __version__
    return pc, __version__


def build_chain(pc, segments, sup_kwargs, beta=0.9):
    """Compose the PyNX operator chain for the segments (PyNX applies the right-most operator first)."""
    make = {"ER": lambda z: pc.ER(zero_mask=z), "HIO": lambda z: pc.HIO(beta=beta, zero_mask=z),
            "RAAR": lambda z: pc.RAAR(beta=beta, zero_mask=z), "CF": lambda z: pc.CF(zero_mask=z),
            "FAA": lambda z: pc.FourierApplyAmplitude(zero_mask=z), "LLK": lambda z: pc.LLK(),
            "Sup": lambda z: pc.SupportUpdate(**sup_kwargs)}
    chain = None
    for seg in segments:
        name, k, zero = seg[0], int(seg[1]), bool(seg[2]) if len(seg) > 2 else False
        if name == "Sup" and sup_kwargs is None:
            continue
        if name in CYCLES:
            op = make[name](zero) ** k if k > 1 else make[name](zero)
        else:
            op = make[name](zero)
            for _ in range(k - 1):
                op = make[name](zero) * op
        chain = op if chain is None else op * chain
    return chain


def _sup_kwargs(su, threshold, min_fraction, max_fraction):
    """Translate our support-update settings into PyNX SupportUpdate keyword arguments."""
    if su is None:
        return None
    sw = su.get("smooth_width", 0.5)
    sw = tuple(sw) if isinstance(sw, (list, tuple)) else float(sw)
    return dict(threshold_relative=float(threshold), smooth_width=sw, force_shrink=bool(su.get("force_shrink", False)),
                method=str(su.get("method", "rms")), update_border_n=int(su.get("border_n", 0)),
                min_fraction=float(min_fraction), max_fraction=float(max_fraction))


def _one_run(pc, arrays, params, run):
    """One PyNX run from the given (or random) start; returns (obj, support, free_mask, info), arrays centred.

    obj is the last iterate (what the final LLK is computed from, as the built-in engine's get_obj after a recipe);
    info["projected"] is the object after PyNX's final FourierApplyAmplitude (what PyNX's runner saves)."""
    fftshift = np.fft.fftshift
    seed = int(run.get("seed", 0))
    np.random.seed(seed % (2 ** 32))
    iobs = arrays["iobs"].astype(np.float32)
    mask = arrays.get("mask")
    cdi = pc.CDI(fftshift(iobs), mask=None if mask is None else fftshift(mask).astype(np.int8))
    free = arrays.get("free_mask")
    if free is not None:
        cdi.set_free_pixel_mask(fftshift(free.astype(bool)))
    elif params.get("free_pixels", True):
        cdi = pc.InitFreePixels(ratio=0.05, island_radius=3, exclude_zone_center=0.05) * cdi
    else:
        cdi.set_free_pixel_mask(np.zeros(iobs.shape, dtype=bool))
    support0 = arrays.get(run.get("support", "support"))
    obj0 = arrays.get(run.get("obj", "obj"))
    if support0 is not None:
        cdi.set_support(fftshift(support0.astype(bool)))
    else:
        cdi = pc.AutoCorrelationSupport(threshold=float(run.get("autocorr_threshold", 0.1))) * cdi
    if obj0 is not None:
        cdi.set_obj(fftshift(obj0.astype(np.complex64)))
    else:
        cdi = pc.InitObjRandom(src="support", amin=0, amax=1, phirange=2 * np.pi) * cdi
    # No PyNX ScaleObj here: its 2025.1 CPU version scales by 1/sqrt(N) too little (non-unitary FFT); the parent
    # scales the starting object instead.
    segments = params.get("segments")
    if not segments:
        raise ValueError("params has no 'segments': the parent sends physics.phasing.schedule's segments")
    thr = float(run.get("threshold_relative", (params.get("support_update") or {}).get("threshold_relative", 0.25)))
    sup = _sup_kwargs(params.get("support_update"), thr, params.get("min_fraction", 1e-4),
                      params.get("max_fraction", 0.7))
    chain = build_chain(pc, segments, sup, beta=float(params.get("beta", 0.9)))
    obj0, support0 = cdi.get_obj().copy(), cdi.get_support().copy()
    t0 = time.perf_counter()
    tries = 0
    while True:
        tries += 1
        try:
            cdi = chain * cdi
            chain_seconds = time.perf_counter() - t0
            break
        except (pc.SupportTooSmall, pc.SupportTooLarge) as e:
            # Same recovery as PyNX's runner: retune the threshold by 1.1 and restart the run (at most 5 tries).
            if tries >= int(params.get("max_tries", 1)) or sup is None:
                raise RuntimeError(f"PyNX support diverged ({type(e).__name__}): {str(e).splitlines()[0]}")
            thr = thr / 1.1 if isinstance(e, pc.SupportTooSmall) else thr * 1.1
            sup["threshold_relative"] = thr
            chain = build_chain(pc, segments, sup, beta=float(params.get("beta", 0.9)))
            cdi.set_obj(obj0.copy())
            cdi.set_support(support0.copy())
            cdi.cycle = 0
            t0 = time.perf_counter()
    # Final magnitude projection with the LLK of the last iterate (as PyNX's runner does), then obj2_out.
    last = fftshift(cdi.get_obj()).astype(np.complex64)  # the iterate PyNX's final LLK is computed from
    cdi = pc.FourierApplyAmplitude(calc_llk=True) * cdi
    seconds = time.perf_counter() - t0
    a2 = np.abs(cdi.get_obj()) ** 2
    obj2_out = float(a2[cdi.get_support() == 0].sum() / max(a2.sum(), 1e-30))
    llk = cdi.get_llk(normalized=True)
    raw = cdi.get_llk(normalized=False)
    info = dict(llk_poisson=float(llk[0]), llk_gaussian=float(llk[1]), llk_euclidian=float(llk[2]),
                llk_poisson_free=float(llk[3]), llk_gaussian_free=float(llk[4]), llk_euclidian_free=float(llk[5]),
                llk_poisson_sum=float(raw[0]), llk_poisson_free_sum=float(raw[3]),
                nb_observed_points=int(cdi.nb_observed_points), nb_free_points=int(cdi.nb_free_points or 0),
                obj2_out=obj2_out, support_size=int(cdi.get_support().sum()), seconds=seconds,
                chain_seconds=chain_seconds,
                nb_cycle=int(cdi.cycle), threshold_relative=thr, tries=tries, chain=chain_string(segments), seed=seed)
    info["projected"] = fftshift(cdi.get_obj()).astype(np.complex64)
    return last, fftshift(cdi.get_support() > 0), fftshift(cdi.get_free_pixel_mask()), info


def run_job(arrays, params):
    """Run every run in params["runs"] (default one run) on the arrays; returns (out_arrays, out_info)."""
    import warnings

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # log(0) inside PyNX's masked LLK helper
    pc, version = _import_pynx()
    out, infos = {}, []
    for i, run in enumerate(params.get("runs") or [{}]):
        try:
            obj, support, free, info = _one_run(pc, arrays, params, run)
        except RuntimeError as e:
            if not params.get("keep_going", False):
                raise
            infos.append(dict(error=str(e), seed=int(run.get("seed", 0))))
            continue
        out[f"obj_{i}"], out[f"support_{i}"] = obj, support
        projected = info.pop("projected")
        if params.get("return_projected", False):
            out[f"projected_{i}"] = projected
        out["free_mask"] = free
        if arrays.get("free_mask") is None:  # every run shares the first run's free mask, as in PyNX's runner
            arrays = dict(arrays, free_mask=free)
        info["index"] = i
        infos.append(info)
    return out, dict(runs=infos, pynx_version=version, numpy_version=np.__version__)


def main(argv):
    """Subprocess entry: read JOBDIR/in.npz + params.json, write out.npz + out.json, or error.txt and exit 1."""
    if len(argv) != 2:
        print("usage: pynx_child.py JOBDIR", file=sys.stderr)
        return 2
    job = argv[1]
    try:
        with np.load(os.path.join(job, "in.npz")) as f:
            arrays = {k: f[k] for k in f.files}
        with open(os.path.join(job, "params.json")) as f:
            params = json.load(f)
        out, info = run_job(arrays, params)
        np.savez(os.path.join(job, "out.npz"), **out)
        with open(os.path.join(job, "out.json"), "w") as f:
            json.dump(info, f)
        return 0
    except Exception as e:  # reported to the parent as one line
        msg = f"{type(e).__name__}: {e}".replace("\n", " ")
        with open(os.path.join(job, "error.txt"), "w") as f:
            f.write(msg[:2000])
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
