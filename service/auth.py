"""API-key authentication: a submit key may submit, cancel and read; a read key may only read.

Keys arrive in the X-API-Key header. No key -> 401, a key that is not allowed for the action -> 403.
Comparison is constant-time (hmac.compare_digest) against every configured key.
"""
from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

HEADER = "X-API-Key"

api_key_header = APIKeyHeader(name=HEADER, auto_error=False,
                              description="a submit key (submit, cancel, read) or a read key (read only)")


def _matches(key: str, allowed: list[str]) -> bool:
    found = False
    for candidate in allowed:
        found |= hmac.compare_digest(key.encode(), candidate.encode())
    return found


def _missing() -> HTTPException:
    return HTTPException(401, f"missing API key: send it in the {HEADER} header", headers={"WWW-Authenticate": HEADER})


def require_read(request: Request, key: str | None = Security(api_key_header)) -> str:
    """Dependency: any valid key (read or submit)."""
    s = request.app.state.settings
    if not key:
        raise _missing()
    if not (_matches(key, s.read_api_keys) or _matches(key, s.submit_api_keys)):
        raise HTTPException(403, "API key not valid")
    return "submit" if _matches(key, s.submit_api_keys) else "read"


def require_submit(request: Request, key: str | None = Security(api_key_header)) -> str:
    """Dependency: a submit key."""
    s = request.app.state.settings
    if not key:
        raise _missing()
    if not _matches(key, s.submit_api_keys):
        msg = ("this API key may only read; submitting and cancelling need a submit key"
               if _matches(key, s.read_api_keys) else "API key not valid")
        raise HTTPException(403, msg)
    return "submit"
