"""Requests a hostile client sends, and what every answer must carry: helpers of the edge's tests."""

from __future__ import annotations

import json

from app.http.security import CSP, HEADERS
from app.lab.experiments import EXPERIMENTS

POST_JSON_ROUTES = ["/api/lab", *(f"/api/experiments/{e}" for e in EXPERIMENTS)]


NOT_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]


SURROGATES = ['"\\ud800"', '"\\udfff"', '"a\\udc80b"']


def strict_json(text: str) -> object:
    """JSON as the standard has it: NaN and infinities are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


# Every place in a spec or experiment request a client could put a value, or a key.
VALUE_PLACES = [
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


KEY_PLACES = [  # a member name, an option name, an unknown field
    '{{"preset": "testmodel", "styles": {{{v}: "buffer"}}}}',
    '{{"preset": "custom", "styles": {{{v}: "buffer"}}}}',
    '{{"preset": "custom", "styles": {{"a": "buffer"}}, "shapes": {{{v}: [3]}}}}',
    '{{"preset": "testmodel", "params": {{{v}: "half"}}}}',
    '{{"preset": "testmodel", "into": {{{v}: "buffer"}}}}',
    '{{"preset": "testmodel", {v}: 1}}',
]


def placed(places: list[str], values: list[str]) -> list[str]:
    return [place.format(v=value) for place in places for value in values]


def assert_clean(response) -> None:
    """A real answer: JSON with the security headers, whatever its status, never a 500."""
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text
    strict_json(response.text)
    for name, value in HEADERS:
        assert response.headers[name.decode()] == value.decode()
    assert "content-security-policy" in response.headers


SECURITY = {name.decode(): value.decode() for name, value in HEADERS} | {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",  # no framing unless MRE_FRAME_ANCESTORS names sites
}


def assert_security_headers(response, csp: str = CSP) -> None:
    for name, value in {**SECURITY, "content-security-policy": csp}.items():
        assert response.headers.get_list(name) == [value], (response.status_code, name)


ASSET = "/static/swagger-ui-5.35.0/swagger-ui.css"
