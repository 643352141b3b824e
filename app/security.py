"""Security headers on every response: a strict CSP (no inline script or style, nothing from
elsewhere), no sniffing, no framing, no referrer leaking a lab URL elsewhere.

The middleware is the outermost of ours, so every answer gets them, errors included: cached ones,
413s, 431s, the router's 404s and 405s, and the JSON 500 it sends itself for any exception that
got that far (the last resort; no input should ever reach it).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
# /docs is Swagger UI (vendored), started by one inline script: it alone may run inline code, and
# still nothing from elsewhere.
DOCS_CSP = CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'").replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'"
)


INTERNAL = json.dumps({"detail": "internal server error; the server log has the traceback"}).encode()


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_CSP if scope["path"] == "/docs" else CSP
        extra = [*HEADERS, (b"content-security-policy", policy.encode())]
        started = False

        async def with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except Exception:
            if not started:
                headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(INTERNAL))]
                await with_headers({"type": "http.response.start", "status": 500, "headers": headers})
                await with_headers({"type": "http.response.body", "body": INTERNAL})
            raise  # for the server's log (Starlette's own 500 sees the answer sent and stays out)
