"""The shared job contract (contract/): one scan-reference rule on both sides, one environment name per setting,
consumer groups without error-string matching, and the package data (Lua scripts, Tiled config) found as resources.

Against a real Redis (the gateway in-process, a Worker on a thread)."""
from __future__ import annotations

import ast
import logging
import tomllib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service_fixtures import SUBMIT_KEY, drop_keys, make_settings, qsettings, redis_available, wait_for  # noqa: F401
from service_fixtures import worker_thread

from contract.jobs import PRIORITIES, connect, lua_script
from contract.scanref import ScanRef, ScanRefError
from contract.settings import Settings, current_settings, use_settings

REPO = Path(__file__).resolve().parents[1]
API = "/api/v1/reconstructions"


def test_scan_ref_rules():
    ref = ScanRef.parse({"tiled_path": "/raw/PtNP/PtNP_0001/", "scan": 3, "detector": "mpx1x4"}, ["raw"])
    assert ref.as_dict() == {"tiled_path": "raw/PtNP/PtNP_0001", "scan": "3.1", "detector": "mpx1x4"}
    assert ScanRef.parse({"run_uid": "3f2a9c1e-77aa"}, ["raw"]).run_uid == "3f2a9c1e-77aa"  # no prefix to check
    for bad, why in [({"tiled_path": "raw/x"}, "needs a 'scan'"),
                     ({"tiled_path": "raw/../x", "scan": 1}, "'.' or '..' segments"),
                     ({"tiled_path": "raw/x", "scan": 1, "run_uid": "3f2a9c1e77aa"}, "exactly one of"),
                     ({"run_uid": "3f2a9c1e77aa", "scan": 1}, "go with tiled_path"),
                     ({"tiled_path": "raw/x", "scan": "1.1", "extra": 1}, "extra"),
                     ({"tiled_path": "staging/x", "scan": 1}, "outside the allowed prefix (raw/)"),
                     ("raw/x", "must be a mapping")]:
        with pytest.raises(ScanRefError, match=why.replace("(", r"\(").replace(")", r"\)")) as info:
            ScanRef.parse(bad, ["raw"])
        assert "\n" not in str(info.value)
    assert ScanRef.parse({"tiled_path": "anything/x", "scan": 1}, []).tiled_path == "anything/x"  # empty: any


@pytest.mark.parametrize("prefixes, accepted", [(["raw"], False), (["raw", "staging"], True)])
def test_gateway_and_worker_apply_the_same_prefix_setting(prefixes, accepted):
    """A widened (or default) allowed_scan_prefixes is applied identically by the gateway and the Tiled adapter."""
    if not redis_available():
        pytest.fail("Redis is not running on 127.0.0.1:6379")
    from physics.errors import InputError
    from service.app import create_app
    from workers.io.tiled_store import parse_scan_ref

    s = make_settings(allowed_scan_prefixes=prefixes)
    body = {"scan": {"tiled_path": "staging/PtNP/PtNP_0001", "scan": "1.1"}}
    try:
        with TestClient(create_app(s)) as api:
            r = api.post(API, headers={"X-API-Key": SUBMIT_KEY}, json=body)
        with use_settings(s):  # what the worker does around its runner
            if accepted:
                assert parse_scan_ref(body["scan"]).tiled_path == "staging/PtNP/PtNP_0001"
            else:
                with pytest.raises(InputError, match="outside the allowed prefix"):
                    parse_scan_ref(body["scan"])
    finally:
        drop_keys(s)
    if accepted:
        assert r.status_code == 202, r.text
    else:
        assert r.status_code == 422 and "outside the allowed prefix (raw/)" in r.json()["message"]


