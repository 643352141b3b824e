"""HEAD on every GET route (RFC 9110 9.3.2): the GET's status and headers, without its body.

FastAPI routes answer only the methods they declare, so HEAD was a 405 on most of them. Routed as
a GET instead, a HEAD can never disagree with its GET, and a route that has no GET still says 405.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        await self.app({**scope, "method": "GET"}, receive, without_body(send))


def without_body(send: Send) -> Send:
    """``send`` with every body left out: what a HEAD gets of its GET's answer."""

    async def bodiless(message: Message) -> None:
        await send({**message, "body": b""} if message["type"] == "http.response.body" else message)

    return bodiless
