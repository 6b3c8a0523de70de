"""Request size limit as plain ASGI middleware: bodies over max_bytes get 413 before they are parsed.

Checks Content-Length up front and also counts streamed (chunked) bodies, so a client cannot bypass the
limit by leaving the header out.
"""
from __future__ import annotations

import json

from starlette.exceptions import HTTPException


class _TooLarge(HTTPException):
    """Raised from receive(); FastAPI re-raises HTTPExceptions from body reading, so the client gets 413."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is over the {limit}-byte limit")


class BodySizeLimit:
    """Refuse HTTP request bodies larger than `max_bytes` with 413 (and a malformed Content-Length with 400)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _reply(self, send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return await self._reply(send, 400, "invalid Content-Length header")
                if length > limit:
                    return await self._reply(send, 413, f"request body of {length} bytes is over the "
                                                        f"{limit}-byte limit")
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reply(send, 413, f"request body is over the {limit}-byte limit")
