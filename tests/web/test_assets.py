"""Static files: linked by URLs that carry a hash of their content (cached for a year), answered like
a cache hit (ETag, 304, gzip when asked); a URL naming an old version is answered, not cached."""

from __future__ import annotations

import gzip
import hashlib

from fastapi.testclient import TestClient

from app.web.assets import STATIC, static_assets


def test_static_assets(client: TestClient) -> None:
    assert client.get("/static/htmx-2.0.11.min.js").status_code == 200
    assert client.get("/static/favicon.svg").status_code == 200
    assert client.get("/static/app.css").status_code == 200


def test_a_files_url_changes_with_its_content_and_is_kept_a_year() -> None:
    assets = static_assets()
    body = (STATIC / "app.css").read_bytes()
    assert assets.url("app.css") == f"/static/app.css?v={hashlib.blake2b(body, digest_size=6).hexdigest()}"


def test_the_current_version_is_immutable_an_old_one_is_revalidated(client: TestClient) -> None:
    current = client.get(static_assets().url("app.js"), headers={"accept-encoding": "identity"})
    old = client.get("/static/app.js?v=old", headers={"accept-encoding": "identity"})
    assert current.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert old.headers["cache-control"] == "no-cache" and old.content == current.content
    again = client.get(
        static_assets().url("app.js"),
        headers={"if-none-match": current.headers["etag"], "accept-encoding": "identity"},
    )
    assert again.status_code == 304


def test_gzip_when_asked_and_the_same_bytes_inside() -> None:
    from app.main import create_app

    with TestClient(create_app()) as c:
        packed = c.get(static_assets().url("app.js"), headers={"accept-encoding": "gzip"})
        raw = c.get(static_assets().url("app.js"), headers={"accept-encoding": "identity"})
    assert packed.headers.get("content-encoding") in (None, "gzip")  # httpx unpacks it for us
    assert packed.content == raw.content == (STATIC / "app.js").read_bytes()
    assert gzip.decompress(gzip.compress(raw.content)) == raw.content


def test_an_unknown_file_is_404(client: TestClient) -> None:
    assert client.get("/static/nope.js").status_code == 404
