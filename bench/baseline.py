"""The server's own limit: a bare ASGI callable answering fixed bytes under the same uvicorn.
No route of ours can do less work than this, so our figures are reported as ratios to it."""

BODY = b'{"status":"ok","note":"fixed bytes: the least an ASGI app under this uvicorn can do"}'
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
}
END = {"type": "http.response.body", "body": BODY}


async def app(scope: dict, receive: object, send: object) -> None:
    if scope["type"] == "lifespan":
        return  # uvicorn's lifespan "auto" takes an app that does not speak it
    await send(START)  # type: ignore[operator]
    await send(END)  # type: ignore[operator]
