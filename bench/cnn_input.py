"""Why the CNN paths succeed less on larger patterns: what the network sees from the front end, and where.

Two measurements on detector-sized patterns (physics.detector_sim, oversampling 3-6):

- ``coherence``: on the held-out crystals, the network's coherence (physics.coherence) against the true phase of
  the crop's object on the 64³ grid, for four inputs of the same crystal: the front end's (binned or
  Fourier-resampled crop), the crop Fourier-resampled on every axis, an ideal 64³ pattern of the same object
  (Poisson counts at the same peak), and the native 64³ pattern of bench.cnn_eval (another sampling of the
  crystal). A diagnosis, not a choice: nothing is fitted on these crystals.
- ``matched``: on the held-out crystals, (b) with the crop chosen so that the CNN sees the oversampling of the
  crystal's native 64³ pattern: how much of the gap is the sampling alone.
- ``target``: on the gate's calibration crystals (seeds 5,000,000+, never the evaluation's), (b) and (b+) with the
  front end aiming the CNN's grid at a given oversampling (ReconOptions.cnn_oversampling); the shipped target is
  chosen from these runs.

    python -m bench.cnn_input coherence --size 128 --n 24
    python -m bench.cnn_input matched --size 128 --n 24
    python -m bench.cnn_input target --size 128 --n 20 --cnn-oversampling 3.6
    python -m bench.cnn_input report        # docs/benchmarks.md section
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.cnn_eval import _append, _jsonl, parse_size
from bench.common import model_tag

RESULTS = Path(__file__).parent / "results"
SECTION = "Larger patterns: what the CNN sees from the front end (coherence and target oversampling)"


def _git_rev() -> str:
    try:
        def git(*a):
            return subprocess.run(["git", *a], capture_output=True, text=True, cwd=Path(__file__).parent,
                                  check=True).stdout.strip()

        return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "-uno") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _truth_phase64(sample: dict, fe) -> np.ndarray:
    """The true reciprocal phase on the CNN's grid: the crop's true object cut to 64³ (same voxel size), FFT."""
    from physics.detector_sim import truth_on_crop
    from physics.preprocess import fit_object_to
    from physics.simulate import diffraction

    obj_c, _ = truth_on_crop(sample, fe.crop_offsets, fe.crop_shape)
    return diffraction(fit_object_to(obj_c, (64,) * 3))


def coherence(args) -> None:
    """The four inputs of each held-out crystal (module doc), one JSON line per crystal."""
    import torch

    from bench.cnn_eval import sample_for, test_crystals
    from contract.options import ReconOptions
    from models.predict import load_model
    from physics.coherence import phase_coherence
    from physics.preprocess import to_cnn_grid
    from workers.pipeline import crop_for_cnn

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    out = Path(args.out) / f"cnn_input_{args.size}.jsonl"
    done = _jsonl(out)
    rng = np.random.default_rng(1)
    for seed, params in test_crystals(args.n, 0):
        if seed in done:
            continue
        s = sample_for(seed, params, args.size)
        i_c, m_c, _, fe = crop_for_cnn(s["intensity"], s["mask"], ReconOptions(), predict=model.predict_phase)
        psi = _truth_phase64(s, fe)
        truth = np.angle(psi).astype(np.float32)
        scale = np.float32(fe.photon_scale)
        front = to_cnn_grid(i_c, m_c, fe.cnn_binning, 64) * scale
        fourier = to_cnn_grid(i_c, m_c, (1, 1, 1), 64) * scale
        ideal = np.abs(psi) ** 2
        ideal = rng.poisson(ideal * (front.max() / ideal.max())).astype(np.float32)
        s64 = sample_for(seed, params, "64")

        def coh(x, t=truth):
            return float(phase_coherence(model.predict_phase(x), t, intensity=x))

        _append(out, {"seed": seed, "size": args.size, "model": model_tag(model),
                      "rev": _git_rev(), "crop": list(fe.crop_shape), "binning": list(fe.cnn_binning),
                      "oversampling_cnn": list(fe.oversampling_cnn),
                      "native_oversampling": [float(v) for v in s64["oversampling"]],
                      "frontend": coh(front), "fourier": coh(fourier), "ideal": coh(ideal),
                      "native64": coh(s64["intensity"], s64["phase"])})
        print(f"seed {seed} done", flush=True)


def matched(args) -> None:
    """(b) on the held-out crystals at --size with the crop chosen (crop_size override) so that the CNN sees each
    axis's oversampling of the crystal's native 64³ pattern: how much of the gap to 64³ is the sampling alone."""
    import torch

    from bench.cnn_eval import method_options, run_cnn, sample_for, test_crystals
    from models.predict import load_model
    from physics.errors import InputError
    from physics.preprocess import fft_friendly_size
    from physics.success import is_success

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    out = Path(args.out) / f"cnn_matched_{args.size}.jsonl"
    done = _jsonl(out)
    n = max(parse_size(args.size))
    for seed, params in test_crystals(args.n, 0):
        if seed in done:
            continue
        s, s64 = sample_for(seed, params, args.size), sample_for(seed, params, "64")
        crop = tuple(min(n, fft_friendly_size(int(round(a * 64 / b)))) for a, b in zip(s["oversampling"],
                                                                                      s64["oversampling"]))
        rec = {"seed": seed, "size": args.size, "model": model_tag(model), "rev": _git_rev(),
               "crop": list(crop), "native_oversampling": [float(v) for v in s64["oversampling"]]}
        try:
            r = run_cnn(s, seed, model, replace(method_options("cnn_er"), crop_size=crop))
            rec |= {"success": bool(is_success(r)), "phase_rmse": r["phase_rmse"], "iou": r["iou"],
                    "oversampling_cnn": r["frontend"]["oversampling_cnn"]}
        except InputError as exc:
            rec["error"] = str(exc)
        _append(out, rec)
        print(f"seed {seed}: {rec.get('success')}", flush=True)


def target(args) -> None:
    """(b) and (b+) on the calibration crystals at --size with the CNN's grid aimed at --cnn-oversampling."""
    import torch

    from bench.calibrate_gate import crystals
    from bench.cnn_eval import DETECTOR_OVERSAMPLING, method_options, run_cnn
    from models.predict import load_model
    from physics.detector_sim import detector_sample
    from physics.errors import InputError
    from physics.success import is_success

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    label = "default" if args.cnn_oversampling is None else f"{args.cnn_oversampling:g}"
    out = Path(args.out) / f"cnn_target_{args.size}_{label}.jsonl"
    done = _jsonl(out)
    shape = parse_size(args.size)
    for seed, params in crystals(args.n, 0):
        if seed in done:
            continue
        s = detector_sample(seed, shape, DETECTOR_OVERSAMPLING, params)
        rec = {"seed": seed, "size": args.size, "phase_range": float(s["phase_range"]),
               "model": model_tag(model), "rev": _git_rev(), "target": args.cnn_oversampling}
        for m in args.methods:
            o = method_options(m)
            if args.cnn_oversampling is not None:
                o = replace(o, cnn_oversampling=args.cnn_oversampling)
            t = time.perf_counter()
            try:
                r = run_cnn(s, seed, model, o)
            except InputError as exc:
                rec[m] = {"error": str(exc)}
                continue
            rec[m] = {"success": bool(is_success(r)), "phase_rmse": r["phase_rmse"], "iou": r["iou"],
                      "wall_s": time.perf_counter() - t, "crop": r["frontend"]["crop_shape"],
                      "oversampling_cnn": r["frontend"]["oversampling_cnn"]}
        _append(out, rec)
        print(f"seed {seed}: " + ", ".join(f"{m} {rec[m].get('success')}" for m in args.methods), flush=True)


