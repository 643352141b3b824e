"""Cached answers are exactly fresh ones; ETags give 304s; gzip where asked; memory is bounded."""

from __future__ import annotations

import asyncio
import gzip

import pytest
from fastapi.testclient import TestClient

from app.http.cache import FastHits, HttpCache, ResponseStore, make_entry
from app.http.limits import header_bytes, url_bytes
from app.lab import memo
from app.lab.devices import device_ids
from app.lab.report import inspect
from app.lab.spec import LabSpec, resolve
from app.main import create_app
from app.settings import Settings
from app.web.assets import static_assets
from tests.support.aio import run
from tests.support.cases import CAP
from tests.support.http import ASSET

QUERY = {"preset": "testmodel", "device": "meta", "style.buffer1": "nn_buffer"}


@pytest.fixture
def fresh_client() -> TestClient:
    memo.clear()
    return TestClient(create_app())


def test_cached_report_equals_a_fresh_one(fresh_client: TestClient) -> None:
    first = fresh_client.get("/api/lab", params=QUERY)
    second = fresh_client.get("/api/lab", params=QUERY)
    assert 'desc="miss"' in first.headers["server-timing"] and 'desc="hit"' in second.headers["server-timing"]
    spec = resolve(
        LabSpec(preset="testmodel", device="meta", styles={"buffer1": "nn_buffer"}), device_ids(), CAP
    )
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


