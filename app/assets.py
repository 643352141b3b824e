"""Static files, read once into memory, linked by URLs that carry a content hash so browsers may
keep them for a year. (Compression and ETags come from the HTTP cache in front of the app.)"""

from __future__ import annotations

import hashlib
import mimetypes
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from app.resources import resource_dir

STATIC = resource_dir("static")
FOREVER = "public, max-age=31536000, immutable"


class Assets:
    def __init__(self, directory: Path) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.versions: dict[str, str] = {}
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            name = path.relative_to(directory).as_posix()
            body = path.read_bytes()
            media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            if media_type.startswith("text/") or media_type.endswith(("javascript", "json", "svg+xml")):
                media_type += "; charset=utf-8"
            self.files[name] = (body, media_type)
            self.versions[name] = hashlib.blake2b(body, digest_size=6).hexdigest()

    def url(self, name: str) -> str:
        """The URL to put in a page: changes whenever the file does."""
        return f"/static/{name}?v={self.versions[name]}"

    async def serve(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.files:
            return PlainTextResponse(f"no static file {name!r}", 404)
        body, media_type = self.files[name]
        fresh = request.query_params.get("v") == self.versions[name]
        headers = {"Cache-Control": FOREVER if fresh else "no-cache", "Vary": "Accept-Encoding"}
        return Response(body, media_type=media_type, headers=headers)


@cache
def static_assets() -> Assets:
    return Assets(STATIC)
