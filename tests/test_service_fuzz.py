"""Property-based fuzzing of the gateway against its own OpenAPI schema (schemathesis): no request, valid or
malformed (positive and negative generation modes), may produce a 5xx. Runs on a real Redis with a private key
prefix; examples are bounded so the file stays well under a minute on the 2-core CI machine.

One designed exception: /health answers 503 when a dependency is down (Tiled is, on purpose, here); that
answer must then be the documented degraded report naming Tiled."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from service_fixtures import READ_KEY, SUBMIT_KEY, drop_keys, make_settings, redis_available

from service.app import create_app

SETTINGS = make_settings()
APP = create_app(SETTINGS)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _redis_and_cleanup():
    if not redis_available():
        pytest.fail("Redis is not running on 127.0.0.1:6379")
    yield
    drop_keys(SETTINGS)


def _check_no_server_error(case, response) -> None:
    if case.path == "/health" and response.status_code == 503:
        body = response.json()
        assert body["status"] == "degraded" and body["checks"]["redis"]["ok"] and not body["checks"]["tiled"]["ok"]
        return
    case.validate_response(response, checks=[not_a_server_error])


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors_with_submit_key(case):
    """Generated requests sent with a submit key: never a 5xx."""
    _check_no_server_error(case, case.call(headers={"X-API-Key": SUBMIT_KEY}))


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_read_key_never_writes_and_never_5xx(case):
    """Generated requests sent with a read key: POST and DELETE never succeed, nothing is a 5xx."""
    response = case.call(headers={"X-API-Key": READ_KEY})
    _check_no_server_error(case, response)
    if case.method in ("POST", "DELETE"):
        assert 400 <= response.status_code < 500, response.text