def _target_decision(tfiles: list[Path]) -> list[str]:
    """What each explicit target changed against the default rule on the same crystals, and what ships."""
    from physics.preprocess import CNN_TARGET_POSITION

    runs = {f.stem: list(_jsonl(f).values()) for f in tfiles}
    base = next((rs for name, rs in runs.items() if name.endswith("_default")), None)
    if not base:
        return []
    out = []
    for name, rs in runs.items():
        if not rs or rs[0]["target"] is None:
            continue
        seeds = {r["seed"] for r in rs} & {r["seed"] for r in base}
        b = {r["seed"]: r for r in base}
        t = {r["seed"]: r for r in rs}

        def n(d, m):
            return sum(bool(d[s].get(m, {}).get("success")) for s in seeds)

        vol = np.median([np.prod(t[s]["cnn_er"]["crop"]) / np.prod(b[s]["cnn_er"]["crop"]) for s in seeds])
        out.append(f"- target {rs[0]['target']:g} against the default rule on the same {len(seeds)} crystals: (b) "
                   f"{n(t, 'cnn_er') - n(b, 'cnn_er'):+d}, (b+) {n(t, 'cnn_raar_er') - n(b, 'cnn_raar_er'):+d} "
                   f"successes, median crop volume × {vol:.2f} (the refinement's resolution given up).")
    out.append(f"- Shipped: CNN_TARGET_POSITION = {CNN_TARGET_POSITION:g} of the training range on a log scale (the "
               "range's geometric centre), with ReconOptions.cnn_oversampling as the override: no target tried gained "
               "enough successes to pay for the resolution it gives up.")
    return out + [""]


