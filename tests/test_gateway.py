"""The REST gateway on real Redis (and the real Tiled server for /health): endpoints, auth, validation, limits,
server-sent events, metrics, and the rule that the gateway never imports torch/workers/models."""
from __future__ import annotations

import json
import subprocess
from contextlib import ExitStack
import sys

import pytest
from fastapi.testclient import TestClient

from service_fixtures import (PYTHON, READ_KEY, REPO, SUBMIT_KEY, free_port, make_settings,  # noqa: F401
                              qsettings, shared_tiled, worker_thread)

from service.app import create_app

API = "/api/v1/reconstructions"
SUB = {"X-API-Key": SUBMIT_KEY}
READ = {"X-API-Key": READ_KEY}
BODY = {"scan": {"tiled_path": "raw/ID01/sample1", "scan": 12, "detector": "mpx1x4"},
        "options": {"er_cycles": 20, "crop_size": [16, 16, 16]}}


@pytest.fixture
def api(qsettings):
    with TestClient(create_app(qsettings)) as client:
        yield client


def test_submit_get_list_and_duplicates(api):
    r = api.post(API, json=BODY, headers=SUB)
    assert r.status_code == 202, r.text
    sub = r.json()
    job = sub["id"]
    assert sub["state"] == "queued" and not sub["duplicate"]
    assert sub["status_url"].endswith(f"{API}/{job}") and r.headers["location"] == sub["status_url"]
    got = api.get(sub["status_url"], headers=READ).json()
    assert got["id"] == job and got["state"] == "queued" and got["request"]["scan"]["scan"] == "12.1"
    assert got["request"]["options"]["er_cycles"] == 20 and got["links"]["events"] == sub["events_url"]
    # same scan and options: the existing job (200), even at another priority; force makes a new one
    dup = api.post(API, json={**BODY, "priority": "high"}, headers=SUB)
    assert dup.status_code == 200 and dup.json()["id"] == job and dup.json()["duplicate"]
    forced = api.post(API, json={**BODY, "force": True, "priority": "high"}, headers=SUB)
    assert forced.status_code == 202 and forced.json()["id"] != job
    other = api.post(API, json={"scan": {"run_uid": "3f2a9c1e-77aa-4c1b-9d3e-0123456789ab"}}, headers=SUB)
    assert other.status_code == 202
    listing = api.get(API, headers=READ).json()
    assert listing["total"] == 3 and len(listing["items"]) == 3
    assert listing["items"][0]["id"] == other.json()["id"]  # newest first
    high = api.get(API, params={"priority": "high"}, headers=READ).json()
    assert [i["id"] for i in high["items"]] == [forced.json()["id"]] and high["total"] == 1
    page = api.get(API, params={"limit": 1, "offset": 1}, headers=READ).json()
    assert page["total"] == 3 and [i["id"] for i in page["items"]] == [listing["items"][1]["id"]]
    assert api.get(API, params={"state": "succeeded"}, headers=READ).json()["total"] == 0
    assert api.get(f"{API}/{'0' * 32}", headers=READ).status_code == 404


@pytest.mark.parametrize("body, field", [
    ({**BODY, "options": {"er_cycles": -1}}, "body.options.er_cycles"),
    ({**BODY, "options": {"crop_size": [64, 64]}}, "body.options.crop_size"),
    ({**BODY, "options": {"engine": "matlab"}}, "body.options.engine"),
    ({**BODY, "options": {"pre_recipe": "RAAR**200;rm -rf"}}, "body.options.pre_recipe"),
    ({**BODY, "options": {"pre_recipe": "RAAR**200", "er_cycles": 0}}, "body.options"),
    ({**BODY, "priority": "urgent"}, "body.priority"),
    ({"options": {}}, "body.scan"),
    ({"scan": {"tiled_path": "../etc/passwd"}}, "body.scan.tiled_path"),
    ({"scan": {"tiled_path": "raw/a", "run_uid": "3f2a9c1e77aa"}}, "body.scan"),
    ({**BODY, "colour": "blue"}, "body.colour"),
    ({"scan": {"tiled_path": "results/x", "scan": "1.1"}}, "body.scan.tiled_path"),
    ({"scan": {"tiled_path": "raw/x", "scan": "1.1.1"}}, "body.scan.scan"),
])
def test_validation_errors_are_422_naming_the_field(api, body, field):
    r = api.post(API, json=body, headers=SUB)
    assert r.status_code == 422
    msg = r.json()["message"]
    assert msg.startswith(field + ":") or f"; {field}:" in msg, msg


def test_bad_json_path_and_query_are_4xx(api):
    r = api.post(API, content=b"{not json", headers={**SUB, "content-type": "application/json"})
    assert r.status_code == 422 and "body" in r.json()["message"]
    r = api.get(f"{API}/not-a-job-id", headers=READ)
    assert r.status_code == 422 and "path.job_id" in r.json()["message"]
    r = api.get(API, params={"limit": 100000}, headers=READ)
    assert r.status_code == 422 and "query.limit" in r.json()["message"]


