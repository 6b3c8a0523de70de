"""Round trips through a real Tiled server: ID01 scans in (server-side slicing), reconstructions out, bad input."""

import os
import time
from pathlib import Path

import numpy as np
import pytest

from fixtures_tiled import tiled_env  # noqa: F401  (module-scoped real Tiled server)
from contract.scanref import ScanRef
from devtools.tiled_server import free_port
from physics.errors import InputError
from physics.simulate import SimParams, simulate_sample
from workers.io.id01 import load_scan
from workers.io.tiled_store import (REQUIRED_ARRAYS, TiledUnavailable, connect, load_scan_tiled, make_previews,
                                    parse_scan_ref, read_result, result_keys, write_result)
from workers.pipeline import result_arrays

REPO = Path(__file__).resolve().parents[1]
REF = {"tiled_path": "raw/PtNP/PtNP_0001", "scan": "1.1", "detector": "mpx1x4"}
SCAN_META = {"energy_eV": 9000.0, "delta_deg": 36.0, "nu_deg": 1.5, "distance_m": 0.85, "pixel_size_x_m": 55e-6,
             "pixel_size_y_m": 55e-6, "rocking_motor": "eta", "rocking_step_deg": 0.01, "eta_deg": 18.0}


def test_scan_ref_validation():
    # the job contract's ScanRef (the gateway's rule), as the Tiled adapter applies it: bad input is InputError
    assert parse_scan_ref({"tiled_path": "/raw/PtNP/PtNP_0001/", "scan": 1}) == ScanRef(tiled_path="raw/PtNP/PtNP_0001",
                                                                                       scan="1.1")
    with pytest.raises(InputError, match="outside the allowed prefix"):
        parse_scan_ref({"tiled_path": "reconstructions/PtNP", "scan": "1.1"})
    with pytest.raises(InputError, match=r"'\.\.' segments"):
        parse_scan_ref({"tiled_path": "raw/../reconstructions/x", "scan": "1.1"})
    with pytest.raises(InputError, match="needs a 'scan'"):
        parse_scan_ref({"tiled_path": "raw/x", "scan": " "})
    assert result_keys(REF, "job-7") == ["reconstructions", "PtNP", "PtNP_0001", "1.1", "job-7"]
    with pytest.raises(InputError, match="job id"):
        result_keys(REF, "a/b")


def test_unreachable_server_fails_after_retries():
    start = time.monotonic()
    with pytest.raises(TiledUnavailable, match="unreachable after 3 attempts"):
        connect(f"http://127.0.0.1:{free_port()}", "k", attempts=3, backoff_s=0.05)
    assert time.monotonic() - start < 10


def test_load_scan_through_tiled_reads_a_region_matching_hdf5(tiled_env):
    client = tiled_env["client"]
    frames, mask, meta = load_scan_tiled(client, REF, roi_size=(128, 160))
    full, full_mask, full_meta = load_scan(tiled_env["file"], "1.1")
    r0, c0 = meta["detector_roi_offset"]
    assert frames.shape == (32, 128, 160)
    np.testing.assert_array_equal(frames, full[:, r0:r0 + 128, c0:c0 + 160])
    np.testing.assert_array_equal(mask, full_mask[:, r0:r0 + 128, c0:c0 + 160])
    # the region holds the Bragg peak
    assert r0 <= 150 < r0 + 128 and c0 <= 330 < c0 + 160
    for key in ("energy_eV", "distance_m", "delta_deg", "nu_deg", "rocking_motor", "rocking_step_deg",
                "beam_center_x_px", "pixel_size_y_m", "wavelength_m", "title"):
        assert meta[key] == full_meta[key], key
    assert meta["tiled_entry"] == "raw/PtNP/PtNP_0001/PtNP_0001/1.1"


