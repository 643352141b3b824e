"""Caps on what a request may make the server hold: its body (413) and its head, the target (414)
and the headers (431). Each refusal is JSON naming the limit."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _TooLarge(HTTPException):
    # An HTTPException so that FastAPI's body reader re-raises it instead of answering 400.
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _message(max_bytes))


def _message(max_bytes: int) -> str:
    return f"request body over the limit of {max_bytes} bytes"


class BodyLimit:
    """Refuses bodies over ``max_bytes``: at once from Content-Length, else while streaming.

    ``larger`` gives some paths (uploads) their own cap; every other route keeps ``max_bytes``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.larger.get(scope["path"], self.max_bytes)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > max_bytes:
            await refuse(send, 413, _message(max_bytes))
            return
        if b"transfer-encoding" not in headers and declared in (b"", b"0"):
            # No body can follow (RFC 9112 6.3): nothing to count, so no wrapper on the hot path.
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise _TooLarge(max_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if started:
                raise
            await refuse(send, 413, _message(max_bytes))


def header_bytes(scope: Scope) -> int:
    """The request's headers as on the wire: "name: value" and CRLF for each."""
    return sum(len(k) + len(v) + 4 for k, v in scope["headers"])


def url_bytes(scope: Scope) -> int:
    """The request target as sent: path, and "?" and query where there is one."""
    query = scope["query_string"]
    return len(scope.get("raw_path") or b"") + (len(query) + 1 if query else 0)


class HeadLimit:
    """Refuses a request target over ``max_url_bytes`` (414) or headers over ``max_header_bytes`` in
    all (431), before anything keeps them: the HTTP cache keys by what a page reads of a header."""

    def __init__(self, app: ASGIApp, max_url_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if header_bytes(scope) > self.max_header_bytes:
            await refuse(send, 431, f"request headers over the limit of {self.max_header_bytes} bytes in all")
        elif url_bytes(scope) > self.max_url_bytes:
            await refuse(send, 414, f"request URL over the limit of {self.max_url_bytes} bytes")
        else:
            await self.app(scope, receive, send)


async def refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