def test_worker_fails_a_job_whose_scan_is_outside_its_prefixes_without_running_it(qsettings):  # noqa: F811
    """A record queued by another producer (here: the gateway of a wider setting) is checked by the worker too."""
    from service.models import ReconRequest
    from service.queue import JobProducer

    client = connect(qsettings)
    producer = JobProducer(client, qsettings)
    job, _ = producer.submit(ReconRequest(scan={"tiled_path": "staging/x", "scan": 1}))
    ran = []
    with worker_thread(qsettings, "strict-prefix", runner=lambda *a: ran.append(a) or {}):
        wait_for(lambda: producer.get(job)["state"] == "failed", 20, what="the job to fail")
    assert ran == []
    assert producer.get(job)["error"] == "tiled_path 'staging/x' is outside the allowed prefix (raw/)"
    client.close()


def test_consumer_groups_are_created_once_and_recreated_after_redis_lost_them(qsettings, caplog):  # noqa: F811
    from service.models import ReconRequest
    from service.queue import JobProducer

    client = connect(qsettings)
    producer = JobProducer(client, qsettings)
    assert producer.groups_missing()
    assert producer.ensure_groups() == len(PRIORITIES)
    assert producer.ensure_groups() == 0 and not producer.groups_missing()
    done = []
    with caplog.at_level(logging.WARNING, logger="bcdi.worker"), \
            worker_thread(qsettings, "survivor", runner=lambda spec, *a: done.append(spec["job_id"]) or {}):
        wait_for(lambda: client.hexists(f"{qsettings.key_prefix}:workers", "survivor"), 10, what="the worker")
        client.delete(*[producer.stream(p) for p in PRIORITIES])  # Redis lost its data (restart, no AOF)
        wait_for(lambda: any(r.getMessage().startswith("consumer group missing") for r in caplog.records), 10,
                 what="the worker to notice the missing group")
        job, _ = producer.submit(ReconRequest(scan={"tiled_path": "raw/x", "scan": 1}))
        wait_for(lambda: producer.get(job)["state"] == "succeeded", 20, what="a job after the group came back")
    assert done == [job]
    client.close()


def test_one_environment_name_per_setting(monkeypatch):
    monkeypatch.setenv("BCDI_TILED_URL", "http://tiled.example:8000")
    monkeypatch.setenv("BCDI_ALLOWED_SCAN_PREFIXES", "raw, staging")
    monkeypatch.setenv("BCDI_TRIGGER_API_KEY", "k")
    s = current_settings()
    assert s.tiled_url == "http://tiled.example:8000" and s.allowed_scan_prefixes == ["raw", "staging"]
    assert s.trigger_api_key == "k"
    # no module reads a BCDI_* variable that a Settings field owns, nor the old BCDI_TILED_URI
    owned = {f"BCDI_{name.upper()}" for name in Settings.model_fields}
    reads = []
    for pkg in ("cli", "service", "workers", "physics", "models", "contract", "devtools", "bench"):
        for path in (REPO / pkg).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "BCDI_TILED_URI" not in text, path
            for node in ast.walk(ast.parse(text)):
                if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("get", "getenv")
                        and node.args and isinstance(node.args[0], ast.Constant)
                        and str(node.args[0].value).startswith("BCDI_")):
                    reads.append((path.relative_to(REPO).as_posix(), node.args[0].value))
    assert reads and not [r for r in reads if r[1] in owned], reads


def test_package_data_lua_scripts_and_tiled_config():
    from devtools.tiled_server import embedded_config

    py = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = py["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "contract*" in include and "devtools*" in include
    data = py["tool"]["setuptools"]["package-data"]
    assert data["contract"] == ["lua/*.lua"] and data["devtools"] == ["tiled/*.yml"]
    for name in ("ensure_groups", "submit", "start", "heartbeat", "progress", "finish", "dead_letter", "requeue",
                 "cancel"):
        text = lua_script(name)
        assert "redis.call" in text and "--@owner_check" not in text and "@LOST" not in text
    assert "return 'lost'" in lua_script("start") and "XPENDING" in lua_script("finish")
    config = embedded_config()
    assert config.is_file() and config.parent == REPO / "devtools" / "tiled"
    assert "single_user_api_key" in config.read_text()
