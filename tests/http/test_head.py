"""HEAD on every GET route: the GET's status and headers without its body; 405 where there is no GET."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.http.security import CSP, DOCS_CSP
from app.main import create_app
from tests.support.http import assert_security_headers


def methods_by_path(routes: list, prefix: str = "") -> dict[str, set[str]]:
    """Every path the app routes (through included routers too) and the methods it declares."""
    found: dict[str, set[str]] = {}
    for route in routes:
        if hasattr(route, "original_router"):  # FastAPI's include_router
            inner = methods_by_path(route.original_router.routes, prefix + route.include_context.prefix)
            for path, methods in inner.items():
                found.setdefault(path, set()).update(methods)
        elif getattr(route, "methods", None):
            found.setdefault(prefix + route.path, set()).update(route.methods)
    return found


def routes(with_get: bool) -> list[str]:
    """A URL for every path with (or without) a GET route, path parameters filled in."""
    fill = {"{experiment_id}": "step", "{name:path}": "app.css", "{lesson_id}": "register-parameter"}
    fill |= {"{code}": "ABCD2345", "{arch_id}": "gpt2_tiny"}  # no such class: its 404
    urls = []
    for path, methods in methods_by_path(create_app().routes).items():
        if ("GET" in methods) is with_get:
            for param, value in fill.items():
                path = path.replace(param, value)
            assert "{" not in path, f"fill in {path}"
            urls.append(path)
    return urls


@pytest.mark.parametrize("path", routes(with_get=True))
@pytest.mark.parametrize("query", ["", "?preset=testmodel&device=meta", "?preset=nowhere"])
def test_head_answers_like_get_without_the_body(quiet: TestClient, path: str, query: str) -> None:
    for _ in range(2):  # a miss, then (where cacheable) a hit
        head = quiet.head(path + query)
        get = quiet.get(path + query)
        assert head.status_code == get.status_code != 405
        assert head.content == b""
        same = ("content-type", "content-length", "etag", "cache-control", "vary", "content-encoding")
        assert {k: head.headers.get(k) for k in same} == {k: get.headers.get(k) for k in same}
        assert_security_headers(head, DOCS_CSP if path == "/docs" else CSP)


@pytest.mark.parametrize("path", routes(with_get=False))
def test_head_where_there_is_no_get_is_405(quiet: TestClient, path: str) -> None:
    response = quiet.head(path)
    assert response.status_code == quiet.get(path).status_code == 405
    assert "POST" in response.headers["allow"]
