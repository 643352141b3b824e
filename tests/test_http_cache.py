"""Cached answers are exactly fresh ones; ETags give 304s; gzip where asked; memory is bounded."""

from __future__ import annotations

import gzip

import pytest
from fastapi.testclient import TestClient

from app.lab import memo
from app.lab.devices import device_ids
from app.lab.inspect import inspect
from app.lab.spec import LabSpec, resolve
from app.main import create_app
from app.settings import Settings

QUERY = {"preset": "testmodel", "device": "meta", "style.buffer1": "nn_buffer"}


@pytest.fixture
def fresh_client() -> TestClient:
    memo.clear()
    return TestClient(create_app())


def test_cached_report_equals_a_fresh_one(fresh_client: TestClient) -> None:
    first = fresh_client.get("/api/lab", params=QUERY)
    second = fresh_client.get("/api/lab", params=QUERY)
    assert 'desc="miss"' in first.headers["server-timing"] and 'desc="hit"' in second.headers["server-timing"]
    spec = resolve(LabSpec(preset="testmodel", device="meta", styles={"buffer1": "nn_buffer"}), device_ids())
    fresh = inspect(spec).model_dump(mode="json")  # built now, no cache involved
    assert first.json() == second.json() == fresh
    assert first.content == second.content


def test_cached_page_equals_a_fresh_one(fresh_client: TestClient) -> None:
    first = fresh_client.get("/", params=QUERY).text
    assert fresh_client.get("/", params=QUERY).text == first
    uncached = TestClient(create_app()).get("/", params=QUERY).text
    assert uncached == first


def test_etag_gives_304(fresh_client: TestClient) -> None:
    first = fresh_client.get("/api/lab", params=QUERY)
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    again = fresh_client.get("/api/lab", params=QUERY, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other = fresh_client.get("/api/lab", params={**QUERY, "device": "cpu"}, headers={"If-None-Match": etag})
    assert other.status_code == 200


def test_gzip_when_accepted(fresh_client: TestClient) -> None:
    raw = fresh_client.get("/", params=QUERY, headers={"Accept-Encoding": "identity"})
    packed = fresh_client.get("/", params=QUERY, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in raw.headers
    assert packed.headers["content-encoding"] == "gzip" and packed.text == raw.text  # httpx unpacks it
    assert int(packed.headers["content-length"]) < len(gzip.compress(raw.content)) + 64


def test_static_assets_are_hashed_and_cached_for_a_year(fresh_client: TestClient) -> None:
    html = fresh_client.get("/").text
    url = html.split('src="', 1)[1].split('"', 1)[0]
    assert url.startswith("/static/htmx-2.0.11.min.js?v=")
    response = fresh_client.get(url)
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    stale = fresh_client.get("/static/htmx-2.0.11.min.js?v=old")
    assert stale.headers["cache-control"] == "no-cache"
    assert fresh_client.get("/static/nope.js").status_code == 404


def test_response_cache_is_bounded() -> None:
    client = TestClient(create_app(Settings(response_cache_entries=8)))
    for device in ("cpu", "meta"):
        for style in ("parameter", "buffer", "plain_tensor", "nn_buffer", "frozen_parameter"):
            assert client.get(
                "/api/lab", params={"preset": "mymodule", "device": device, "style.bias": style}
            ).is_success
    assert len(client.app.state.responses) == 8
