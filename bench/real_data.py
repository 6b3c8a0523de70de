"""Every method on measured (and detector-sized) patterns: (b), (b+), the standard recipe with both engines, adaptive.

Sources (``--sources``, SOURCES below): the real APS 34-ID-C 64³ pattern (3D-CDI-NN example), and a real-size
synthetic ID01 scan (128 frames x 516x516 Maxipix of a simulated strained crystal, with the detector gaps and hot
pixels) written as a BLISS file and read back through workers.io.id01.load_scan. Every method runs through the
same front end (workers.pipeline.crop_for_cnn: the crop is chosen from the measured oversampling) and is scored on
that crop with the same free voxels: LLK, free LLK, R-factor, support size, obj2_out, wall time; on the synthetic
scan also against the truth (support volume ratio, phase RMSE; physics.detector_sim.truth_on_crop). One JSON line
per (source, method, runs) in bench/results/real_data.jsonl: a rerun only computes the missing rows and those
whose front-end decisions (crop, CNN grid, photon scale) differ from what the front end decides now.

    .venv/bin/python bench/real_data.py [--sources aps64 id01_sim] [--nb-run aps64=20 id01_sim=4]
The zero-filled (masked) patch of the APS file is the largest connected block of zero counts; it is masked.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cnn_eval import PRE_RECIPE, STANDARD, _append, on_bound  # noqa: E402 - the same (b+) and (c) as the simulated runs
from bench.common import ROOT, command_line, machine, write_section  # noqa: E402

SECTION = "Real measured pattern: CNN + ER against the standard recipe"
OUT = ROOT / "bench" / "results" / "real_data.jsonl"
PREVIEWS = ROOT / "docs" / "real_data"
METHODS = ("cnn_er", "cnn_raar_er", "standard_builtin", "standard_pynx", "adaptive")
STANDARD_METHODS = ("standard_builtin", "standard_pynx")
ID01_SEED = 2_000_000  # the first held-out crystal (models.data.TEST_SEED0): never seen in training
ID01_PEAK = (64, 290, 300)  # frame, row, column: the Maxipix gap (rows/columns 255-260) crosses the pattern
TARGET_VOLUME = (0.8, 1.25)
TARGET_PHASE_RMSE = 0.5
TARGET_OBJ2_OUT = 0.10
TARGET_LLK_REL = 0.10

# Registry packages of the BCDI field opened for an openly licensed real measured pattern (pip download --no-deps):
# what each ships besides code. None has one; the section says so.
REGISTRY_CHECKED = (
    ("bcdi 0.2.3 (PyPI, CeCILL-B)", "examples/S11_modes_*.h5: PyNX reconstructions (real-space modes, 91x116x113), "
                                    "not diffraction data; a post-processed .vtk"),
    ("cdiutils 0.2.1 (PyPI)", "colour maps, notebooks and a SLURM template; no data"),
    ("cohere-core 4.5.4 (PyPI)", "code only"),
    ("cohere-ui 4.5.5 (PyPI)", "GUI text files only"),
    ("cdi-stools 0.2.2 (PyPI)", "a logo only (BCDI simulation code)"),
    ("xrayutilities 1.8.0 (PyPI)", "materials database; no CDI data"),
    ("pynx (PyPI)", "an unrelated nginx tool; PyNX itself is Debian's python3-pynx 2025.1, which ships no data"),
    ("bonsu 3.7.5 (PyPI)", "sdist only, its build needs Python < 3.11: not opened"),
    ("cohere (PyPI)", "an unrelated LLM client"),
)


def find_shared() -> Path:
    """The shared data folder: the first `shared/` beside the repository or one of its parents (worktrees)."""
    for base in (ROOT, *ROOT.parents):
        if (base / "shared" / "data").is_dir():
            return base / "shared"
    return ROOT.parent / "shared"


@dataclass(frozen=True)
class Source:
    """One pattern of the benchmark: how to load it (-> intensity, mask, extras) and what it is, with its licence."""

    name: str
    label: str
    licence: str
    load: Callable[[], dict]
    nb_run: int  # standard runs per engine (default)


def zero_patch_mask(intensity):
    """The detector's zero-filled patch: the largest connected region of exact zeros (real zero counts are small
    scattered regions at high q)."""
    from scipy import ndimage

    lab, n = ndimage.label(intensity == 0)
    if n == 0:
        return np.zeros(intensity.shape, bool)
    sizes = ndimage.sum(np.ones_like(lab), lab, range(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


def load_aps64() -> dict:
    """The APS 34-ID-C 64³ pattern (tif) with its zero-filled patch masked."""
    import tifffile

    path = find_shared() / "data" / "aps_34idc_crystal_64" / "ft_crop_64.tif"
    iobs = tifffile.imread(path).astype("float32")
    mask = zero_patch_mask(iobs)
    return {"intensity": iobs, "mask": mask, "truth": None,
            "note": f"`{path.relative_to(find_shared().parent)}` (64³, peak {iobs.max():.3g} counts, "
                    f"{int(mask.sum())} voxels of its zero-filled patch masked)"}


def id01_frames(seed: int = ID01_SEED, peak_at=ID01_PEAK, n_frames: int = 128, n_hot: int = 12):
    """(frames int32 (n_frames, 516, 516), sample, offset of the sample's pattern in the frames): the held-out
    crystal of ``seed`` as physics.detector_sim writes it (128 x 256 x 256 at oversampling 3-6) on a Maxipix stack
    with a Poisson background of 0.2, zero-count gap pixels (rows and columns 255-260) and hot pixels."""
    from physics.detector_sim import detector_sample

    s = detector_sample(seed, (n_frames, 256, 256), (3.0, 6.0))
    rng = np.random.default_rng(seed)
    frames = rng.poisson(0.2, (n_frames, 516, 516)).astype(np.int32)
    off = (0, peak_at[1] - 128, peak_at[2] - 128)
    frames[:, off[1]:off[1] + 256, off[2]:off[2] + 256] += np.asarray(s["intensity"], np.int32)
    frames[:, 255:261, :] = 0  # the gap between the 2x2 chips
    frames[:, :, 255:261] = 0
    rows, cols = rng.integers(20, 240, n_hot), rng.integers(20, 496, n_hot)
    frames[:, rows, cols] += rng.integers(2000, 60000, n_hot).astype(np.int32)  # fire in every frame
    return frames, s, off


def load_id01_sim(seed: int = ID01_SEED) -> dict:
    """The synthetic ID01 scan written as a BLISS file in a temporary folder and read back by load_scan."""
    from physics.detector_sim import truth_on_crop
    from workers.io.id01 import load_scan, write_bliss_scan

    frames, sample, off = id01_frames(seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_bliss_scan(tmp, "SimCrystal", "0001", frames, energy_eV=9000.0, distance_m=1.0)
        iobs, mask, meta = load_scan(path, "1.1")

    def truth(fe):
        local = [o - s for o, s in zip(fe.crop_offsets, off)]
        if min(local) < 0 or any(lo + c > n for lo, c, n in zip(local, fe.crop_shape, sample["intensity"].shape)):
            raise ValueError(f"the crop {fe.crop_shape} at {fe.crop_offsets} leaves the simulated pattern")
        return truth_on_crop(sample, local, fe.crop_shape)

    ov = " x ".join(f"{v:.2f}" for v in sample["oversampling"])
    return {"intensity": iobs, "mask": mask, "truth": truth,
            "note": f"BLISS scan 1.1 (mpx1x4, {iobs.shape[0]} x {iobs.shape[1]} x {iobs.shape[2]}) read by "
                    f"workers.io.id01.load_scan: held-out crystal seed {seed} (physics.detector_sim 128 x 256 x 256, "
                    f"true oversampling {ov}) at frame/row/column {ID01_PEAK}, {int(mask[0].sum())} pixels per frame "
                    f"masked (gaps + hot pixels found by the loader)"}


SOURCES = {
    "aps64": Source("aps64", "APS 34-ID-C 64³ crystal (3D-CDI-NN example, real measurement)",
                    "Argonne (UChicago Argonne, LLC) 3-clause BSD-style open source licence, "
                    "shared/data/aps_34idc_crystal_64/LICENSE.txt", load_aps64, 20),
    "id01_sim": Source("id01_sim", "synthetic ID01 scan, 128 frames x 516x516 Maxipix (simulated, ground truth)",
                       "generated by this project (no third-party data)", load_id01_sim, 4),
}


def parse_runs(items: list[str] | None) -> dict[str, int]:
    """`--nb-run aps64=20 id01_sim=4` (or one number for every source) -> {source: runs}."""
    out = {k: s.nb_run for k, s in SOURCES.items()}
    for item in items or []:
        if "=" not in item:
            out = {k: int(item) for k in out}
            continue
        key, value = item.split("=", 1)
        if key not in SOURCES:
            raise SystemExit(f"unknown source {key!r}: use one of {', '.join(SOURCES)}")
        out[key] = int(value)
    return out


def _data_figures(obj, support, i_crop, m_crop, free) -> dict:
    """The data-side figures of one object on the crop grid (physics.metrics.data_metrics, same free voxels)."""
    from physics.metrics import data_metrics

    d = data_metrics(obj, i_crop, mask=m_crop, free_mask=free, support=support)
    return {"llk": float(d["llk_poisson"]), "llk_free": float(d["llk_poisson_free"]),
            "r_factor": float(d["r_factor"]), "obj2_out": float(d["obj2_out"]), "support": int(np.sum(support))}


def _truth_figures(obj, support, truth) -> dict:
    from physics.metrics import compare_to_truth

    t_obj, t_sup = truth
    m = compare_to_truth(obj, t_obj, truth_support=t_sup, recon_support=support)
    return {"volume_ratio_truth": float(m["volume_ratio"]), "phase_rmse": float(m["phase_rmse"]),
            "iou": float(m["iou"])}


def run_method_on(method: str, data: dict, crop: tuple, model, nb_run: int, nb_keep: int) -> list[tuple]:
    """One method on one source: [(row name, obj, support, extra dict, wall s)] on the crop grid."""
    from physics.phasing import PhaseConfig, phase_runs
    from workers.strategy import StrategyOptions, run_method

    i_crop, m_crop, free = crop
    if method in ("cnn_er", "cnn_raar_er", "adaptive"):
        name = {"cnn_er": "cnn-er", "cnn_raar_er": "cnn-raar-er", "adaptive": "adaptive"}[method]
        t = time.perf_counter()
        res = run_method(name, data["intensity"], data["mask"], model.predict_phase, StrategyOptions(),
                         free_mask=free)
        wall = time.perf_counter() - t
        c = res.confidence
        extra = {"status": c["status"], "winner": c["winner"], "nb_candidates": c["nb_candidates"],
                 "recipe": res.result.recipe, "budget_exhausted": c["budget_exhausted"],
                 "reasons": list(c["reasons"]), "thresholds": c["thresholds"], "gate": c["gate"]}
        return [(method, res.result.obj, res.result.support, extra, wall)]
    from workers.engines.pynx_engine import PyNXEngine

    engine = PyNXEngine() if method == "standard_pynx" else None
    cfg = PhaseConfig(recipe=STANDARD, nb_run=nb_run, nb_keep=min(nb_keep, nb_run), seed=0, num_threads=1)
    t = time.perf_counter()
    res = phase_runs(i_crop, mask=m_crop, config=cfg, engine=engine, free_mask=free)
    wall = time.perf_counter() - t
    extra = {"nb_run": nb_run, "nb_kept": len(res.kept), "first_mode_weight": float(res.first_mode_weight),
             "failed": sum(1 for r in res.runs if r.get("status") != "ok")}
    return [(method, res.obj, res.support, extra, wall),
            (method + "_best", res.best_obj, res.support, extra, wall)]


def run_key(method: str, nb_run: int, pynx_run: int | None) -> int | None:
    """The number of standard runs a method's cached row is keyed by (None for the CNN paths and adaptive)."""
    if method == "standard_pynx":
        return nb_run if pynx_run is None else pynx_run
    return nb_run if method in STANDARD_METHODS else None


def _done() -> dict:
    if not OUT.exists():
        return {}
    recs = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    return {(r["source"], r["method"], r.get("nb_run")): r for r in recs}


def gate_stands(row: dict, i_crop, m_crop, fe) -> bool:
    """Whether a cached row still stands under today's gate: always for a method whose result the gate does not
    steer; for adaptive (the gate picks when to stop) only when it recorded today's limits for its pattern and a
    support ratio against today's autocorrelation bound (workers.strategy.autocorrelation_bound). Adaptive rows
    from before either change rerun."""
    if row.get("method") != "adaptive":
        return True
    from workers.strategy import StrategyOptions, autocorrelation_bound, thresholds_for

    if row.get("thresholds") != thresholds_for(StrategyOptions().thresholds, fe).as_dict():
        return False
    return on_bound(row.get("gate") or {}, autocorrelation_bound(i_crop, m_crop, fe))


def run_source(src: Source, model, nb_run: int, nb_keep: int, methods, pynx_run: int | None = None) -> None:
    """Compute the missing rows of one source; append each as it finishes; one preview per method.
    pynx_run: standard runs with the PyNX engine (default nb_run)."""
    from physics.phasing import free_pixel_mask
    from workers.io.previews import object_preview, save_png
    from workers.pipeline import crop_for_cnn

    done = _done()
    key_runs = lambda m: run_key(m, nb_run, pynx_run)  # noqa: E731
    data = src.load()
    i_crop, m_crop, offsets, fe = crop_for_cnn(data["intensity"], data["mask"], predict=model.predict_phase)
    # a cached row counts only if the front end still makes the same decisions (crop, binning, scale) on the source
    todo = [m for m in methods if done.get((src.name, m, key_runs(m)), {}).get("frontend") != fe.summary()
            or not gate_stands(done[(src.name, m, key_runs(m))], i_crop, m_crop, fe)]
    if not todo:
        return
    free = free_pixel_mask(i_crop.shape, mask=m_crop, seed=0)  # the same free voxels for every method
    truth = data["truth"](fe) if data["truth"] else None
    PREVIEWS.mkdir(parents=True, exist_ok=True)
    for method in todo:
        print(f"[{src.name}] {method} ...", flush=True)
        rows = run_method_on(method, data, (i_crop, m_crop, free), model, key_runs(method), nb_keep)
        for name, obj, sup, extra, wall in rows:
            rec = {"source": src.name, "method": name, "nb_run": key_runs(method), "wall_s": wall,
                   "crop_shape": list(fe.crop_shape), "crop_offsets": [int(o) for o in offsets],
                   "frontend": fe.summary(), "note": data["note"], "nb_free": int(free.sum()),
                   "model": model.name, **_data_figures(obj, sup, i_crop, m_crop, free), **extra}
            if truth is not None:
                rec.update(_truth_figures(obj, sup, truth))
            _append(OUT, rec)
            print(json.dumps({k: rec[k] for k in ("method", "llk", "llk_free", "support", "obj2_out", "wall_s")}),
                  flush=True)
        name, obj, sup, _, _ = rows[0]
        save_png(object_preview(obj, sup, title=f"{src.name}: {LABELS[name]}"), PREVIEWS / f"{src.name}_{name}.png")


LABELS = {"cnn_er": "(b) CNN + 400 ER", "cnn_raar_er": f"(b+) CNN + {PRE_RECIPE} + 400 ER",
          "standard_builtin": "(c) standard, built-in engine, first mode",
          "standard_builtin_best": "(c') its best single run (free LLK)",
          "standard_pynx": "(c) standard, PyNX engine, first mode",
          "standard_pynx_best": "(c') its best single run (free LLK)",
          "adaptive": "adaptive (the default method)"}


def best_standard(rows: dict) -> dict | None:
    """The best standard result (first mode or best single run, either engine) by free LLK."""
    cands = [r for m, r in rows.items() if m.startswith("standard")]
    return min(cands, key=lambda r: r["llk_free"]) if cands else None


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def target_lines(rows: dict, has_truth: bool) -> list[str]:
    """The issue's target lines for one source. rows: {method: record}. With a truth: the standard recipe (either
    engine, first mode), (b), (b+) and adaptive against it; always: adaptive against the best standard result."""
    lines = []
    lo, hi = TARGET_VOLUME
    if has_truth:
        for m in ("standard_builtin", "standard_pynx", "cnn_er", "cnn_raar_er", "adaptive"):
            r = rows.get(m)
            if r is None:
                continue
            ok = lo <= r["volume_ratio_truth"] <= hi and r["phase_rmse"] <= TARGET_PHASE_RMSE
            lines.append(f"- {_met(ok)}: {LABELS[m]} support volume / truth {r['volume_ratio_truth']:.2f} "
                         f"(target {lo}-{hi}), phase RMSE {r['phase_rmse']:.2f} rad (target <= {TARGET_PHASE_RMSE})")
    ref, a = best_standard(rows), rows.get("adaptive")
    if ref is not None and a is not None:
        vol = a["support"] / max(ref["support"], 1)
        llk_rel = abs(a["llk"] - ref["llk"]) / abs(ref["llk"])
        checks = [(lo <= vol <= hi, f"support volume / best standard {vol:.2f} (target {lo}-{hi})"),
                  (a["obj2_out"] <= TARGET_OBJ2_OUT, f"obj2_out {a['obj2_out']:.3f} (target <= {TARGET_OBJ2_OUT})"),
                  (llk_rel <= TARGET_LLK_REL, f"LLK {a['llk']:.3g} vs {ref['llk']:.3g}, {100 * llk_rel:.0f} % apart "
                                              f"(target <= {100 * TARGET_LLK_REL:.0f} %)")]
        lines += [f"- {_met(ok)}: adaptive against the best standard result ({LABELS[ref['method']]} of "
                  f"{ref['method'].removesuffix('_best')}): {text}" for ok, text in checks]
    return lines


def _row(r: dict, has_truth: bool) -> str:
    m = r["method"]
    label = LABELS[m]
    if m.startswith("standard"):
        label += f", {r['nb_run']} run{'s' if r['nb_run'] != 1 else ''}, kept {r['nb_kept']}"
        if not m.endswith("_best"):
            label += f", weight {r['first_mode_weight']:.2f}"
        if r.get("failed"):
            label += f", {r['failed']} failed"
    if m == "adaptive":
        label += f": {r['status']}, winner {r['winner']}, {r['nb_candidates']} candidate(s)"
        if r.get("budget_exhausted"):
            label += f", {r['budget_exhausted']} budget spent"
    cells = [label, f"{r['llk']:.3g}", f"{r['llk_free']:.3g}", f"{r['r_factor']:.3f}", str(r["support"]),
             f"{r['obj2_out']:.3f}"]
    if has_truth:
        cells += [f"{r['volume_ratio_truth']:.2f}", f"{r['phase_rmse']:.2f}"]
    cells.append(f"{r['wall_s']:.0f}" if r["wall_s"] >= 10 else f"{r['wall_s']:.1f}")
    return "| " + " | ".join(cells) + " |"


def section(sources: list[str], runs: dict[str, int], pynx_runs: dict[str, int] | None = None) -> str:
    """The docs/benchmarks.md section from the cached rows of the given sources."""
    done = _done()
    order = ["cnn_er", "cnn_raar_er", "standard_builtin", "standard_builtin_best", "standard_pynx",
             "standard_pynx_best", "adaptive"]
    parts = [f"Command: `{command_line()}`; machine: {machine()}; torch 1 thread, niced, beside a training run and "
             "another benchmark (wall times are under that load).", "",
             "Every method goes through the same front end (workers.pipeline.crop_for_cnn: the crop is chosen from "
             "the measured oversampling) and is scored on that crop with the same free voxels (LLK, free LLK and "
             "R-factor by physics.metrics.data_metrics; obj2_out = energy outside the support). (b), (b+) and "
             "adaptive are workers.strategy.run_method with the default options; (c) is phase_runs with "
             f"{STANDARD}, best 5 (or all) by free LLK, first mode, with the built-in engine and with PyNX "
             "(Debian python3-pynx, subprocess); (c') is the best single run of the same runs (same wall time). Lower "
             "LLK / free LLK / R-factor = better fit of the data. Rows are cached in bench/results/real_data.jsonl "
             "(one per source, method and run count): this command computes only the missing ones, so the rows may "
             "come from earlier, resumed invocations (here some ran side by side, which lengthens wall times)."]
    for name in sources:
        src = SOURCES[name]
        pr = (pynx_runs or {}).get(name)
        rows = {m: r for (s, m, n), r in done.items()
                if s == name and n == run_key(m.removesuffix("_best"), runs[name], pr)}
        if not rows:
            continue
        has_truth = any("phase_rmse" in r for r in rows.values())
        any_r = next(iter(rows.values()))
        head = "| method | LLK | free LLK | R-factor | support voxels | obj2_out |"
        sep = "|---|---:|---:|---:|---:|---:|"
        if has_truth:
            head += " volume / truth | phase RMSE (rad) |"
            sep += "---:|---:|"
        parts += ["", f"### {src.label}", "",
                  f"Source: {any_r['note']}. Licence: {src.licence}. Front end: {any_r['frontend']}; "
                  f"{any_r['nb_free']} free voxels; model {any_r['model']}.", "", head + " wall s |", sep + "---:|"]
        parts += [_row(rows[m], has_truth) for m in order if m in rows]
        parts += ["", *target_lines(rows, has_truth), "",
                  "Previews: " + ", ".join(f"docs/real_data/{name}_{m}.png" for m in METHODS if m in rows) + "."]
    parts += ["", "### Other real measured patterns from the package registries", "",
              "None found: no openly licensed real measured BCDI pattern ships in the registry packages of the field "
              "(PyPI; conda-forge is not reachable here). Opened with `pip download --no-deps`:", ""]
    parts += [f"- {pkg}: {what}" for pkg, what in REGISTRY_CHECKED]
    parts += ["- shared/data/id01_bliss_layout/PTO_STO_SL_0001.h5 (MIT, E. Zatterin): a real ID01 BLISS master "
              "file, but its frame files are not included (layout and metadata only), so it has no pattern."]
    return "\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--nb-run", nargs="*", help="standard runs per engine: N, or SOURCE=N (default "
                    + ", ".join(f"{k}={s.nb_run}" for k, s in SOURCES.items()) + ")")
    ap.add_argument("--pynx-run", nargs="*", help="standard runs with the PyNX engine, as --nb-run (default: the "
                    "same as --nb-run)")
    ap.add_argument("--nb-keep", type=int, default=5)
    ap.add_argument("--model", default=None)
    ap.add_argument("--no-doc", action="store_true", help="print the section instead of writing it")
    ap.add_argument("--report", action="store_true", help="only (re)write the section from the cached rows")
    args = ap.parse_args(argv)
    runs = parse_runs(args.nb_run)
    pynx_runs = parse_runs(args.pynx_run) if args.pynx_run else runs
    if not args.report:
        import torch

        from models.predict import load_model

        torch.set_num_threads(1)
        model = load_model(args.model)
        for name in args.sources:
            run_source(SOURCES[name], model, runs[name], args.nb_keep, args.methods, pynx_runs[name])
    body = section(args.sources, runs, pynx_runs)
    print(body)
    if not args.no_doc:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
