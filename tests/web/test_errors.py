"""Bad input: a clear 4xx naming what is wrong, never a 500."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pytest
from fastapi.testclient import TestClient

from app.architectures.catalogue import check_device, get
from app.classroom.page import read_shown, read_step
from app.classroom.rooms import no_such_room
from app.doctor.formats import sniff
from app.errors import Refusal
from app.lab.page import page_query
from app.lab.presets import PRESETS
from app.lab.query import Bounds
from app.lab.spec import SpecError
from app.lab.styles import STYLES
from app.langs import LANGS, ZH, Text
from app.settings import Settings
from tests.support.http import (
    KEY_PLACES,
    NOT_FINITE,
    POST_JSON_ROUTES,
    SURROGATES,
    VALUE_PLACES,
    assert_clean,
    placed,
)


def detail(response) -> str:
    return str(response.json()["detail"])


def test_unknown_preset_is_404(client: TestClient) -> None:
    for response in (
        client.get("/api/lab", params={"preset": "nope"}),
        client.post("/api/lab", json={"preset": "nope"}),
    ):
        assert response.status_code == 404
        assert "nope" in detail(response) and "testmodel" in detail(response)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"preset": "testmodel", "style.buffer1": "bogus"}, "bogus"),
        ({"preset": "testmodel", "style.nothere": "buffer"}, "nothere"),
        ({"preset": "testmodel", "styles.buffer1": "buffer"}, "styles.buffer1"),
        ({"device": "cpu"}, "preset"),
        ({"preset": "x" * 65}, "preset"),
    ],
)
def test_bad_query_is_422_naming_the_field(client: TestClient, query: dict, named: str) -> None:
    response = client.get("/api/lab", params=query)
    assert response.status_code == 422
    assert named in detail(response)


def test_repeated_query_parameter_is_422(client: TestClient) -> None:
    response = client.get("/api/lab?preset=testmodel&preset=mymodule")
    assert response.status_code == 422 and "more than once" in detail(response)


@pytest.mark.parametrize("device", ["cuda:7", "tpu", "cpu:0", ""])
def test_missing_device_is_422_listing_the_devices(client: TestClient, device: str) -> None:
    for response in (
        client.get("/api/lab", params={"preset": "mymodule", "device": device}),
        client.post("/api/lab", json={"preset": "mymodule", "device": device}),
    ):
        assert response.status_code == 422
        assert "cpu, meta" in detail(response)
        assert response.json()["detail"][0]["loc"] == ["device"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ('{"preset": ', ["body", 11]),
        ('{"preset": 3}', ["body", "preset"]),
        ("[]", ["body"]),
        ('{"preset": "mymodule", "styles": {"weight": 5}}', ["body", "styles", "weight"]),
        ('{"preset": "mymodule", "styles": ["weight"]}', ["body", "styles"]),
        ('{"preset": "mymodule", "colour": "red"}', ["body", "colour"]),
        ('{"preset": "mymodule", "styles": {"weight": "bogus"}}', ["styles", "weight"]),
        ('{"preset": "mymodule", "styles": {"nothere": "buffer"}}', ["styles", "nothere"]),
    ],
)
def test_bad_json_is_422_naming_the_field(client: TestClient, body: str, loc: list) -> None:
    response = client.post("/api/lab", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


@pytest.mark.parametrize(("members", "status"), [(16, 200), (17, 422)])
def test_the_custom_member_cap_at_its_boundary(client: TestClient, members: int, status: int) -> None:
    styles = {f"m{i}": "buffer" for i in range(members)}
    query = {"preset": "custom", **{f"style.{name}": style for name, style in styles.items()}}
    for response in (
        client.post("/api/lab", json={"preset": "custom", "styles": styles}),
        client.get("/api/lab", params=query),
    ):
        assert response.status_code == status
        if status == 200:
            assert [m["name"] for m in response.json()["members"]] == list(styles)
        else:
            assert response.json()["detail"][0] == {
                "loc": ["styles"],
                "msg": "at most 16 members in a custom module",
                "type": "value_error",
            }


@pytest.mark.parametrize(("members", "refused_by"), [(64, "the custom cap"), (65, "the form")])
def test_the_member_cap_of_the_form_at_its_boundary(
    client: TestClient, members: int, refused_by: str
) -> None:
    """64 members pass the form (and meet the custom module's own cap); 65 never reach it."""
    styles = {f"m{i}": "buffer" for i in range(members)}
    response = client.post("/api/lab", json={"preset": "custom", "styles": styles})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    if refused_by == "the form":
        assert error["loc"] == ["body", "styles"] and "at most 64" in error["msg"]
    else:
        assert error["loc"] == ["styles"] and error["msg"] == "at most 16 members in a custom module"


def test_oversized_body_is_413_with_its_limit(client: TestClient) -> None:
    response = client.post("/api/lab", content=b" " * 20_000, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "16384" in detail(response)


def test_oversized_streamed_body_is_413(client: TestClient) -> None:
    chunks = (b" " * 4096 for _ in range(8))  # no Content-Length: counted while it streams
    response = client.post("/api/lab", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "16384" in detail(response)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe\x00",
        b"null",
        b'"testmodel"',
        b'{"preset": "testmodel", "device": null}',
        b'{"preset": "testmodel", "styles": {"buffer1": null}}',
        b'{"preset": {"a": 1}}',
        '{"preset": "测试"}'.encode(),
        b'{"preset": "testmodel", "device": "cuda:99999999999999999999"}',
        b'{"preset": "testmodel", "styles": {"": ""}}',
        b'{"preset": "testmodel", "styles": {"buffer1": "buffer"}, "styles": 1}',
    ],
)
def test_odd_bodies_are_4xx(client: TestClient, body: bytes) -> None:
    response = client.post("/api/lab", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    "url",
    [
        "/api/lab?preset=%00",
        "/api/lab?preset=testmodel&style.=buffer",
        "/api/lab?preset=testmodel&device=%F0%9F%94%A5",
        "/api/lab?preset=testmodel&style.buffer1",
    ],
)
def test_odd_queries_are_4xx(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize(
    ("members", "loc"), [(64, ["styles"]), (65, ["query", "styles"]), (200, ["query", "styles"])]
)
def test_many_members_in_a_query_meet_the_form_cap(client: TestClient, members: int, loc: list) -> None:
    """In a query, 65 or 200 members are refused by the form's cap before any module is built."""
    url = "/api/lab?preset=custom&" + "&".join(f"style.m{i}=buffer" for i in range(members))
    response = client.get(url)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


@pytest.mark.parametrize("url", ["/api/lab", "/api/experiments/step"])
def test_a_body_that_is_not_utf8_is_422_like_any_bad_json(client: TestClient, url: str) -> None:
    response = client.post(url, content=b"\xff\xfe{", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "the body is not UTF-8 JSON"


# Sizes int() cannot read (a superscript passes str.isdigit), or reads past its digit limit.
BAD_SIZES = ["²", "3x²", "٣", "9" * 5000, "2x" + "1" * 5000, "1" * 10, "+3", " 3", "3_000", "3x", "x3", ""]


@pytest.mark.parametrize("size", BAD_SIZES)
def test_a_shape_int_cannot_read_is_422_naming_the_field(client: TestClient, size: str) -> None:
    query = {"preset": "custom", "style.w": "parameter", "shape.w": size}
    for url in ("/api/lab", "/api/matrix", "/api/experiments/cast"):
        response = client.get(url, params=query)
        assert response.status_code == 422, (url, response.text[:200])
        assert response.json()["detail"][0]["loc"] == ["query", "shape.w"]
        assert len(response.text) < 500  # the 5,000 digits are not echoed back
    page = client.get("/", params=query)
    assert page.status_code == 422 and "shape.w must look like 3x4" in page.text


@pytest.mark.parametrize("size", BAD_SIZES[:5])
def test_a_shape_int_cannot_read_is_no_500_on_the_other_routes_that_read_a_spec(
    client: TestClient, size: str
) -> None:
    query = {"preset": "custom", "style.w": "parameter", "shape.w": size}
    current = "http://testserver/?" + urlencode(query)  # the page the htmx request comes from
    headers = {"HX-Request": "true", "HX-Current-URL": current}
    swapped = client.get("/", params={"preset": "testmodel"}, headers=headers)
    assert swapped.status_code == 200
    assert client.get("/checkpoints", params=query).status_code == 200  # the form, nothing preselected
    posted = client.post("/checkpoints", files={"file": ("m.pt", b"junk")}, data=query)
    assert posted.status_code == 422 and "shape.w" in posted.text  # (5,000 digits: over its field cap)


# Every refusal a lab page can meet (the page ignores a preset's foreign members and shapes, and
# defaults the preset, so the API's other refusals never reach it).
SPEC_ERRORS = [
    "preset=nope",
    "x=1&preset=testmodel",
    "preset=testmodel&preset=mymodule",
    "preset=testmodel&style.buffer1=zzz",
    "preset=testmodel&device=nowhere",  # no device at all (cuda:7 opens on the nearest device)
    "preset=custom&style.a=zzz",
    "preset=custom&style.a=buffer&shape.a=0",
    "preset=custom&style.a=buffer&shape.a=3y",
    "preset=custom&style.a=buffer&shape.a=99x99x99",
    "preset=custom&shape.a=3",
    "preset=custom&" + "&".join(f"style.m{i}=buffer" for i in range(40)),
    "preset=" + "x" * 100,
    "preset=testmodel&device=" + "x" * 100,
]


def _spec_error(query: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        page_query(parse_qsl(query), BOUNDS)
    return caught.value


def _shown_error(client: TestClient, query: str, lang: str) -> str:
    response = client.get(f"/?{query}&lang={lang}")
    assert response.status_code in (404, 422), (query, response.status_code)
    return html.unescape(re.search(r'role="alert">.*?<code>(.*?)</code>', response.text, re.S).group(1))


@pytest.mark.parametrize("query", SPEC_ERRORS)
def test_a_spec_error_is_told_in_the_pages_language(client: TestClient, query: str) -> None:
    error = _spec_error(query)  # raised by the spec functions themselves, not by the page
    assert _shown_error(client, query, "en") == error.message
    zh = _shown_error(client, query, "zh-CN")
    assert zh == error.text("zh-CN") != error.message
    # What is left in Latin letters is what the user typed or may type: names, values, parameters.
    names = {*PRESETS, *STYLES, "preset", "device", "style", "shape", "custom", "cpu", "meta", "cuda"}
    names |= {m.name for p in PRESETS.values() for m in p.members}
    words = set(re.findall(r"[A-Za-z]{3,}", re.sub(r"'[^']*'|\w*[._<>]\w*", " ", zh)))
    assert words - names == set(), zh


def test_a_refused_member_is_told_in_the_pages_language(client: TestClient) -> None:
    query = "preset=custom&style.w=buffer&add=1&new=v&new_shape=99x99x99&new_style=buffer"
    error = _spec_error("preset=custom&style.w=buffer&style.v=buffer&shape.v=99x99x99")
    for lang, text in (("en", error.message), ("zh-CN", error.text("zh-CN"))):
        page = html.unescape(client.get(f"/?{query}&lang={lang}").text)
        assert f"<code>{text}</code>" in page, lang


def _raised(action) -> Refusal:
    try:
        action()
    except Refusal as exc:
        return exc
    raise AssertionError("no refusal")


def _sniffed(tmp: Path, content: bytes) -> None:
    path = tmp / "m.pt"
    path.write_bytes(content)
    sniff(path)


BOUNDS = Bounds.here(Settings().custom_max_elements)
# Every route family's refusals on a page, each with the refusal the domain itself raises for it.
PAGE_REFUSALS = {
    "lessons-unknown": ("GET", "/lessons/nope", {}, lambda tmp: read_step("nope", {}, BOUNDS)),
    "lessons-step": (
        "GET",
        "/lessons/parameters-and-buffers?step=99",
        {},
        lambda tmp: read_step("parameters-and-buffers", {"step": "99"}, BOUNDS),
    ),
    "class-room": ("GET", "/rooms/ABCDEFGH", {}, lambda tmp: _raise(no_such_room("ABCDEFGH"))),
    "class-console": ("GET", "/rooms/ABCDEFGH/teach", {}, lambda tmp: _raise(no_such_room("ABCDEFGH"))),
    "class-start": (
        "POST",
        "/rooms",
        {"data": {"state": "/nowhere"}},
        lambda tmp: read_shown("/nowhere", BOUNDS),
    ),
    "join": ("GET", "/join?code=ZZZZ-ZZZZ", {}, lambda tmp: _raise(no_such_room("ZZZZZZZZ"))),
    "architecture-unknown": ("GET", "/architectures/nope", {}, lambda tmp: get("nope")),
    "architecture-device": (
        "GET",
        "/architectures/llama_8b?device=cpu",
        {},
        lambda tmp: check_device(get("llama_8b"), "cpu"),
    ),
    "checkpoint-empty": (
        "POST",
        "/checkpoints",
        {"files": {"file": ("m.pt", b"")}},
        lambda tmp: _sniffed(tmp, b""),
    ),
    "checkpoint-junk": (
        "POST",
        "/checkpoints",
        {"files": {"file": ("m.pt", b"junk" * 8)}},
        lambda tmp: _sniffed(tmp, b"junk" * 8),
    ),
}


def _raise(exc: Refusal) -> None:
    raise exc


def _page_error(response) -> str:
    found = re.search(r'role="alert">.*?<code>(.*?)</code>', response.text, re.S)
    assert found, response.text[:500]
    return html.unescape(found.group(1))


@pytest.mark.parametrize("case", PAGE_REFUSALS)
def test_every_page_family_says_its_refusal_in_the_pages_language(
    client: TestClient, tmp_path: Path, case: str
) -> None:
    method, url, extra, domain = PAGE_REFUSALS[case]
    expected = _raised(lambda: domain(tmp_path))
    for lang in LANGS:
        joined = url + ("&" if "?" in url else "?") + f"lang={lang}"
        response = client.request(method, joined, follow_redirects=False, **extra)
        assert response.status_code == expected.status, (lang, response.text[:300])
        assert _page_error(response) == expected.text(lang)
    assert expected.text(ZH) != expected.message  # really said in Chinese, not the English again


# The API keeps English whatever the client's language: programs read it.
API_REFUSALS = {
    "lab": ("GET", "/api/lab?preset=nope", {}),
    "experiment": ("GET", "/api/experiments/step?preset=testmodel&dtype=nope", {}),
    "architecture": ("GET", "/api/architectures/nope", {}),
    "checkpoint": (
        "POST",
        "/api/checkpoints",
        {"content": b"", "headers": {"content-type": "application/octet-stream"}},
    ),
}


@pytest.mark.parametrize("case", API_REFUSALS)
def test_the_api_answers_its_refusals_in_english(client: TestClient, case: str) -> None:
    method, url, extra = API_REFUSALS[case]
    headers = {"accept-language": "zh-CN", **extra.pop("headers", {})}
    response = client.request(method, url, headers=headers, **extra)
    assert 400 <= response.status_code < 500 and response.headers["content-type"] == "application/json"
    assert not re.search(r"[\u4e00-\u9fff]", response.text), response.text


def test_a_refusal_of_a_field_is_said_as_fastapi_says_its_own(client: TestClient) -> None:
    detail = client.get("/api/lab?preset=testmodel&style.buffer1=zzz").json()["detail"]
    assert detail == [{"loc": ["styles", "buffer1"], "msg": detail[0]["msg"], "type": "value_error"}]
    assert client.get("/api/lab?preset=nope").json()["detail"].startswith("unknown preset 'nope'")


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


# --- Security headers on every answer, errors included -----------------------------------------


# --- HEAD, If-None-Match, Accept-Encoding ------------------------------------------------------


# --- Request heads: capped, and never kept whole -----------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_an_address_with_no_page_is_a_page_in_the_browsers_language(client: TestClient, lang: str) -> None:
    response = client.get("/no/such/page", params={"lang": lang}, headers={"accept": "text/html"})
    assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")
    assert _page_error(response) == Text("There is no page at {path}.", path="/no/such/page")[lang]
    wrong = client.post("/lessons", headers={"accept": "text/html"})
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    assert wrong.headers["content-type"].startswith("text/html")


def test_the_api_and_a_json_client_get_json_for_no_such_address(client: TestClient) -> None:
    for url, headers in (("/api/nope", {"accept": "text/html"}), ("/nope", {"accept": "application/json"})):
        response = client.get(url, headers=headers)
        assert response.status_code == 404 and response.json() == {"detail": "Not Found"}
