"""The gateway's access log: one JSON line per request with method, path, status, key id and duration.

The key itself is never logged: `key_id` is the first 12 hex digits of its SHA-256, which identifies a key in the
log (and in rotation, see docs/operations.md) without revealing it. Lines go to the logger ``bcdi.gateway.access``
(stderr by default, so the gateway's log file gets them); BCDI_ACCESS_LOG=/path/file.jsonl writes them to a file.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sys
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOGGER = "bcdi.gateway.access"
HEADER = b"x-api-key"


def key_id(key: str | None) -> str | None:
    """A non-secret id of an API key: 'sha256:' + the first 12 hex digits of its SHA-256 (None without a key)."""
    if not key:
        return None
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def access_logger(path: str | None = None) -> logging.Logger:
    """The access logger, with one handler writing bare JSON lines (to `path`, BCDI_ACCESS_LOG, else stderr)."""
    log = logging.getLogger(LOGGER)
    if not log.handlers:
        path = path or os.environ.get("BCDI_ACCESS_LOG")
        handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


class AccessLog:
    """ASGI middleware: times each HTTP request and logs it once the response has started (status known)."""

    def __init__(self, app: ASGIApp, settings=None, logger: logging.Logger | None = None):
        self.app = app
        self.settings = settings
        self.log = logger or access_logger()

    def _role(self, key: str | None) -> str | None:
        if not key or self.settings is None:
            return None

        def match(keys) -> bool:
            return any(hmac.compare_digest(key.encode(), k.encode()) for k in keys or ())

        if match(self.settings.submit_api_keys):
            return "submit"
        return "read" if match(self.settings.read_api_keys) else "invalid"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            headers = dict(scope.get("headers") or [])
            raw = headers.get(HEADER)
            key = raw.decode("latin-1") if raw else None
            line = {"ts": round(time.time(), 3), "method": scope.get("method"), "path": scope.get("path"),
                    "status": status["code"], "key_id": key_id(key), "role": self._role(key),
                    "duration_ms": round(1e3 * (time.perf_counter() - t0), 2),
                    "client": (scope.get("client") or [None])[0]}
            self.log.info(json.dumps(line))
