"""ER cycle time: the built-in torch engine (2 threads) against PyNX's CPU back-end on the same data, plus one torch
FFT pair; writes the "ER cycle speed" section of docs/benchmarks.md.

Targets: built-in <= 1/4 of PyNX per ER cycle at 64^3 and 128^3, and <= 2x one torch forward+inverse FFT pair.
Run: .venv/bin/python bench/er_speed.py [--repeats 5] [--cycles 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import command_line, machine, write_section

SHAPES = [(64, 64, 64), (128, 128, 128), (128, 256, 256)]


def make_data(shape, seed=0):
    """A simulated 64^3 strained crystal embedded centred in `shape`, its Poisson diffraction, and a support."""
    from physics.simulate import SimParams, simulate_sample

    s = simulate_sample(seed, SimParams(size=64, phase_range=(np.pi, 2 * np.pi), peak_counts=(1e6, 1e6)))
    obj = np.zeros(shape, np.complex64)
    sl = tuple(slice(n // 2 - 32, n // 2 + 32) for n in shape)
    obj[sl] = s["object"]
    psi = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj), norm="ortho"))
    rng = np.random.default_rng(seed)
    iobs = rng.poisson(np.abs(psi) ** 2).astype(np.float32)
    support = np.zeros(shape, bool)
    support[sl] = s["support"]
    from scipy.ndimage import binary_dilation

    support = binary_dilation(support, iterations=2)
    return iobs, obj, support


def time_builtin(iobs, obj, support, cycles, repeats):
    """Median seconds per ER cycle of physics.phasing (torch CPU, 2 threads), over repeats blocks of `cycles` cycles."""
    import torch

    from physics.phasing import CDI, ER

    torch.set_num_threads(2)
    cdi = CDI(iobs, obj=obj, support=support)
    cdi = ER() ** 3 * cdi  # warm-up (allocations, FFT plans)
    per = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cdi = ER() ** cycles * cdi
        per.append((time.perf_counter() - t0) / cycles)
    return float(np.median(per))


def time_fft_pair(shape, repeats):
    """Median seconds of one torch fftn + ifftn pair (complex64, 2 threads) on an array of `shape`."""
    import torch

    torch.set_num_threads(2)
    x = torch.randn(shape, dtype=torch.complex64)
    for _ in range(2):
        torch.fft.ifftn(torch.fft.fftn(x, norm="ortho"), norm="ortho")
    per = []
    for _ in range(max(repeats * 3, 5)):
        t0 = time.perf_counter()
        torch.fft.ifftn(torch.fft.fftn(x, norm="ortho"), norm="ortho")
        per.append(time.perf_counter() - t0)
    return float(np.median(per))


def time_pynx(iobs, obj, support, cycles, repeats):
    """Median seconds per ER cycle of PyNX CPU (one child process, repeats runs of ER**cycles, chain time only)."""
    from workers.engines.pynx_engine import _run_job

    params = dict(recipe=f"ER**{cycles}", update_period=0, support_update=None, free_pixels=False,
                  runs=[dict(seed=r) for r in range(repeats + 1)])
    _, info = _run_job(dict(iobs=iobs, obj=obj, support=support), params)
    per = [r["chain_seconds"] / cycles for r in info["runs"][1:]]  # first run is the warm-up
    return float(np.median(per)), info["pynx_version"]


def main(argv=None) -> int:
    """Measure every shape, print the table and write the docs section."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per engine and shape (median reported)")
    p.add_argument("--cycles", type=int, default=20, help="ER cycles per timed block")
    p.add_argument("--shapes", default="64,128,128x256x256", help="comma list of N or AxBxC")
    p.add_argument("--no-doc", action="store_true", help="print only, do not write docs/benchmarks.md")
    a = p.parse_args(argv)
    shapes = []
    for tok in a.shapes.split(","):
        dims = tuple(int(v) for v in tok.lower().split("x"))
        shapes.append(dims * 3 if len(dims) == 1 else dims)
    rows, version = [], "?"
    for shape in shapes:
        iobs, obj, support = make_data(shape)
        cyc = a.cycles if np.prod(shape) <= 128 ** 3 else max(a.cycles // 4, 3)
        fft = time_fft_pair(shape, a.repeats)
        ours = time_builtin(iobs, obj, support, cyc, a.repeats)
        pynx, version = time_pynx(iobs, obj, support, cyc, a.repeats)
        rows.append((shape, cyc, fft, ours, pynx))
        print(f"{'x'.join(map(str, shape))}: fft pair {fft * 1e3:.2f} ms, built-in ER {ours * 1e3:.2f} ms, "
              f"PyNX ER {pynx * 1e3:.2f} ms, ratio {ours / pynx:.3f}, vs FFT {ours / fft:.2f}", flush=True)
    lines = ["| shape | cycles x repeats | torch FFT pair (ms) | built-in ER (ms/cycle) | PyNX CPU ER (ms/cycle) "
             "| built-in / PyNX | built-in / FFT pair |", "|---|---|---:|---:|---:|---:|---:|"]
    for shape, cyc, fft, ours, pynx in rows:
        lines.append(f"| {'x'.join(map(str, shape))} | {cyc} x {a.repeats} | {fft * 1e3:.2f} | {ours * 1e3:.2f} | "
                     f"{pynx * 1e3:.2f} | {ours / pynx:.3f} | {ours / fft:.2f} |")
    verdict = []
    for shape, cyc, fft, ours, pynx in rows:
        name = "x".join(map(str, shape))
        if shape[0] == shape[1] == shape[2] and shape[0] in (64, 128):
            ok = ours <= pynx / 4
            verdict.append(f"- {name}: built-in <= 1/4 of PyNX: **{'met' if ok else 'missed'}** "
                           f"(ratio {ours / pynx:.3f}, PyNX/built-in = {pynx / ours:.1f}x)")
        ok = ours <= 2 * fft
        verdict.append(f"- {name}: built-in within 2x of one FFT pair: **{'met' if ok else 'missed'}** "
                       f"(ratio {ours / fft:.2f})")
    body = "\n".join([
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}. Built-in engine: physics.phasing on torch CPU with 2 threads. "
        f"PyNX {version} CPU back-end (PYNX_PU=cpu, numpy/scipy.fft, single-threaded FFT) in Debian's python3, "
        "timed inside its process (chain time only, no start-up). Same data for both: a simulated 64^3 strained "
        "crystal (1e6 photons at the peak) embedded in the array, Poisson noise, fixed support, no support update. "
        "Medians over the timed blocks; the FFT pair is torch fftn+ifftn (complex64, ortho) on the same shape.",
        "",
        *lines,
        "",
        *verdict,
    ])
    print(body)
    if not a.no_doc:
        write_section("ER cycle speed: built-in vs PyNX CPU", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
