"""Security headers on every response: a strict CSP (no inline script or style, nothing from
elsewhere), no sniffing, no framing (except by the sites MRE_FRAME_ANCESTORS names, for a lab
embedded in slides or a course page), no referrer leaking a lab URL elsewhere.

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
]
# /docs is Swagger UI (vendored), started by one inline script: it alone may run inline code, and
# still nothing from elsewhere.
DOCS_CSP = CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'").replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'"
)


INTERNAL = json.dumps({"detail": "internal server error; the server log has the traceback"}).encode()


def framing(ancestors: str) -> tuple[str, list[tuple[bytes, bytes]]]:
    """The CSP frame-ancestors directive and the X-Frame-Options header for the allowed framers.

    X-Frame-Options can say only DENY or SAMEORIGIN; for named sites it is left out, and browsers
    follow frame-ancestors (which overrides it where both are sent)."""
    sources = ancestors.split() or ["'none'"]
    legacy = {"'none'": b"DENY", "'self'": b"SAMEORIGIN"}.get(" ".join(sources))
    return f"frame-ancestors {' '.join(sources)}", [(b"x-frame-options", legacy)] if legacy else []


def security_headers(frame_ancestors: str = "", docs: bool = False) -> list[tuple[bytes, bytes]]:
    """Every answer's security headers (``docs``: for the API docs page, which runs inline code)."""
    directive, frame_options = framing(frame_ancestors)
    policy = (DOCS_CSP if docs else CSP).replace("frame-ancestors 'none'", directive)
    return [*HEADERS, *frame_options, (b"content-security-policy", policy.encode())]


class SecurityHeaders:
    def __init__(self, app: ASGIApp, frame_ancestors: str = "") -> None:
        self.app = app
        self.headers = {docs: security_headers(frame_ancestors, docs) for docs in (True, False)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.headers[scope["path"] == "/docs"]
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