def test_monitor_normalisation_through_tiled_matches_hdf5(tiled_env):
    frames, _, meta = load_scan_tiled(tiled_env["client"], REF, roi_size=(64, 64), monitor="mon2")
    full, _, full_meta = load_scan(tiled_env["file"], "1.1", monitor="mon2")
    r0, c0 = meta["detector_roi_offset"]
    np.testing.assert_allclose(frames, full[:, r0:r0 + 64, c0:c0 + 64], rtol=1e-6)
    assert meta["monitor_normalised"] and full_meta["monitor_normalised"]
    with pytest.raises(InputError, match="monitor counter 'nope' not found"):
        load_scan_tiled(tiled_env["client"], REF, roi_size=(64, 64), monitor="nope")


def test_master_file_and_external_link_scans_through_tiled(tiled_env):
    client = tiled_env["client"]
    f1, _, _ = load_scan_tiled(client, {"tiled_path": "raw/PtNP/hc0000_PtNP", "scan": "1.1"}, roi_size=(64, 64))
    f2, _, meta2 = load_scan_tiled(client, {"tiled_path": "raw/PtNP/PtNP_0001", "scan": "2.1"}, roi_size=(64, 64))
    np.testing.assert_array_equal(f1, f2)
    assert meta2["rocking_motor"] == "phi"


def test_bad_scan_references_through_tiled(tiled_env):
    client = tiled_env["client"]
    with pytest.raises(InputError, match="unknown scan '9.1'"):
        load_scan_tiled(client, {**REF, "scan": "9.1"})
    with pytest.raises(InputError, match="no such Tiled path: raw/PtNP/PtNP_0099"):
        load_scan_tiled(client, {**REF, "tiled_path": "raw/PtNP/PtNP_0099"})
    with pytest.raises(InputError, match="detector 'eiger2M' not found"):
        load_scan_tiled(client, {**REF, "detector": "eiger2M"})
    with pytest.raises(InputError, match="outside the allowed prefix"):
        load_scan_tiled(client, {**REF, "tiled_path": "reconstructions/PtNP"})
    # scan 3.1: its VDS source file is gone; the server (h5py) serves zeros, which must not pass
    with pytest.raises(InputError, match="frames are all zero"):
        load_scan_tiled(client, {**REF, "scan": "3.1"})


@pytest.fixture(scope="module")
def result():
    """Result arrays + previews + metadata from a simulated crystal (stands in for a refined object)."""
    s = simulate_sample(5, SimParams(size=32))
    recip = np.angle(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(s["object"]))))
    arrays, strain_meta = result_arrays(s["object"], s["support"], s["intensity"], recip, SCAN_META)
    previews = make_previews(arrays, title="PtNP_0001 scan 1.1")
    metadata = {"model": {"name": "unet-paper", "sha256": "ab" * 32}, "engine": "torch", "recipe": "ER**400",
                "parameters": {"support_threshold": 0.25, "crop_offsets": [0, 118, 298]},
                "metrics": {"llk": 1.25, "llk_free": 1.31, "r_factor": 0.083, "support_size": int(s["support"].sum()),
                            "obj2_out": 0.004},
                "timings_s": {"load": 0.4, "cnn": 0.9, "er": 3.1}, "input": SCAN_META, "strain": strain_meta}
    return arrays, previews, metadata


def test_previews_are_rgb(result):
    _, previews, _ = result
    assert set(previews) == {"preview_object", "preview_strain", "preview_reciprocal"}
    for rgb in previews.values():
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.std() > 10


