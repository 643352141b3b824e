"""Caps on what a request may make the server hold: headers (431), URL (414), body (413)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.http.security import CSP, DOCS_CSP
from app.main import create_app
from app.settings import Settings
from tests.support.http import ASSET, assert_security_headers

HEAD_URLS = [
    "/",
    "/?preset=testmodel",
    "/api/lab?preset=testmodel",
    "/api/health",
    ASSET,
    "/docs",
    "/nowhere",
]


HEADER_NAMES = [
    "accept-language",
    "hx-current-url",
    "hx-request",
    "accept-encoding",
    "if-none-match",
    "cookie",
    "user-agent",
    "x-anything",
]


@pytest.mark.parametrize("url", HEAD_URLS)
@pytest.mark.parametrize("name", HEADER_NAMES)
def test_a_header_over_the_cap_is_431(quiet: TestClient, url: str, name: str) -> None:
    quiet.get(url)  # cached where it can be: the cap holds for a hit too
    response = quiet.get(url, headers={name: "x" * 16_400})
    assert response.status_code == 431
    assert response.json() == {"detail": "request headers over the limit of 16384 bytes in all"}
    assert_security_headers(response, DOCS_CSP if url == "/docs" else CSP)
    assert (
        quiet.post("/api/lab", json={"preset": "testmodel"}, headers={name: "y" * 16_400}).status_code == 431
    )


def test_many_small_headers_count_together_and_the_cap_is_a_setting() -> None:
    client = TestClient(create_app(Settings(max_header_bytes=2000)))
    under = {f"x-h{i}": "v" * 30 for i in range(30)}  # 30 * (5 + 30 + 4) plus httpx's own: under 2000
    assert client.get("/api/health", headers=under).status_code == 200
    over = {f"x-h{i}": "v" * 30 for i in range(60)}
    response = client.get("/api/health", headers=over)
    assert response.status_code == 431 and "2000" in response.json()["detail"]


def test_a_url_over_the_cap_is_414(quiet: TestClient) -> None:
    for url in ("/api/lab?preset=testmodel&x=" + "a" * 8200, "/" + "p" * 8200, "/static/" + "s" * 8200):
        response = quiet.get(url)
        assert response.status_code == 414 and "8192" in response.json()["detail"]
        assert_security_headers(response)
    assert quiet.get("/api/lab?preset=testmodel&device=cpu" + "&" * 7000).status_code < 414


def test_the_url_cap_counts_the_question_mark(client: TestClient) -> None:
    cap = Settings().max_url_bytes
    path = "/api/lab?preset=testmodel&device=cpu&style.buffer1="
    at_cap = path + "x" * (cap - len(path))  # the target as sent: exactly the cap
    assert client.get(at_cap).status_code != 414
    assert client.get(at_cap + "x").status_code == 414