def _matched_lines(rs: list[dict], size: str, out: Path) -> list[str]:
    """(b) with the native sampling matched, beside (b) at the size and at 64³ on the same crystals."""
    model = rs[0]["model"]
    at64 = _jsonl(out / f"eval_cnn_er_{model}.jsonl")
    atsize = _jsonl(out / f"eval_cnn_er_{model}_{size}.jsonl")
    seeds = [r["seed"] for r in rs if r["seed"] in at64 and r["seed"] in atsize]
    if not seeds:
        return []
    from physics.success import is_success

    m = {r["seed"]: r for r in rs}
    k64 = sum(is_success(at64[s]) for s in seeds)
    ks = sum(is_success(atsize[s]) for s in seeds)
    km = sum(m[s]["success"] for s in seeds)
    return [f"**The sampling alone** ({len(seeds)} held-out crystals; `.venv/bin/python -m bench.cnn_input matched "
            f"--size {size} --n {len(seeds)}`): (b) cnn-er with the crop chosen so that the CNN sees each axis's "
            f"oversampling of the crystal's native 64³ pattern succeeds on {km}/{len(seeds)}, against {ks}/{len(seeds)} "
            f"with the front end's own crop at {size} and {k64}/{len(seeds)} on the native 64³ patterns "
            "(bench/results/eval_cnn_er_*). Part of the gap is which sampling of the crystal the network sees, not a "
            "loss in the front end.", ""]