def test_static_urls_clients_invent_cost_no_gzip_and_no_memory(
    fresh_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "swagger-ui-5.35.0/swagger-ui-bundle.js"  # 1.7 MB: gzipping it takes tens of ms
    current = fresh_client.get(static_assets().url(name))
    packed = fresh_client.get(f"/static/{name}?v=first", headers={"Accept-Encoding": "gzip"})
    compressions = []
    monkeypatch.setattr(gzip, "compress", lambda *a, **k: compressions.append(a) or b"")
    before = len(fresh_client.app.state.responses)
    for i in range(30):
        query = [f"?v={i}", f"?v={i}&x={i}", f"?x={i}", f"?v={current.headers['etag']}{i}"][i % 4]
        response = fresh_client.get(f"/static/{name}{query}", headers={"Accept-Encoding": "gzip"})
        assert response.content == packed.content == current.content  # httpx unpacks it
        assert (
            response.headers["content-encoding"] == "gzip" and response.headers["cache-control"] == "no-cache"
        )
        assert response.headers["etag"] == current.headers["etag"]
    assert compressions == [] and len(fresh_client.app.state.responses) == before


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


def test_response_cache_is_bounded_in_bytes() -> None:
    client = TestClient(create_app(Settings(response_cache_bytes=30_000)))
    for device in ("cpu", "meta"):
        for style in ("parameter", "buffer", "plain_tensor", "nn_buffer", "frozen_parameter"):
            for member in ("weight", "bias"):
                params = {"preset": "mymodule", "device": device, f"style.{member}": style}
                assert client.get("/api/lab", params=params).is_success
    store = client.app.state.responses
    assert 0 < store.bytes <= 30_000
    assert store.bytes == sum(e.size for e in store.entries.values()) + sum(
        len(k[0]) + len(k[1]) for k in store.entries
    )
    assert len(store) < 20  # the byte cap, not the entry cap (2048), decided


def test_an_answer_larger_than_the_byte_cap_is_not_kept() -> None:
    client = TestClient(create_app(Settings(response_cache_bytes=4_000)))
    assert client.get("/", params=QUERY).is_success  # a page of tens of KB
    assert len(client.app.state.responses) == 0
    assert 'desc="miss"' in client.get("/", params=QUERY).headers["server-timing"]


def scope_of(headers: list[tuple[bytes, bytes]]) -> dict:
    return {"method": "GET", "path": "/p", "raw_path": b"/p", "query_string": b"a=1", "headers": headers}


def test_an_answer_of_the_byte_cap_is_kept_and_one_byte_more_is_not() -> None:
    scope, headers = scope_of([]), [(b"content-type", b"text/plain")]
    entry = make_entry(200, headers, b"x" * 100)
    measured = ResponseStore(8)
    measured.put(scope, headers, entry)
    size = measured.bytes  # the answer and its key
    at_cap, under = ResponseStore(8, max_bytes=size), ResponseStore(8, max_bytes=size - 1)
    for store in (at_cap, under):
        store.put(scope, headers, entry)
    assert (len(at_cap), at_cap.bytes, len(under), under.bytes) == (1, size, 0, 0)


def test_a_head_of_the_caps_is_a_hit_here_and_one_byte_more_goes_on_to_the_stack() -> None:
    """The hits answered before the app count the head as HeadLimit does (the stack refuses what is
    over): a request target and headers exactly at the caps are answered from the store."""
    scope = scope_of([(b"accept", b"text/html"), (b"x-pad", b"y" * 40)])
    store = ResponseStore(8)
    store.put(scope, [], make_entry(200, [], b"stored"))
    url, head = url_bytes(scope), header_bytes(scope)
    assert (url, head) == (6, len(b"accept: text/html\r\n") + len(b"x-pad: " + b"y" * 40 + b"\r\n"))
    form = FastHits(store, ("/p",), (), url, head, []).form(scope)
    assert form is not None and form.body == b"stored"
    assert FastHits(store, ("/p",), (), url - 1, head, []).form(scope) is None
    assert FastHits(store, ("/p",), (), url, head - 1, []).form(scope) is None


# Raw values, and the derived value the page reads of them (so the key the cache must use).
LANGUAGE_VALUES = [
    "",
    "en",
    "EN-us",
    "en-US,en;q=0.9",
    "fr, de;q=0.5",
    "*",
    "zh;q=0, en",
    "zh;q=bogus, en",
    "x" * 5000,
    "en;q=0.1, zh;q=0.2",
    "zh-CN",
    "zh-TW,zh;q=0.9",
    "de, zh;q=0.1",
    "zh, " + "y" * 5000,
]
CURRENT_URLS = [
    "",
    "http://[",
    "http://testserver/?preset=bogus",
    "?preset=testmodel&style.buffer1=nope",
    "http://testserver/?preset=" + "x" * 3000,
    "http://testserver/?preset=testmodel",
    "http://elsewhere:1/?device=cpu&preset=testmodel&lang=zh-CN&present=1",
    "/?preset=testmodel&style.buffer1=plain_tensor&experiment=step",
    "http://testserver/?preset=mymodule",
    "http://testserver/?device=cpu&preset=mymodule&style.weight=register_parameter",
]
PAGE = {"preset": "testmodel", "style.buffer1": "buffer"}


@pytest.fixture(scope="module")
def uncached() -> TestClient:
    return TestClient(create_app(Settings(response_cache_entries=0)))


def fresh_page(uncached: TestClient, headers: dict) -> str:
    response = uncached.get("/", params=PAGE, headers=headers)
    assert 'desc="miss"' in response.headers["server-timing"]
    return response.text


@pytest.mark.parametrize("htmx", ["true", "false", "TRUE"])
def test_pages_keyed_by_what_they_read_of_headers_equal_fresh_ones(uncached: TestClient, htmx: str) -> None:
    client = TestClient(create_app())
    combos = [(lang, url) for lang in LANGUAGE_VALUES for url in CURRENT_URLS[::3]]
    combos += [(lang, url) for lang in LANGUAGE_VALUES[::4] for url in CURRENT_URLS]
    for lang, url in combos:
        headers = {"HX-Request": htmx, "Accept-Language": lang, "HX-Current-URL": url}
        assert client.get("/", params=PAGE, headers=headers).text == fresh_page(uncached, headers), headers
    # English and Chinese, times no / the testmodel / the mymodule previous page: 6 entries at most,
    # however many raw values came.
    assert len(client.app.state.responses) <= 6


def test_hundreds_of_distinct_large_language_headers_are_one_entry() -> None:
    client = TestClient(create_app())
    for i in range(300):
        headers = {"Accept-Language": f"fr-{i}, de;q=0.5, " + "x" * 10_000}
        assert client.get("/", params=QUERY, headers=headers).status_code == 200
    store = client.app.state.responses
    assert len(store) == 1 and store.bytes < 200_000


def test_distinct_large_current_urls_are_bounded() -> None:
    client = TestClient(create_app())
    for i in range(300):
        url = f"http://testserver/?preset=testmodel&x{i}=" + "u" * 10_000  # unreadable: no previous
        headers = {"HX-Request": "true", "HX-Current-URL": url}
        assert client.get("/", params=QUERY, headers=headers).status_code == 200
    assert len(client.app.state.responses) == 1


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


def test_concurrent_misses_of_one_url_are_one_answer_of_the_app() -> None:
    """A class refetching one page after a change: the first miss fills, the others wait for it,
    before the path's Vary is learnt and after; another language is its own miss."""
    calls: list[bytes] = []

    async def app(scope, receive, send) -> None:
        calls.append(scope["query_string"])
        await asyncio.sleep(0.05)  # a render taking a while: every other request arrives meanwhile
        lang = dict(scope["headers"]).get(b"accept-language", b"")
        headers = [(b"content-type", b"text/html"), (b"vary", b"Accept-Language")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"page " + scope["query_string"] + b" " + lang})

    cache = HttpCache(app, ResponseStore(100), paths=("/follow",), prefixes=())

    async def get(query: bytes, lang: bytes = b"en") -> bytes:
        scope = {
            "type": "http", "method": "GET", "path": "/follow", "query_string": query,
            "headers": [(b"accept-language", lang)],
        }  # fmt: skip
        body = b""

        async def receive() -> dict:
            return {"type": "http.request", "body": b""}

        async def send(message: dict) -> None:
            nonlocal body
            body += message.get("body", b"")

        await cache(scope, receive, send)
        return body

    async def main() -> None:
        first = await asyncio.gather(*(get(b"state=1") for _ in range(50)))  # Vary not learnt yet
        assert set(first) == {b"page state=1 en"} and calls == [b"state=1"]
        second = await asyncio.gather(*(get(b"state=2") for _ in range(50)), get(b"state=2", b"zh-CN"))
        assert set(second) == {b"page state=2 en", b"page state=2 zh-CN"}
        assert calls == [b"state=1", b"state=2", b"state=2"]  # one per language

    run(main())