def test_request_size_limit(api, qsettings):
    big = {**BODY, "scan": {"tiled_path": "a/" * (qsettings.max_body_bytes // 2)}}
    r = api.post(API, json=big, headers=SUB)
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the streamed body is counted
        for _ in range(qsettings.max_body_bytes // 1000 + 2):
            yield b" " * 1000

    r = api.post(API, content=chunks(), headers={**SUB, "content-type": "application/json"})
    assert r.status_code == 413


def _routes(app):
    """Every (method, path) the app serves, except the public OpenAPI docs."""
    out = []
    for route in app.routes:
        path = getattr(route, "path", "")
        if path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/docs-assets"):  # public docs
            continue
        for method in sorted(getattr(route, "methods", ()) - {"HEAD"}):
            out.append((method, path.replace("{job_id}", "0" * 32)))
    return out


def test_every_endpoint_refuses_missing_and_wrong_keys(api):
    routes = _routes(api.app)
    assert {(m, p.split("/")[-1]) for m, p in routes} >= {("POST", "reconstructions"), ("GET", "reconstructions"),
                                                          ("GET", "0" * 32), ("DELETE", "0" * 32),
                                                          ("GET", "events"), ("GET", "health"), ("GET", "metrics")}
    for method, path in routes:
        kwargs = {"json": BODY} if method == "POST" else {}
        missing = api.request(method, path, **kwargs)
        assert missing.status_code == 401, (method, path, missing.text)
        wrong = api.request(method, path, headers={"X-API-Key": "not-a-key"}, **kwargs)
        assert wrong.status_code == 403, (method, path, wrong.text)
    # a read key may not submit or cancel
    assert api.post(API, json=BODY, headers=READ).status_code == 403
    assert "only read" in api.delete(f"{API}/{'0' * 32}", headers=READ).json()["detail"]


def test_cancel_queued_job_then_conflict_then_unknown(api):
    job = api.post(API, json=BODY, headers=SUB).json()["id"]
    r = api.delete(f"{API}/{job}", headers=SUB)
    assert r.status_code == 202 and r.json()["state"] == "cancelled"
    r = api.delete(f"{API}/{job}", headers=SUB)
    assert r.status_code == 409 and "already cancelled" in r.json()["detail"]
    assert api.delete(f"{API}/{'f' * 32}", headers=SUB).status_code == 404
    # a cancelled job does not block resubmission
    again = api.post(API, json=BODY, headers=SUB)
    assert again.status_code == 202 and again.json()["id"] != job


def test_events_stream_progress_until_success_and_metrics(qsettings):
    tiled = shared_tiled()
    s = qsettings.model_copy(update={"tiled_url": tiled.url})
    with TestClient(create_app(s)) as api:
        # Tiled is up here, so the gateway checks the reference: name a scan the shared server really has
        real = {"tiled_path": "raw/PtNP/PtNP_0001", "scan": "1.1", "detector": "mpx1x4"}
        job = api.post(API, json={**BODY, "scan": real, "options": {"method": "cnn-er", "er_cycles": 60, "crop_size": [16, 16, 16]}},
                       headers=SUB).json()["id"]
        events = []
        with ExitStack() as stack:
            r = stack.enter_context(api.stream("GET", f"{API}/{job}/events", headers=READ))
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in r.iter_lines():
                if line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    events.append((name, json.loads(line[5:])))
                    if len(events) == 1:  # the queued snapshot arrived: now let a worker take the job
                        stack.enter_context(worker_thread(s, "sse-worker"))
        assert all(n == "status" for n, _ in events)
        states = [e["state"] for _, e in events]
        assert states[0] == "queued" and states[-1] == "succeeded" and "running" in states
        phasing = [e["progress"] for _, e in events if e["stage"] == "phasing"]
        assert len(phasing) >= 2 and phasing == sorted(phasing)
        final = events[-1][1]
        assert final["result_path"] == f"results/{job}" and final["browser_url"].endswith(f"/ui/browse/results/{job}")
        assert set(final["timings"]) >= {"queue_wait", "read", "phasing", "publish"}
        # the stream of a finished job is its final state at once
        with api.stream("GET", f"{API}/{job}/events", headers=READ) as r:
            lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
        assert len(lines) == 1 and json.loads(lines[0][5:])["state"] == "succeeded"
        assert api.get(f"{API}/{'0' * 32}/events", headers=READ).status_code == 404

        health = api.get("/health", headers=READ)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        metrics = api.get("/metrics", headers=READ).text
        assert 'bcdi_jobs_submitted_total{duplicate="false",priority="normal"} 1.0' in metrics
        assert 'bcdi_jobs_finished_total{state="succeeded"} 1.0' in metrics
        assert 'bcdi_queue_entries{priority="normal"} 0.0' in metrics and "bcdi_redis_up 1.0" in metrics
        assert 'bcdi_http_requests_total{method="POST",route="/api/v1/reconstructions",status="202"} 1.0' in metrics


def test_redis_down_gives_503_not_500_and_health_names_it():
    s = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(s)) as api:
        r = api.post(API, json=BODY, headers=SUB)
        assert r.status_code == 503 and "Redis" in r.json()["detail"]
        assert api.get(API, headers=READ).status_code == 503
        h = api.get("/health", headers=READ)
        assert h.status_code == 503 and not h.json()["checks"]["redis"]["ok"]
        assert s.redis_url in h.json()["checks"]["redis"]["error"]
        assert "bcdi_redis_up 0.0" in api.get("/metrics", headers=READ).text


def test_no_keys_configured_is_a_clear_startup_error():
    with pytest.raises(ValueError, match="no API keys configured"):
        create_app(make_settings(submit_api_keys=[], read_api_keys=[]))


def test_gateway_imports_no_torch_workers_or_models():
    code = ("import sys, service.app, cli.cmd_serve, cli.cmd_worker; "
            "bad = [m for m in sys.modules if m == 'torch' or m.split('.')[0] in ('workers', 'models')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_serve_without_keys_is_one_line_error(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([PYTHON, "-m", "cli.main", "serve", "--port", "1"], cwd=REPO, capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "no API keys configured" in r.stderr
    r = subprocess.run([PYTHON, "-m", "cli.main", "worker", "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0 and "SIGTERM" in r.stdout
