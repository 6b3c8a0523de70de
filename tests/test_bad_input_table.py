"""The bad-input table of issue 15: each user error is one line with exit 2 on the CLI, a 4xx naming the problem on
the API, and nothing is written. CLI through the real entry point; API through the real gateway on real Redis with
the real Tiled server (the submit-time check of the scan reference), and with Tiled unreachable (queued + note)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service_fixtures import READ_KEY, SUBMIT_KEY, make_settings, qsettings, shared_tiled  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).with_name("bcdi-recon")
API = "/api/v1/reconstructions"
SUB = {"X-API-Key": SUBMIT_KEY}
READ = {"X-API-Key": READ_KEY}
REAL = {"tiled_path": "raw/PtNP/PtNP_0001", "scan": "1.1", "detector": "mpx1x4"}


def _cli(*argv, timeout=300):
    cmd = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli.main"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd + [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A good 32³ intensity, a garbage .npy, a non-model .pt and an ID01 BLISS dataset file (frames in scan0001/)."""
    from fixtures_tiled import synthetic_frames
    from physics.simulate import SimParams, simulate_sample
    from workers.io.id01 import write_bliss_scan

    d = tmp_path_factory.mktemp("bad_inputs")
    np.save(d / "good.npy", simulate_sample(1, SimParams(size=32))["intensity"].astype(np.float32))
    (d / "garbage.npy").write_bytes(np.random.default_rng(0).bytes(400))
    (d / "not_a_model.pt").write_bytes(np.random.default_rng(1).bytes(400))
    frames, _ = synthetic_frames(n_frames=32)
    bliss = write_bliss_scan(d / "raw", "PtNP", "0001", frames, scan=1)
    return {"good": d / "good.npy", "garbage": d / "garbage.npy", "model": d / "not_a_model.pt", "bliss": bliss}