def test_write_read_round_trip_and_idempotent(tiled_env, result):
    client = tiled_env["client"]
    arrays, previews, metadata = result
    path = write_result(client, REF, "job-0001", arrays, metadata, previews)
    assert path == "reconstructions/PtNP/PtNP_0001/1.1/job-0001"
    back, meta = read_result(client, path)
    lab = {"amplitude_lab", "support_lab", "shape_lab", "displacement_lab", "strain_lab"}
    assert set(back) == set(REQUIRED_ARRAYS) | set(previews) | lab
    # same crystal volume on the lab grid as on the (sheared) detector grid
    det_voxel = abs(np.linalg.det(np.array(metadata["strain"]["real_space_basis_nm"])))
    lab_voxel = metadata["strain"]["lab_frame"]["voxel_size_nm"][0] ** 3
    assert back["support_lab"].sum() * lab_voxel == pytest.approx(arrays["support"].sum() * det_voxel, rel=0.15)
    for key in set(REQUIRED_ARRAYS) | lab:
        expected = np.asarray(arrays[key])
        assert back[key].shape == expected.shape, key
        np.testing.assert_array_equal(back[key], expected.astype(back[key].dtype), err_msg=key)
    assert back["object"].dtype == np.complex64 and back["support"].dtype == bool and back["shape"].dtype == bool
    # the crystal's shape lies inside the phasing support, and strain is drawn inside the shape only
    assert back["shape"].any() and not np.any(back["shape"] & ~back["support"])
    assert not np.any(back["strain"][~back["shape"]]) and meta["strain"]["shape"]["voxels"] == back["shape"].sum()
    for key, rgb in previews.items():
        np.testing.assert_array_equal(back[key], rgb)
    assert meta["status"] == "complete" and meta["job_id"] == "job-0001"
    assert meta["scan_ref"] == {"tiled_path": "raw/PtNP/PtNP_0001", "scan": "1.1", "detector": "mpx1x4"}
    for key in ("model", "engine", "recipe", "parameters", "metrics", "timings_s", "input"):
        assert meta[key] == metadata[key], key
    assert meta["strain"]["strain_units"].startswith("1") and meta["strain"]["geometry_used"] is True
    # idempotent: the same job id again writes nothing new and keeps the first data
    other = dict(arrays, amplitude=arrays["amplitude"] * 2)
    assert write_result(client, REF, "job-0001", other, metadata, previews) == path
    np.testing.assert_array_equal(client[path]["amplitude"].read(), arrays["amplitude"])
    assert list(client["reconstructions/PtNP/PtNP_0001/1.1"]) == ["job-0001"]


def test_partial_write_is_replaced(tiled_env, result):
    client = tiled_env["client"]
    arrays, previews, metadata = result
    scan_node = client["reconstructions/PtNP/PtNP_0001/1.1"] if "reconstructions" in client else None
    if scan_node is None:
        write_result(client, REF, "job-seed", arrays, metadata)
        scan_node = client["reconstructions/PtNP/PtNP_0001/1.1"]
    crashed = scan_node.create_container("job-crashed", metadata={"status": "writing"})
    crashed.write_array(np.zeros(3, np.float32), key="amplitude")
    path = write_result(client, REF, "job-crashed", arrays, metadata)
    back, meta = read_result(client, path)
    assert meta["status"] == "complete" and back["amplitude"].shape == arrays["amplitude"].shape


def test_bad_result_writes_nothing(tiled_env, result):
    client = tiled_env["client"]
    arrays, previews, metadata = result
    bad = dict(arrays)
    bad["strain"] = arrays["strain"].copy()
    bad["strain"][0, 0, 0] = np.nan
    with pytest.raises(InputError, match="strain contains NaN"):
        write_result(client, REF, "job-bad", bad, metadata)
    with pytest.raises(InputError, match="missing arrays: object"):
        write_result(client, REF, "job-bad", {k: v for k, v in arrays.items() if k != "object"}, metadata)
    with pytest.raises(InputError, match="uint8 RGB"):
        write_result(client, REF, "job-bad", arrays, metadata, {"preview_x": np.zeros((4, 4), np.float32)})
    with pytest.raises(InputError, match="cannot be stored as Tiled metadata"):
        write_result(client, REF, "job-bad", arrays, {"when": object()})
    with pytest.raises(InputError, match="outside the allowed prefix"):
        write_result(client, {**REF, "tiled_path": "elsewhere/x"}, "job-bad", arrays, metadata)
    scans = client["reconstructions/PtNP/PtNP_0001/1.1"] if "reconstructions" in client else {}
    assert "job-bad" not in scans


