"""Static files, read once into memory, linked by URLs that carry a content hash so browsers may
keep them for a year. Each is gzipped once, at its first request, and answered like an HTTP cache
hit (ETag, 304, gzip when accepted); the query only says whether the version is the current one,
so no URL a client invents makes the server compress or keep anything more."""

from __future__ import annotations

import hashlib
import mimetypes
from functools import cache
from pathlib import Path

from fastapi import Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.datastructures import QueryParams
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from app.http.cache import Entry, compress, make_entry, send_entry
from app.resources import resource_dir

STATIC = resource_dir("static")
FOREVER = "public, max-age=31536000, immutable"


class Assets:
    def __init__(self, directory: Path) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.versions: dict[str, str] = {}
        self.answers: dict[str, dict[bool, Entry]] = {}  # built at each file's first request
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

    def entries(self, name: str) -> dict[bool, Entry]:
        """The answers for ``name``, by whether the URL names its current version."""
        if name in self.answers:
            return self.answers[name]
        body, media_type = self.files[name]
        gzipped = compress(body)
        self.answers[name] = {
            fresh: make_entry(200, self.headers(media_type, FOREVER if fresh else "no-cache"), body, gzipped)
            for fresh in (True, False)
        }
        return self.answers[name]

    @staticmethod
    def headers(media_type: str, cache_control: str) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", media_type.encode()),
            (b"cache-control", cache_control.encode()),
            (b"vary", b"Accept-Encoding"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path_params"]["name"]
        if name not in self.files:
            await PlainTextResponse(f"no static file {name!r}", 404)(scope, receive, send)
            return
        fresh = QueryParams(scope["query_string"]).get("v") == self.versions[name]
        await send_entry(scope, send, self.entries(name)[fresh], [])


@cache
def static_assets() -> Assets:
    return Assets(STATIC)


SWAGGER = "swagger-ui-5.35.0"  # vendored from npm swagger-ui-dist, like htmx


async def api_docs(request: Request) -> HTMLResponse:
    """/docs: Swagger UI from the vendored copy (no CDN)."""
    assets = static_assets()
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Module Registration Explorer - API",
        swagger_js_url=assets.url(f"{SWAGGER}/swagger-ui-bundle.js"),
        swagger_css_url=assets.url(f"{SWAGGER}/swagger-ui.css"),
        swagger_favicon_url=assets.url("favicon.svg"),
    )
