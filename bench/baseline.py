"""The web stack's limit: a FastAPI app whose one async route returns fixed JSON bytes.
No route of ours can do less work than this one, so our figures are reported as ratios to it."""

from fastapi import FastAPI
from fastapi.responses import Response

BODY = b'{"status":"ok","note":"fixed bytes: the most a FastAPI route can do with the least work"}'

app = FastAPI()


@app.get("/fixed")
async def fixed() -> Response:
    return Response(BODY, media_type="application/json")
