"""`bcdi-recon phase`: classic iterative phase retrieval of one measured 3D intensity, written as a CXI file."""
from __future__ import annotations

import argparse
import re
import sys
import time

DEFAULT_RECIPE = "HIO**400,RAAR**1000,ER**300"

HELP = "phase a 3D Bragg CDI intensity with HIO/RAAR/ER + shrink-wrap (built-in engine or PyNX) -> CXI"

DESCRIPTION = f"""\
Retrieve the complex object of a 3D Bragg CDI intensity by iterative phase retrieval (PyNX-style operators
with a shrink-wrap support update) and write it to a CXI file readable by PyNX and silx.

INPUT is a 3D intensity (photon counts >= 0), centred on the Bragg peak, axes (z, y, x) =
(rocking, detector row, detector column), at least 16 voxels per axis:
  data.npy                  a 3D array
  data.npz[:NAME]           the array NAME, or the only array, or 'intensity'
  data.tif / data.tiff      a 3D TIFF stack
  data.cxi[:/path]          default entry_1/data_1/data (PyNX data files, our results' image_2)
  data.h5[:/path]           a dataset path; without it, the only 3D dataset of the file
--mask uses the same forms: nonzero = masked voxel (detector gap, hot pixel), left free by the fit.

The recipe is a comma-separated chain applied left to right, e.g. "{DEFAULT_RECIPE}" (the default:
400 HIO, then 1000 RAAR, then 300 ER cycles; PyNX's BCDI practice), with the support updated every
--update-period cycles (threshold relative to the rms of |object| in the support; with several runs
each run draws its threshold in the --support-threshold range). Runs start from random objects;
the --keep runs with the lowest free log-likelihood are combined into the first mode.
One run of the default recipe at 64³ took 98 s on a busy 2-core CPU (~25 ms per cycle of CPU time);
use --device cuda where there is a GPU, a shorter --recipe for a quick look. The benchmarks' standard
(like PyNX practice) is --runs 20 --keep 5.

The CXI holds the object on the full grid of the input (centred), the support, the input intensity
and mask, the options and the results (LLK, free LLK, obj2_out, timings) under
entry_1/image_1/process_1, like PyNX's result files."""

EPILOG = """\
examples:
  bcdi-recon phase crystal.npz --out crystal.cxi
  bcdi-recon phase scan.h5:/entry/data --mask gaps.npy --out scan.cxi --runs 20 --keep 5 --previews png/
  bcdi-recon phase data.tif --out quick.cxi --recipe "RAAR**200,ER**100" --device cuda
  bcdi-recon phase data.npy --out ref.cxi --engine pynx          # same recipe run by PyNX (CPU)"""


