"""What a hostile classroom network can send, over HTTP: every answer a 4xx (never a 500), with the
security headers, memory bounded by bytes, HEAD and conditional requests done properly."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from app.lab.experiments import EXPERIMENTS
from app.main import create_app
from app.security import HEADERS

POST_JSON_ROUTES = ["/api/lab", *(f"/api/experiments/{e}" for e in EXPERIMENTS)]
NOT_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]
SURROGATES = ['"\\ud800"', '"\\udfff"', '"a\\udc80b"']


def strict_json(text: str) -> object:
    """JSON as the standard has it: NaN and infinities are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def quiet() -> TestClient:
    # Server errors come back as responses, as a browser would see them, not as raised exceptions.
    return TestClient(create_app(), raise_server_exceptions=False)


def bodies_with(values: list[str]) -> list[str]:
    """Each value in every place of a spec or experiment request a client could put it."""
    places = [
        '{{"preset": {v}}}',
        '{{"preset": "testmodel", "device": {v}}}',
        '{{"preset": "testmodel", "styles": {{"buffer1": {v}}}}}',
        '{{"preset": "custom", "styles": {{"a": "buffer"}}, "shapes": {{"a": [{v}]}}}}',
        '{{"preset": "testmodel", "extra": {v}}}',
        '{{"preset": "testmodel", "params": {{"dtype": {v}}}}}',
        '{{"preset": "testmodel", "into": {{"buffer1": {v}}}}}',
        "[{v}]",
        "{v}",
    ]
    return [place.format(v=value) for place in places for value in values]


def keyed_by(values: list[str]) -> list[str]:
    """Each value as a key: a member name, an option name, an unknown field."""
    places = [
        '{{"preset": "testmodel", "styles": {{{v}: "buffer"}}}}',
        '{{"preset": "custom", "styles": {{{v}: "buffer"}}}}',
        '{{"preset": "custom", "styles": {{"a": "buffer"}}, "shapes": {{{v}: [3]}}}}',
        '{{"preset": "testmodel", "params": {{{v}: "half"}}}}',
        '{{"preset": "testmodel", "into": {{{v}: "buffer"}}}}',
        '{{"preset": "testmodel", {v}: 1}}',
    ]
    return [place.format(v=value) for place in places for value in values]


def assert_clean(response) -> None:
    """A real answer: JSON with the security headers, whatever its status, never a 500."""
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text
    strict_json(response.text)
    for name, value in HEADERS:
        assert response.headers[name.decode()] == value.decode()
    assert "content-security-policy" in response.headers


@pytest.mark.parametrize("route", POST_JSON_ROUTES)
@pytest.mark.parametrize("body", bodies_with(NOT_FINITE + SURROGATES))
def test_values_json_cannot_carry_are_422(quiet: TestClient, route: str, body: str) -> None:
    response = quiet.post(route, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    assert_clean(response)


@pytest.mark.parametrize("route", POST_JSON_ROUTES)
@pytest.mark.parametrize("body", keyed_by(SURROGATES))
def test_a_lone_surrogate_as_a_key_is_never_a_500(quiet: TestClient, route: str, body: str) -> None:
    # A member, option or field the route ignores (a shape for no member) may well be a 200.
    response = quiet.post(route, content=body, headers={"content-type": "application/json"})
    assert_clean(response)


@pytest.mark.parametrize("route", POST_JSON_ROUTES)
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json", "application/octet-stream"])
@pytest.mark.parametrize(
    "body", [b"\xff\xfe{", b'{"preset": "\xe9"}', b"\x80", b'{"preset": "testmodel"}\xc3']
)
def test_a_body_that_is_not_utf8_is_422_whatever_its_type(
    quiet: TestClient, route: str, content_type: str | None, body: bytes
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = quiet.post(route, content=body, headers=headers)
    assert response.status_code == 422, response.text[:300]
    assert_clean(response)
    assert response.json()["detail"][0]["msg"] == "the body is not UTF-8 JSON"


MALFORMED_URLS = [
    b"http://[",
    b"http://[::1",
    b"http://a]/?preset=testmodel",
    b"http://[v1.x]:x/?preset=testmodel",
    b"http://\xef\xbc\x83/?preset=testmodel",  # a netloc NFKC changes
    b"//[/?preset=mymodule",
    b"?preset=%ff%fe",
    b"?preset=testmodel&style.buffer1=bogus",
    b"?preset=" + b"x" * 5000,
    b"\xff\xfe",
    b"   ",
]


@pytest.mark.parametrize("url", MALFORMED_URLS)
@pytest.mark.parametrize("htmx", [b"true", b"false"])
def test_a_malformed_current_url_is_a_page_without_a_diff(quiet: TestClient, url: bytes, htmx: bytes) -> None:
    headers = {"HX-Request": htmx, "HX-Current-URL": url}
    response = quiet.get("/", params={"preset": "testmodel"}, headers=headers)
    assert response.status_code == 200, response.text[:300]
    plain = quiet.get("/", params={"preset": "testmodel"}, headers={"HX-Request": htmx})
    assert response.text == plain.text  # as if no previous page were known
