"""Screenshot one result container in Tiled's web UI, the gateway's /docs offline, and every preview kind.

Starts the embedded Tiled server in a temporary folder, writes one result container (a simulated crystal standing in
for a reconstruction: the true object, its support and diffraction, with real strain maps and previews), then saves
PNGs of the container page (previews listed first) and of the colour previews with headless Chromium; starts the
gateway on loopback and shows /docs with every other host unresolvable (offline); and writes each preview kind
(Tiled's three, `reconstruct --previews`' three) as preview_*.png. Needs Debian's chromium (apt-get install -y
chromium) and Redis on 127.0.0.1:6379 for the gateway. Usage: python deploy/tiled/screenshot_result.py [OUT_DIR]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from physics.simulate import SimParams, simulate_sample
from devtools.tiled_server import TiledServer
from workers.io.previews import intensity_preview, preview_geometry, render_previews, save_png
from workers.io.tiled_store import make_previews, write_result
from workers.pipeline import result_arrays

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=15000",
                  # offline: every host but loopback fails to resolve, so a page that needs a CDN shows it
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def screenshot(url: str, out: Path, size=(1400, 1000)) -> None:
    """Save a PNG of ``url`` rendered by headless Chromium with a fresh profile."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
               f"--screenshot={out}", url]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def main(out_dir: str = "docs/screenshots") -> None:
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, TiledServer(Path(tmp) / "data", Path(tmp) / "raw") as server:
        s = simulate_sample(11, SimParams(size=64, phase_range=(3 * np.pi, 3 * np.pi)))
        recip = np.angle(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(s["object"]), norm="ortho")))
        meta_in = {"energy_eV": 9000.0, "delta_deg": 36.0, "nu_deg": 0.5, "distance_m": 0.85,
                   "pixel_size_x_m": 55e-6, "pixel_size_y_m": 55e-6, "rocking_motor": "eta",
                   "rocking_step_deg": 0.005, "eta_deg": 18.0}
        arrays, strain_meta = result_arrays(s["object"], s["support"], s["intensity"], recip, meta_in)
        geometry = preview_geometry(meta_in, s["intensity"].shape)
        previews = make_previews(arrays, geometry, title="PtNP_0001 scan 1.1 (simulated crystal)")
        for name, rgb in previews.items():  # the three kinds Tiled shows
            save_png(rgb, out / f"{name}.png")
        cli_kinds = render_previews(iobs=s["intensity"], obj=s["object"], support=s["support"], geometry=geometry,
                                    title="crystal.cxi (reconstruct --previews)")
        for name, rgb in cli_kinds.items():  # the kinds `reconstruct --previews` writes
            save_png(rgb, out / f"preview_cli_{name}.png")
        i64 = s["intensity"]
        save_png(intensity_preview(i64, recip, None, title="crystal.cxi: 64³ input and the CNN's reciprocal phase",
                                   geometry=geometry), out / "preview_cli_cnn_phase.png")
        metadata = {"engine": "simulated ground truth (screenshot of the result layout)", "input": meta_in,
                    "strain": strain_meta, "metrics": {"support_size": int(s["support"].sum())}}
        ref = {"tiled_path": "raw/PtNP/PtNP_0001", "scan": "1.1", "detector": "mpx1x4"}
        path = write_result(server.client(), ref, "job-demo", arrays, metadata, previews)
        key = f"api_key={server.api_key}"
        pages = {"tiled_result_container.png": f"{server.uri}/ui/browse/{path}?{key}",
                 "tiled_preview_object.png": f"{server.uri}/ui/browse/{path}/preview_object?{key}",
                 "tiled_preview_strain.png": f"{server.uri}/ui/browse/{path}/preview_strain?{key}",
                 "tiled_strain_array.png": f"{server.uri}/ui/browse/{path}/strain?{key}"}
        for name, url in pages.items():
            screenshot(url, out / name)
            print(out / name)
    docs_offline(out / "gateway_docs_offline.png")
    print(out / "gateway_docs_offline.png")


def docs_offline(png: Path) -> None:
    """The gateway's /docs rendered by Chromium with no host but loopback reachable."""
    import threading
    import time

    import httpx
    import uvicorn

    from service.app import create_app
    from service.settings import Settings
    from devtools.tiled_server import free_port

    port = free_port()
    app = create_app(Settings(submit_api_keys=["s"], read_api_keys=["r"]))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        screenshot(f"http://127.0.0.1:{port}/docs", png, size=(1400, 1100))
    finally:
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    main(*sys.argv[1:])
