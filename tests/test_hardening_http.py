"""What a hostile classroom network can send, over HTTP: every answer a 4xx (never a 500), with the
security headers, memory bounded by bytes, HEAD and conditional requests done properly."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from app.http import cache as http_cache
from app.http.security import CSP, DOCS_CSP, HEADERS
from app.lab import memo
from app.lab.experiments import EXPERIMENTS
from app.main import create_app
from app.settings import Settings
from app.web import html

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
    # The room routes are called with a made-up code many times over: no rate limit on failed joins.
    return TestClient(
        create_app(Settings(class_failed_joins_per_minute=1_000_000)), raise_server_exceptions=False
    )


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


@pytest.mark.parametrize("route", POST_JSON_ROUTES)
@pytest.mark.parametrize("body", placed(VALUE_PLACES, NOT_FINITE + SURROGATES))
def test_values_json_cannot_carry_are_422(quiet: TestClient, route: str, body: str) -> None:
    response = quiet.post(route, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    assert_clean(response)


@pytest.mark.parametrize("route", POST_JSON_ROUTES)
@pytest.mark.parametrize("body", placed(KEY_PLACES, SURROGATES))
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


# --- Security headers on every answer, errors included -----------------------------------------

SECURITY = {name.decode(): value.decode() for name, value in HEADERS} | {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",  # no framing unless MRE_FRAME_ANCESTORS names sites
}


def assert_security_headers(response, csp: str = CSP) -> None:
    for name, value in {**SECURITY, "content-security-policy": csp}.items():
        assert response.headers.get_list(name) == [value], (response.status_code, name)


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


# --- HEAD, If-None-Match, Accept-Encoding ------------------------------------------------------


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


ASSET = "/static/swagger-ui-5.35.0/swagger-ui.css"
CONDITIONAL = ["/api/lab?preset=testmodel", "/?preset=testmodel", "/api/presets", ASSET]


@pytest.mark.parametrize("url", CONDITIONAL)
@pytest.mark.parametrize(
    ("template", "status"),
    [
        ("*", 304),
        (" * ", 304),
        ("{etag}", 304),
        ("W/{etag}", 304),
        ('"other", {etag}', 304),
        ('"a",W/{etag} ,"b"', 304),
        ('"other"', 200),
        ('W/"other", "more"', 200),
        ('"x{bare}"', 200),
        ('"nope", {etag}garbage', 200),  # one tag, not our tag
        ("{bare}", 200),  # unquoted: not an entity tag
    ],
)
def test_if_none_match_is_a_list_compared_weakly(
    quiet: TestClient, url: str, template: str, status: int
) -> None:
    etag = quiet.get(url).headers["etag"]
    header = template.format(etag=etag, bare=etag.strip('"'))
    for _ in range(2):
        response = quiet.get(url, headers={"if-none-match": header})
        assert response.status_code == status, header
        assert (response.content == b"") is (status == 304)


@pytest.mark.parametrize(
    "url", ["/api/experiments/nowhere?preset=testmodel", "/api/lab?preset=nowhere", "/?preset=x"]
)
def test_if_none_match_star_does_not_turn_an_error_into_304(quiet: TestClient, url: str) -> None:
    error = quiet.get(url)
    assert error.status_code >= 400
    for tag in ("*", error.headers.get("etag", '"none"')):  # errors carry an ETag too
        assert quiet.get(url, headers={"if-none-match": tag}).status_code == error.status_code


@pytest.mark.parametrize("url", ["/api/lab?preset=mymodule", "/?preset=testmodel", "/api/presets", ASSET])
@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("gzip, deflate, br, zstd", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip;q=0.001", True),
        ("*", True),
        ("br;q=1, *;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip; q=0", False),
        ("gzip;Q=0.0", False),
        ("deflate, gzip;q=0, br", False),
        ("*;q=0", False),
        ("*, gzip;q=0", False),
        ("gzip;q=bogus", False),
        ("identity", False),
        ("nogzip", False),
        ("br", False),
        ("", False),
    ],
)
def test_gzip_only_where_its_q_value_is_above_0(
    quiet: TestClient, url: str, accept_encoding: str, gzipped: bool
) -> None:
    for _ in range(2):
        response = quiet.get(url, headers={"accept-encoding": accept_encoding})
        assert response.status_code == 200
        assert (response.headers.get("content-encoding") == "gzip") is gzipped, accept_encoding


# --- Request heads: capped, and never kept whole -----------------------------------------------

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


@pytest.mark.parametrize(
    "url", ["/api/lab?preset=testmodel", "/api/presets", "/?preset=mymodule", "/api/matrix?preset=testmodel"]
)
def test_each_encoding_has_its_own_tag_and_says_vary(client: TestClient, url: str) -> None:
    """A shared cache must keep the gzipped and the plain answer apart (Vary), and a strong tag
    names one representation: the gzip form's tag is not the plain form's."""
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    packed = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert packed.headers.get("content-encoding") == "gzip" and "content-encoding" not in plain.headers
    for response in (plain, packed):
        assert "accept-encoding" in response.headers["vary"].lower()
    assert plain.headers["etag"] != packed.headers["etag"]
    again = client.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["etag"]})
    assert again.status_code == 304
    other = client.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": plain.headers["etag"]})
    assert other.status_code == 200  # the plain form's tag does not match the gzip form


def test_the_url_cap_counts_the_question_mark(client: TestClient) -> None:
    cap = Settings().max_url_bytes
    path = "/api/lab?preset=testmodel&device=cpu&style.buffer1="
    at_cap = path + "x" * (cap - len(path))  # the target as sent: exactly the cap
    assert client.get(at_cap).status_code != 414
    assert client.get(at_cap + "x").status_code == 414