@pytest.fixture(scope="module")
def multi_user(tmp_path_factory):
    """A second real server with deploy/tiled/production.yml and its keys (SQLite URIs unless CI gives PostgreSQL)."""
    from devtools.tiled_server import TiledServer, provision_keys

    base = tmp_path_factory.mktemp("tiled_mu")
    # PostgreSQL when CI provides two empty databases, e.g. postgresql+asyncpg://user:pw@127.0.0.1:5432/tiled_catalog
    env = {"BCDI_TILED_CATALOG_URI": os.environ.get("BCDI_TEST_TILED_CATALOG_URI", f"sqlite:///{base}/catalog.db"),
           "BCDI_TILED_AUTHN_DB_URI": os.environ.get("BCDI_TEST_TILED_AUTHN_URI", f"sqlite:///{base}/authn.db"),
           "BCDI_TILED_SECRET_KEY": "k" * 32, "BCDI_TILED_ADMIN_PASSWORD": "pw"}
    server = TiledServer(base / "data", base / "raw", config=REPO / "deploy" / "tiled" / "production.yml", extra_env=env, multi_user=True)
    server.start()
    try:
        keys = provision_keys(server.uri, "pw")
        from tiled.client import from_uri

        from workers.io.tiled_store import ensure_results_root

        ensure_results_root(from_uri(server.uri, api_key=keys["admin_key"]))  # deployment step (access policy)
        yield server, keys
    finally:
        server.stop()


def test_production_config_workers_write_viewers_only_read(multi_user, result):
    from tiled.client import from_uri
    from tiled.client.utils import ClientError

    server, keys = multi_user
    arrays, previews, metadata = result
    worker = from_uri(server.uri, api_key=keys["worker_key"])
    path = write_result(worker, REF, "job-mu", arrays, metadata)
    viewer = from_uri(server.uri, api_key=keys["viewer_key"])
    back, meta = read_result(viewer, path)
    np.testing.assert_array_equal(back["strain"], arrays["strain"])
    with pytest.raises(ClientError, match="401"):
        viewer[path].update_metadata({"status": "tampered"})
    with pytest.raises(PermissionError, match="no write scopes"):
        write_result(viewer, REF, "job-viewer", arrays, metadata)
    assert "job-viewer" not in worker["reconstructions/PtNP/PtNP_0001/1.1"]
    import httpx

    wrong = httpx.get(f"{server.uri}/api/v1/metadata/{path}", headers={"Authorization": "Apikey not-a-key"})
    assert wrong.status_code == 401
    with pytest.raises(PermissionError, match="rejected the API key"):
        connect(server.uri, "not-a-key", attempts=1)


def test_register_watch_picks_up_a_new_scan_file(tiled_env):
    from fixtures_tiled import synthetic_frames
    from workers.io.id01 import write_bliss_scan

    server, client = tiled_env["server"], tiled_env["client"]
    folder = server.raw_dir / "AuNP"
    folder.mkdir()
    # a watcher of its own sub-tree: `register --watch` first re-walks (overwrites) its prefix, so it must not
    # share /raw with the other tests
    watcher = server.register(folder, prefix="/raw/AuNP", watch=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "AuNP" not in client["raw"]:
        time.sleep(0.5)
    assert "AuNP" in client["raw"], "the watcher did not finish its initial walk within 60 s"
    frames, _ = synthetic_frames(n_frames=32, seed=4)
    # as a beamline copy would: write the dataset folder aside, then move it in with one rename, so the watcher
    # never sees half-written files (it re-registers a file on every change)
    staging = server.data_dir / "staging"
    write_bliss_scan(staging, "AuNP", "0002", frames, scan=1, proposal=None)
    (staging / "AuNP" / "AuNP_0002").rename(folder / "AuNP_0002")
    deadline = time.monotonic() + 90
    found = None
    while time.monotonic() < deadline and found is None:
        try:
            found = load_scan_tiled(client, {"tiled_path": "raw/AuNP/AuNP_0002", "scan": "1.1"}, roi_size=(64, 64))
        except InputError:  # not registered yet
            time.sleep(1.0)
    assert watcher.poll() is None, "the watcher exited"
    assert found is not None, "the new scan was not registered within 90 s"
    assert found[0].shape == (32, 64, 64) and found[0].max() > 0