def report(args) -> str:
    from bench.common import machine

    lines = []
    for f in sorted(Path(args.out).glob("cnn_input_*.jsonl")):
        rs = list(_jsonl(f).values())
        if not rs:
            continue
        size = rs[0]["size"]
        keys = ("frontend", "fourier", "ideal", "native64")
        med = {k: float(np.median([r[k] for r in rs])) for k in keys}
        mean = {k: float(np.mean([r[k] for r in rs])) for k in keys}
        lines += [f"**What the network sees at {size}** ({len(rs)} held-out 2π–5π crystals, model {rs[0]['model']}; "
                  f"`.venv/bin/python -m bench.cnn_input coherence --size {size} --n {len(rs)}`): coherence of the "
                  "predicted phase against the true phase of the crop's object on the 64³ grid.", "",
                  "| input | median | mean |", "|---|---:|---:|",
                  f"| the front end's (binned or Fourier-resampled crop) | {med['frontend']:.3f} | "
                  f"{mean['frontend']:.3f} |",
                  f"| the crop Fourier-resampled on every axis | {med['fourier']:.3f} | {mean['fourier']:.3f} |",
                  f"| an ideal 64³ pattern of the same object (Poisson, same peak) | {med['ideal']:.3f} | "
                  f"{mean['ideal']:.3f} |",
                  f"| the native 64³ pattern of the crystal (bench.cnn_eval, another sampling) | {med['native64']:.3f} | "
                  f"{mean['native64']:.3f} |", "",
                  f"Reading: the front end's input scores a mean {mean['frontend']:.3f} against {mean['ideal']:.3f} for "
                  f"an ideal 64³ pattern of the same object, and binning against Fourier resampling differ by "
                  f"{abs(mean['frontend'] - mean['fourier']):.3f}: the crop and the resampling lose nothing the network "
                  f"uses. The native 64³ pattern is another sampling of the crystal (oversampling 2.2–4 drawn per "
                  f"axis, where the front end aims the CNN's grid at the range's centre), not the same input.", ""]
    for f in sorted(Path(args.out).glob("cnn_matched_*.jsonl")):
        rs = [r for r in _jsonl(f).values() if "error" not in r]
        if not rs:
            continue
        size = rs[0]["size"]
        lines += _matched_lines(rs, size, Path(args.out))
    tfiles = sorted(Path(args.out).glob("cnn_target_*.jsonl"))
    if tfiles:
        lines += ["**Where to aim the CNN's grid** (the gate's calibration crystals, seeds 5,000,000+, 2π–5π, as a "
                  "detector writes them; `.venv/bin/python -m bench.cnn_input target --size SIZE --n N "
                  "[--cnn-oversampling X]`): success of (b) and (b+) by the oversampling the front end aims the "
                  "64³ grid at (default: the shipped rule).", "",
                  "| size | target | code | crystals | (b) cnn-er | (b+) cnn-raar-er | median oversampling seen | "
                  "median (b) phase RMSE (rad) | median crop (voxels) |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for f in tfiles:
            rs = list(_jsonl(f).values())
            if not rs:
                continue
            cells = []
            for m in ("cnn_er", "cnn_raar_er"):
                v = [r[m] for r in rs if m in r and "error" not in r[m]]
                cells.append(f"{sum(x['success'] for x in v)}/{len(v)}" if v else "–")
            ok_b = [r for r in rs if "cnn_er" in r and "error" not in r["cnn_er"]]
            seen = [np.median(r["cnn_er"]["oversampling_cnn"]) for r in ok_b]
            label = f.stem.removeprefix(f"cnn_target_{rs[0]['size']}_")
            tgt = rs[0]["target"] if rs[0]["target"] is not None else f"default ({label})"
            lines.append(f"| {rs[0]['size']} | {tgt} | {rs[0]['rev']} | {len(rs)} | "
                         f"{cells[0]} | {cells[1]} | {np.median(seen) if seen else float('nan'):.2f} | "
                         f"{np.median([r['cnn_er']['phase_rmse'] for r in ok_b]) if ok_b else float('nan'):.2f} | "
                         f"{np.median([np.prod(r['cnn_er']['crop']) for r in ok_b]) if ok_b else float('nan'):.0f} |")
        lines += ["", "The phase RMSE is judged on each variant's own crop: a smaller crop has a coarser grid (lower "
                  "resolution), which by itself lowers the RMSE; the crop volume says what resolution was given up.",
                  ""]
        lines += _target_decision(tfiles)
    lines.append(f"Machine: {machine()}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("coherence", help="the network's coherence on four inputs of each held-out crystal")
    t = sub.add_parser("target", help="(b) and (b+) on calibration crystals with a given CNN-grid oversampling")
    mt = sub.add_parser("matched", help="(b) on held-out crystals with the native 64³ sampling matched")
    for p in (c, t, mt):
        p.add_argument("--size", default="128", help="pattern size, as bench.cnn_eval --size (default 128)")
        p.add_argument("--n", type=int, default=24, help="crystals (2π–5π)")
        p.add_argument("--model", default=None, help="weights (default: the shipped model)")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--out", default=str(RESULTS), help="results folder (default bench/results)")
    t.add_argument("--cnn-oversampling", type=float, default=None,
                   help="the oversampling the front end aims the 64³ grid at (default: the shipped rule)")
    t.add_argument("--methods", nargs="+", default=["cnn_er", "cnn_raar_er"], choices=["cnn_er", "cnn_raar_er"])
    from bench.common import add_report_parser, dispatch

    add_report_parser(sub).add_argument("--out", default=str(RESULTS), help="results folder (default bench/results)")
    return dispatch(ap.parse_args(argv), {"coherence": coherence, "target": target, "matched": matched}, SECTION,
                    report)


if __name__ == "__main__":
    sys.exit(main())
