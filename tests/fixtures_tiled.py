"""Shared test helpers: a synthetic ID01 raw-data tree and a real Tiled server (subprocess on loopback) serving it.

Import the fixture into a test module with ``from fixtures_tiled import tiled_env  # noqa: F401``; it is
module-scoped, so one server starts per test module (about 10-20 s on the 2-core CI machine, registration included).
"""

from __future__ import annotations

import numpy as np
import pytest

from physics.simulate import SimParams, simulate_sample
from workers.io.id01 import write_bliss_scan

PEAK_AT = (16, 150, 330)  # frame, row, column of the simulated Bragg peak in the 516x516 stack


def synthetic_frames(n_frames: int = 32, seed: int = 3, peak_at=PEAK_AT) -> tuple[np.ndarray, np.ndarray]:
    """A simulated crystal's diffraction (32³, faded into a Poisson background) in a Maxipix-sized int32 stack."""
    sample = simulate_sample(seed, SimParams(size=32))
    ramp = np.ones(32)
    ramp[:6] = np.sin(np.linspace(0, np.pi / 2, 7)[:6]) ** 2
    ramp[-6:] = ramp[:6][::-1]
    taper = ramp[:, None, None] * ramp[None, :, None] * ramp[None, None, :]
    intensity = np.rint(sample["intensity_clean"] * taper).astype(np.int32)
    frames = np.random.default_rng(seed).poisson(0.2, (n_frames, 516, 516)).astype(np.int32)
    z0, r0, c0 = (p - 16 for p in peak_at)
    frames[z0:z0 + 32, r0:r0 + 32, c0:c0 + 32] += intensity
    return frames, intensity


def write_raw_tree(root) -> dict:
    """raw/PtNP/PtNP_0001 with scan 1.1 (VDS) and 2.1 (external link), plus scan 3.1 whose frame file is gone."""
    frames, intensity = synthetic_frames()
    ds = write_bliss_scan(root, "PtNP", "0001", frames, scan=1, angles={"delta": 36.0, "nu": 1.5},
                          energy_eV=9000.0, distance_m=0.85, monitor=np.linspace(1.0, 2.0, len(frames)))
    write_bliss_scan(root, "PtNP", "0001", frames, scan=2, link="external", rocking_motor="phi",
                     rocking_range=(-0.5, 0.5))
    write_bliss_scan(root, "PtNP", "0001", frames[:4], scan=3)
    (ds.parent / "scan0003" / "mpx1x4_0000.h5").unlink()
    (ds.parent / "scan0003").rmdir()
    return {"file": ds, "frames": frames, "intensity": intensity}


@pytest.fixture(scope="module")
def tiled_env(tmp_path_factory):
    """A running Tiled server (embedded config) with the synthetic raw tree registered under /raw."""
    from devtools.tiled_server import TiledServer

    base = tmp_path_factory.mktemp("tiled")
    raw = base / "raw"
    tree = write_raw_tree(raw)
    server = TiledServer(base / "data", raw)
    server.start()
    try:
        server.register()
        yield {"server": server, "client": server.client(), **tree}
    finally:
        server.stop()