def _thresholds(text: str) -> tuple[float, float]:
    """Parse '--support-threshold a,b' (or a single value) into 0 < a <= b < 1."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        parts = parts * 2
    try:
        a, b = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'a,b' or 'a' with numbers, got {text!r}") from None
    if not (0.0 < a <= b < 1.0):
        raise argparse.ArgumentTypeError(f"expected 0 < a <= b < 1, got {text!r}")
    return a, b


def register(subparsers) -> None:
    """Add the `phase` subcommand."""
    p = subparsers.add_parser("phase", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT", help="3D intensity: FILE[.npy|.npz|.tif|.cxi|.h5][:KEY or :/path]")
    p.add_argument("--out", required=True, metavar="OUT.cxi", help="output CXI file (its directory must exist)")
    p.add_argument("--mask", metavar="MASK",
                   help="mask in the same forms as INPUT, same shape; nonzero = masked (default: a 'mask' array "
                        "stored with the intensity in the same .npz or CXI file, if any)")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, metavar="R",
                   help=f"algorithm chain, applied left to right (default {DEFAULT_RECIPE})")
    p.add_argument("--runs", type=int, default=1, metavar="N", help="independent runs from random starts (default 1)")
    p.add_argument("--keep", type=int, default=None, metavar="K",
                   help="runs kept (lowest free LLK) and combined into modes (default: min(N, 5))")
    p.add_argument("--support-threshold", type=_thresholds, default=(0.15, 0.40), metavar="A,B",
                   help="relative shrink-wrap threshold, drawn per run in [A, B], or one value (default 0.15,0.40)")
    p.add_argument("--update-period", type=int, default=20, metavar="K",
                   help="support update every K cycles (default 20; PyNX's default is 50)")
    p.add_argument("--border-n", type=int, default=0, metavar="n",
                   help="only re-threshold a band of n voxels around the support border (default 0 = everywhere)")
    p.add_argument("--engine", default="builtin", metavar="NAME",
                   help="builtin (our torch engine, default) or pynx (Debian python3-pynx, CPU)")
    p.add_argument("--device", default="auto", metavar="DEV",
                   help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N; cuda: builtin engine only "
                        "(default %(default)s)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed for starts/thresholds (default 0)")
    p.add_argument("--previews", metavar="DIR",
                   help="also write PNG previews (intensity + reciprocal phase, modulus + phase) into DIR "
                        "(default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    p.set_defaults(func=run)


def _check_options(args):
    """Validate every option before any heavy work; returns (out Path, previews Path|None, nb_keep)."""
    from pathlib import Path

    from physics.errors import InputError
    from workers.io.formats import check_output_path

    out = check_output_path(args.out, suffixes=(".cxi", ".h5"), what="CXI output")
    previews = None
    if args.previews:
        previews = Path(args.previews)
        if previews.exists() and not previews.is_dir():
            raise InputError(f"--previews {previews}: exists and is not a directory")
        if not previews.parent.is_dir():
            raise InputError(f"--previews {previews}: parent directory {previews.parent} does not exist")
    if args.runs < 1:
        raise InputError(f"--runs must be >= 1, got {args.runs}")
    keep = min(args.runs, 5) if args.keep is None else args.keep
    if not 1 <= keep <= args.runs:
        raise InputError(f"--keep must be between 1 and --runs ({args.runs}), got {keep}")
    if args.update_period < 1:
        raise InputError(f"--update-period must be >= 1, got {args.update_period}")
    if args.border_n < 0:
        raise InputError(f"--border-n must be >= 0, got {args.border_n}")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    if args.engine not in ("builtin", "pynx"):
        raise InputError(f"unknown engine {args.engine!r}: choose builtin or pynx")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        raise InputError(f"unknown device {args.device!r}: choose auto, cpu, cuda or cuda:N")
    if not args.recipe.strip():
        raise InputError("--recipe is empty")
    return out, previews, keep


def _check_engine(args):
    """Check the engine, device and recipe can run here; returns the physics.phasing Engine to run."""
    from physics.errors import InputError

    if args.engine == "pynx":
        if args.device == "auto":
            args.device = "cpu"  # PyNX runs on the CPU here
        if args.device != "cpu":
            raise InputError("--engine pynx runs on the CPU here; use --device cpu (or the builtin engine on CUDA)")
        from workers.engines import pynx_engine

        if not pynx_engine.pynx_available():
            raise InputError(f"--engine pynx: PyNX is not installed for {pynx_engine.PYNX_PYTHON} "
                             f"(run {pynx_engine.INSTALL_HINT})")
        _check_recipe(args.recipe)
        if args.border_n and not args.quiet:
            print("bcdi-recon: warning: --border-n is ignored by PyNX's CPU back-end (the whole support is "
                  "re-thresholded)", file=sys.stderr)
        return pynx_engine.PyNXEngine()
    from physics.phasing import BuiltinEngine, resolve_device

    args.device = str(resolve_device(args.device))  # auto -> cuda:0 or cpu; InputError when CUDA is absent
    _check_recipe(args.recipe)
    return BuiltinEngine()


def _check_recipe(recipe: str) -> None:
    """Reject a malformed recipe before reading data (the engine's parser raises a one-line InputError)."""
    from physics.phasing import parse_recipe

    parse_recipe(recipe)


def _peak_warning(iobs) -> str | None:
    """A warning when the maximum is far from the array centre (input should be centred on the Bragg peak)."""
    import numpy as np

    peak = np.unravel_index(int(np.argmax(iobs)), iobs.shape)
    off = [abs(int(p) - n // 2) for p, n in zip(peak, iobs.shape)]
    if any(o > n // 4 for o, n in zip(off, iobs.shape)):
        return (f"warning: the intensity maximum is at {tuple(int(p) for p in peak)}, far from the centre "
                f"{tuple(n // 2 for n in iobs.shape)}; the input should be centred on the Bragg peak")
    return None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _scalar_items(d: dict) -> dict:
    import numpy as np

    out = {}
    for k, v in d.items():
        if isinstance(v, (bool, int, float, str, np.generic)) or (isinstance(v, np.ndarray) and v.ndim == 0):
            out[k] = v.item() if isinstance(v, (np.generic, np.ndarray)) else v
    return out


def _summarise(result) -> dict:
    """Results for the CXI: the best kept run's numbers at top level (PyNX style), every run's as arrays."""
    import numpy as np

    runs = list(result.runs or [])
    kept = [int(k) for k in (result.kept or [])]
    best = runs[kept[0]] if kept else (runs[0] if runs else {})
    res: dict = {k: v for k, v in _scalar_items(best).items() if k not in ("run", "kept", "status")}
    if kept:
        res["best_run"] = kept[0]
        res["kept_runs"] = np.asarray(kept)
    if len(runs) > 1:
        per_run: dict = {}
        for r in runs:
            for k, v in _scalar_items(r).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    per_run.setdefault(k, []).append(float(v))
        res["runs"] = {k: np.asarray(v) for k, v in per_run.items() if len(v) == len(runs)}
    if runs:
        res["run_status"] = ",".join(str(r.get("status", "?")) for r in runs)
    warnings = list(getattr(result, "warnings", None) or [])
    if warnings:
        res["warnings"] = "; ".join(warnings)
    w = getattr(result, "first_mode_weight", None)
    if w is not None:
        res["first_mode_weight"] = float(w)
    return res


def _saved_object_llk(iobs, mask, obj, support, free_mask) -> dict:
    """LLK figures of the object actually written (the first mode), next to the best run's: prefixed 'mode_'."""
    from physics.phasing import CDI

    cdi = CDI(iobs, mask=mask, obj=obj, support=support, free_mask=free_mask)
    llk = cdi.compute_llk()
    keys = ("llk_poisson", "llk_poisson_free", "r_factor", "r_factor_free", "obj2_out")
    return {f"mode_{k}": float(llk[k]) for k in keys if k in llk}


NOTE = ("image_1/data is the first mode of the kept runs (the run itself when one is kept); "
        "process_1/results/llk_*, obj2_out, ... are the best run's, results/mode_* those of the saved object.")


def run(args) -> int:
    """Validate, read, phase, write CXI (+ previews) atomically; returns the exit code."""
    out, previews_dir, keep = _check_options(args)

    from workers.io.formats import companion_mask_spec, read_intensity, read_mask

    t0 = time.perf_counter()
    iobs = read_intensity(args.input)  # cheap checks and reading first, the engine (torch) import after
    mask_spec = args.mask or companion_mask_spec(args.input)
    mask = read_mask(mask_spec, iobs.shape) if mask_spec else None
    if mask is not None and not args.mask and not mask.any():
        mask, mask_spec = None, None  # the stored mask masks nothing
    if mask is not None and not args.mask and not args.quiet:
        print(f"bcdi-recon: using the mask stored with the data: {mask_spec} ({int(mask.sum())} masked voxels)",
              file=sys.stderr)
    warning = _peak_warning(iobs)
    if warning and not args.quiet:
        print(f"bcdi-recon: {warning}", file=sys.stderr)
    t_read = time.perf_counter()
    engine = _check_engine(args)

    from tqdm import tqdm

    bar = tqdm(total=None, desc=f"phase ({args.engine}, {args.runs} run{'s' if args.runs > 1 else ''})",
               unit="cycle", disable=True if args.quiet else None, file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        if done > bar.n:
            bar.update(done - bar.n)  # update() rate-limits redraws (mininterval)

    from physics.phasing import PhaseConfig, SupportTooLarge, SupportTooSmall, phase_runs

    if args.engine == "pynx":
        from workers.engines.pynx_engine import PyNXError as pynx_error
    else:
        pynx_error = ()  # an empty tuple matches no exception: only PyNX's engine raises PyNXError
    config = PhaseConfig(recipe=args.recipe, nb_run=args.runs, nb_keep=keep,
                         threshold_range=tuple(args.support_threshold), seed=args.seed, device=args.device,
                         update_period=args.update_period, border_n=args.border_n)
    t_start = time.perf_counter()
    try:
        result = phase_runs(iobs, mask=mask, config=config, engine=engine, progress=progress)
    except (SupportTooSmall, SupportTooLarge) as e:
        print(f"bcdi-recon: error: phasing failed: {_one_line(e)} (try another --support-threshold or more "
              f"--runs)", file=sys.stderr)
        return 1
    except pynx_error as e:
        print(f"bcdi-recon: error: {_one_line(e)}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    t_phase = time.perf_counter()
    if not args.quiet:
        for w in getattr(result, "warnings", None) or []:
            print(f"bcdi-recon: warning: {w}", file=sys.stderr)

    import numpy as np

    from workers.io.cxi import write_cxi

    obj = np.asarray(result.obj)
    support = np.asarray(result.support)
    results = _summarise(result)
    results.update(_saved_object_llk(iobs, mask, obj, support, getattr(result, "free_mask", None)))
    results["timings"] = {"read_s": t_read - t0, "engine_setup_s": t_start - t_read,
                          "phasing_s": t_phase - t_start}
    process = {
        "input": args.input, "mask": mask_spec, "recipe": args.recipe, "engine": args.engine,
        "device": args.device, "seed": args.seed, "nb_run": args.runs, "nb_run_keep": keep,
        "support_threshold": np.asarray(args.support_threshold), "support_update_period": args.update_period,
        "support_update_border_n": args.border_n,
    }
    free_mask = getattr(result, "free_mask", None)
    from physics.shape import crystal_shape, shape_definition

    shape = crystal_shape(obj, support)  # the crystal's shape, as `reconstruct` writes it
    process.update({f"shape_{k}": v for k, v in shape_definition(shape, support).items()})
    write_cxi(out, obj, support, iobs=iobs, mask=mask, process=process, results=results, free_mask=free_mask,
              note=NOTE, derived={"shape": (shape, "")},
              command="bcdi-recon " + " ".join(sys.argv[1:]) if sys.argv else None)
    written = {}
    if previews_dir is not None:
        from workers.io.previews import write_previews

        written = write_previews(previews_dir, iobs=iobs, obj=obj, support=shape, mask=mask, stem=out.stem,
                                 title=f"{out.name}: {args.engine}, {args.recipe}")
    if not args.quiet:
        llk = results.get("llk_poisson")
        free = results.get("llk_poisson_free")
        parts = [f"wrote {out} on {args.device}", f"{int(np.count_nonzero(support))} support voxels"]
        if llk is not None:
            parts.append(f"LLK {llk:.4g}" + (f" (free {free:.4g})" if free is not None else "")
                         + (" best run" if len(result.kept or []) > 1 else ""))
        if len(result.kept or []) > 1 and "mode_llk_poisson" in results:
            parts.append(f"saved first mode ({results.get('first_mode_weight', float('nan')):.0%} of "
                         f"{len(result.kept)} runs): LLK {results['mode_llk_poisson']:.4g} "
                         f"(free {results.get('mode_llk_poisson_free', float('nan')):.4g})")
        parts.append(f"{t_phase - t_start:.1f} s phasing")
        if written:
            parts.append("previews " + ", ".join(str(p) for p in written.values()))
        print("; ".join(parts))
    return 0