CLI_CASES = {
    "device tpu": (lambda i, out: ["reconstruct", i["good"], "--out", out, "--device", "tpu"],
                   "unknown device 'tpu': use auto, cpu, cuda or cuda:N"),
    "non-model --model": (lambda i, out: ["reconstruct", i["good"], "--out", out, "--model", i["model"]],
                          "is not a phase UNet weights file"),
    "worker, Redis unreachable": (lambda i, out: ["worker", "--redis-url", "redis://127.0.0.1:1/0"],
                                  "Redis at redis://127.0.0.1:1/0 is unreachable"),
    "--pre-recipe ER**0": (lambda i, out: ["reconstruct", i["good"], "--out", out, "--pre-recipe", "ER**0"],
                           "a step count must be >= 1"),
    "--recipe ER**0": (lambda i, out: ["phase", i["good"], "--out", out, "--recipe", "HIO**10,ER**0"],
                       "a step count must be >= 1"),
    "ID01 file without --scan": (lambda i, out: ["reconstruct", i["bliss"], "--out", out],
                                 "is an ID01 BLISS file with scans 1.1; pass --scan SCAN (e.g. --scan 1.1)"),
    "garbage .npy": (lambda i, out: ["reconstruct", i["garbage"], "--out", out],
                     "not a readable .npy file (no NumPy header"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input_is_one_line_exit_2_nothing_written(inputs, tmp_path, case):
    argv, expected = CLI_CASES[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = _cli(*argv(inputs, out_dir / "r.cxi"))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("bcdi-recon: error: ") and "Traceback" not in r.stderr, r.stderr
    assert expected in lines[0], lines[0]
    assert "pickled" not in lines[0]
    assert list(out_dir.iterdir()) == []


def test_traceback_works_after_the_subcommand(tmp_path):
    r = _cli("reconstruct", tmp_path / "missing.npy", "--out", tmp_path / "r.cxi", "--traceback")
    assert r.returncode == 1 and "Traceback (most recent call last)" in r.stderr
    assert "InputFileError: intensity file not found" in r.stderr  # the InputError family member for files
    r = _cli("reconstruct", tmp_path / "missing.npy", "--out", tmp_path / "r.cxi")
    assert r.returncode == 2 and "Traceback" not in r.stderr


# ---- API -----------------------------------------------------------------------------------------------------------
API_CASES = {
    "unknown path": ({"scan": {**REAL, "tiled_path": "raw/PtNP/PtNP_0099"}}, 404,
                     "scan.tiled_path: no such Tiled path: raw/PtNP/PtNP_0099"),
    "unknown scan entry": ({"scan": {**REAL, "scan": "9.1"}}, 404, "scan.scan: no scan 9.1 in raw/PtNP/PtNP_0001"),
    "unknown detector": ({"scan": {**REAL, "detector": "eiger2M"}}, 422,
                         "scan.detector: detector 'eiger2M' not found in scan 1.1 (known detectors present: mpx1x4)"),
    "unknown run uid": ({"scan": {"run_uid": "3f2a9c1e-77aa-4c1b-9d3e-0123456789ab"}}, 404,
                        "scan.run_uid: no Bluesky run 3f2a9c1e-77aa-4c1b-9d3e-0123456789ab in Tiled"),
    "pre_recipe ER**0": ({"scan": REAL, "options": {"pre_recipe": "RAAR**0", "er_cycles": 20}}, 422,
                         "a step count must be >= 1"),
}


@pytest.fixture
def api_with_tiled(qsettings, monkeypatch):  # noqa: F811
    monkeypatch.setenv("BCDI_SCAN_CHECK_BUDGET_S", "120")  # the loaded test machine: let every check finish
    tiled = shared_tiled()
    s = qsettings.model_copy(update={"tiled_url": tiled.url, "tiled_api_key": tiled.api_key})
    with TestClient(create_app_for(s)) as client:
        yield client


def create_app_for(settings):
    from service.app import create_app

    return create_app(settings)


def test_api_bad_scan_references_are_4xx_naming_the_problem_nothing_queued(api_with_tiled):
    for name, (body, status, expected) in API_CASES.items():
        r = api_with_tiled.post(API, json=body, headers=SUB)
        assert r.status_code == status, (name, r.text)
        reply = r.json()  # a 404 names the problem in detail; a schema 422 in its one-line message
        assert expected in reply["detail"] if isinstance(reply["detail"], str) else expected in reply["message"], \
            (name, reply)
    assert api_with_tiled.get(API, headers=READ).json()["total"] == 0  # nothing was queued
    ok = api_with_tiled.post(API, json={"scan": REAL}, headers=SUB)  # the real scan is accepted, with no note
    assert ok.status_code == 202 and ok.json()["note"] is None
    assert api_with_tiled.get(API, headers=READ).json()["total"] == 1


def test_api_check_past_its_budget_queues_the_job_and_says_so(qsettings):  # noqa: F811
    from service.scan_check import check_scan_ref

    tiled = shared_tiled()
    s = qsettings.model_copy(update={"tiled_url": tiled.url, "tiled_api_key": tiled.api_key})
    note = check_scan_ref(s, {**REAL, "tiled_path": "raw/PtNP/PtNP_0099"}, budget_s=0.0)
    assert "did not answer within 0 s, so the scan reference was not checked" in note


def test_api_tiled_unreachable_queues_the_job_and_says_so(qsettings):  # noqa: F811
    with TestClient(create_app_for(qsettings)) as api:  # qsettings.tiled_url: a free port, nothing listens
        r = api.post(API, json={"scan": REAL}, headers=SUB)
        assert r.status_code == 202, r.text
        assert "unreachable, so the scan reference was not checked" in r.json()["note"]
        assert api.get(r.json()["status_url"], headers=READ).json()["state"] == "queued"


# ---- access log and offline docs -----------------------------------------------------------------------------------
class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_access_log_json_lines_with_key_id_never_the_key(qsettings):  # noqa: F811
    from service.access_log import LOGGER, key_id

    handler = _Lines()
    logging.getLogger(LOGGER).addHandler(handler)
    try:
        with TestClient(create_app_for(qsettings)) as api:
            api.get(API, headers=READ)
            api.get(API, headers={"X-API-Key": "wrong-key"})
            api.get("/health")
    finally:
        logging.getLogger(LOGGER).removeHandler(handler)
    records = [json.loads(line) for line in handler.lines]
    assert [(r["method"], r["path"], r["status"]) for r in records] == [
        ("GET", API, 200), ("GET", API, 403), ("GET", "/health", 401)]
    assert records[0]["key_id"] == key_id(READ_KEY) and records[0]["role"] == "read"
    assert records[1]["role"] == "invalid" and records[2]["key_id"] is None
    assert all(r["duration_ms"] >= 0 for r in records)
    text = "\n".join(handler.lines)
    assert READ_KEY not in text and "wrong-key" not in text


def test_docs_are_served_from_local_assets(qsettings):  # noqa: F811
    with TestClient(create_app_for(qsettings)) as api:
        for page, asset in (("/docs", "/docs-assets/swagger-ui-bundle.js"),
                            ("/redoc", "/docs-assets/redoc.standalone.js")):
            html = api.get(page)
            assert html.status_code == 200 and asset in html.text
            assert "cdn." not in html.text and "fonts.googleapis" not in html.text
            js = api.get(asset)
            assert js.status_code == 200 and len(js.content) > 100_000
        assert api.get("/docs-assets/swagger-ui.css").status_code == 200
