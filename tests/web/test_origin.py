"""Where a state-changing request comes from: a browser's Origin (or Sec-Fetch-Site) must name this
site, or an origin the app allows; a client that names none is no browser acting for someone."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from app.errors import Refusal
from app.web.origin import CrossOrigin, check_origin, origin_of


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://a.example", ("http", "a.example", 80)),
        ("https://A.example", ("https", "a.example", 443)),
        ("http://a.example:8000/rooms/X", ("http", "a.example", 8000)),
        ("http://[::1]:8000", ("http", "::1", 8000)),
        ("null", None),
        ("http://", None),
        ("http://a.example:99999", None),
        ("gopher://a.example", None),  # no port known for it
        ("", None),
    ],
)
def test_origin_of(url: str, origin) -> None:
    assert origin_of(url) == origin


def app_with(*also: str) -> TestClient:
    app = FastAPI()

    @app.post("/change")
    async def change(request: Request) -> dict:
        check_origin(request, *also)
        return {"ok": True}

    @app.exception_handler(Refusal)
    async def refused(request: Request, exc: Exception):
        from fastapi.responses import JSONResponse

        assert isinstance(exc, CrossOrigin)
        return JSONResponse({"detail": exc.message}, exc.status)

    return TestClient(app)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),  # curl, a program: no browser acting for anyone
        ({"Origin": "http://testserver"}, 200),
        ({"Origin": "http://testserver:80"}, 200),
        ({"Sec-Fetch-Site": "same-origin"}, 200),
        ({"Sec-Fetch-Site": "none"}, 200),  # typed in the address bar
        ({"Origin": "http://class.example:8000"}, 200),  # allowed by the app
        ({"Origin": "http://testserver:8001"}, 403),
        ({"Origin": "https://testserver"}, 403),
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "x" * 5000}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": "http://testserver", "Sec-Fetch-Site": "cross-site"}, 200),  # Origin decides
    ],
)
def test_check_origin(headers: dict[str, str], status: int) -> None:
    answer = app_with("http://class.example:8000/").post("/change", headers=headers)
    assert answer.status_code == status
    if status == 403:
        assert "another site" in answer.json()["detail"] and len(answer.json()["detail"]) < 300


def test_a_host_header_names_the_sites_own_origin() -> None:
    client = app_with()
    assert (
        client.post("/change", headers={"Host": "a.example:81", "Origin": "http://a.example:81"}).status_code
        == 200
    )
    assert (
        client.post("/change", headers={"Host": "a.example:81", "Origin": "http://a.example"}).status_code
        == 403
    )
