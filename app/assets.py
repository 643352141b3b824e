"""Static files served from memory: gzipped once, strong ETags, and URLs that carry a content
hash so browsers may cache them for a year."""

from __future__ import annotations

import hashlib
import mimetypes
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from app.http_cache import Entry, make_entry, send

STATIC = Path(__file__).parent.parent / "static"
FOREVER = "public, max-age=31536000, immutable"


class Assets:
    def __init__(self, directory: Path) -> None:
        self.entries: dict[str, Entry] = {}
        self.versions: dict[str, str] = {}
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            name = path.relative_to(directory).as_posix()
            body = path.read_bytes()
            self.entries[name] = make_entry(body)
            self.versions[name] = hashlib.blake2b(body, digest_size=6).hexdigest()

    def url(self, name: str) -> str:
        """The URL to put in a page: changes whenever the file does."""
        return f"/static/{name}?v={self.versions[name]}"

    async def serve(self, request: Request) -> Response:
        name = request.path_params["name"]
        entry = self.entries.get(name)
        if entry is None:
            return PlainTextResponse(f"no static file {name!r}", 404)
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type.endswith(("javascript", "json", "svg+xml")):
            media_type += "; charset=utf-8"
        fresh = request.query_params.get("v") == self.versions[name]
        cache = FOREVER if fresh else "no-cache"
        return send(request, entry, media_type, {"Cache-Control": cache, "Vary": "Accept-Encoding"})


@cache
def static_assets() -> Assets:
    return Assets(STATIC)
