"""Security headers on every answer, errors and cached hits included, and the sites that may frame the lab."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.http import cache as http_cache
from app.http.security import CSP, DOCS_CSP
from app.lab import memo
from app.main import create_app
from app.settings import Settings
from app.web import html
from tests.support.http import assert_security_headers

ERROR_REQUESTS = [
    ("GET", "/nowhere", {}, b"", 404),
    ("GET", "/api/nowhere", {}, b"", 404),
    ("GET", "/static/nowhere.js", {}, b"", 404),
    ("GET", "/api/experiments/nowhere?preset=testmodel", {}, b"", 404),
    ("GET", "/api/lab?preset=nowhere", {}, b"", 404),
    ("POST", "/api/health", {}, b"", 405),
    ("PUT", "/", {}, b"", 405),
    ("DELETE", "/api/lab", {}, b"", 405),
    ("PATCH", "/static/app.css", {}, b"", 405),
    ("POST", "/api/lab", {"content-type": "application/json"}, b" " * 20_000, 413),
    ("GET", "/api/health", {"x-big": "x" * 17_000}, b"", 431),
    ("GET", "/?preset=testmodel", {"accept-language": "x" * 17_000}, b"", 431),
    ("GET", "/api/lab?preset=testmodel&" + "x" * 9000, {}, b"", 414),
    ("GET", "/api/lab?preset=testmodel&style.buffer1=bogus", {}, b"", 422),
    ("POST", "/api/lab", {"content-type": "application/json"}, b'{"preset": NaN}', 422),
    ("GET", "/?preset=custom&style.w=buffer&shape.w=2&add=1&new=x", {}, b"", 303),
]


@pytest.mark.parametrize(("method", "url", "headers", "body", "status"), ERROR_REQUESTS)
def test_every_error_carries_the_security_headers(
    quiet: TestClient, method: str, url: str, headers: dict, body: bytes, status: int
) -> None:
    for _ in range(2):  # a cacheable answer the second time from the cache
        response = quiet.request(method, url, headers=headers, content=body, follow_redirects=False)
        assert response.status_code == status, response.text[:200]
        assert_security_headers(response)


def test_a_streamed_body_over_the_cap_is_413_with_the_headers(quiet: TestClient) -> None:
    chunks = (b" " * 4096 for _ in range(8))
    response = quiet.post("/api/lab", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert_security_headers(response)


def test_cached_answers_and_304s_carry_them_once(quiet: TestClient) -> None:
    first = quiet.get("/api/lab", params={"preset": "mymodule"})
    hit = quiet.get("/api/lab", params={"preset": "mymodule"})
    assert 'desc="hit"' in hit.headers["server-timing"]
    unchanged = quiet.get(
        "/api/lab", params={"preset": "mymodule"}, headers={"if-none-match": first.headers["etag"]}
    )
    assert unchanged.status_code == 304
    for response in (first, hit, unchanged, quiet.get("/docs")):
        assert_security_headers(response, DOCS_CSP if response.url.path == "/docs" else CSP)


BROKEN = {  # a function that fails, and a request that calls it
    "route": (memo, "report_json", "/api/lab?preset=testmodel"),
    "page": (html, "render", "/?preset=mymodule"),
    "cache": (http_cache, "make_entry", "/api/presets"),
}


@pytest.mark.parametrize("where", BROKEN)
def test_an_unexpected_exception_is_a_json_500_with_the_headers(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    module, name, url = BROKEN[where]
    monkeypatch.setattr(module, name, boom)
    app = create_app()
    response = TestClient(app, raise_server_exceptions=False).get(url)
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error; the server log has the traceback"}
    assert_security_headers(response)
    with pytest.raises(RuntimeError, match="a bug"):  # and the server still logs it
        TestClient(app).get(url)


def test_frame_ancestors_name_the_sites_that_may_embed_the_lab() -> None:
    sites = "'self' https://slides.example.org https://*.course.example.edu:8443"
    framed = TestClient(create_app(Settings(frame_ancestors=sites)))
    for url in ("/?embed=1", "/?embed=1", "/api/health", "/nowhere"):  # a miss, then a hit
        headers = framed.get(url).headers
        assert f"frame-ancestors {sites};" in headers["content-security-policy"] + ";"
        assert "x-frame-options" not in headers  # it cannot name sites; browsers follow the CSP
    only_self = TestClient(create_app(Settings(frame_ancestors="'self'"))).get("/").headers
    assert only_self["x-frame-options"] == "SAMEORIGIN"


@pytest.mark.parametrize(
    "value", ["https://a.org; script-src *", "https://a.org\r\nx: y", "javascript:", "*"]
)
def test_frame_ancestors_that_would_break_the_header_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="frame-ancestors source"):
        Settings(frame_ancestors=value)
