"""The htmx rule, in one place: an htmx request gets its page's named blocks and a 2xx, a full page
the whole page and its real status, both with Vary naming every header they depend on; the HTML
is compacted without touching what <pre> holds."""

from __future__ import annotations

from starlette.requests import Request

from app.langs import EN, ZH
from app.web.html import VARY, View, breakable, compact, render, respond, vary_readers, view_of
from tests.support.html import parse

PAGE = "error.html"  # the smallest page of the kit: title, main block
CONTEXT = {"error": "a <refusal>", "status": 422}


def view(htmx: bool, lang: str = EN) -> View:
    return View(lang=lang, lang_chosen=False, present=False, htmx=htmx)


def request(query: bytes = b"", headers: list[tuple[bytes, bytes]] = ()) -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": "/", "query_string": query, "headers": list(headers)}
    )


def test_a_full_page_keeps_its_status_an_htmx_swap_gets_its_blocks_and_200() -> None:
    full = respond(view(False), PAGE, {**CONTEXT, "view": view(False)}, ("main",), 422)
    swap = respond(view(True), PAGE, {**CONTEXT, "view": view(True)}, ("main",), 422)
    assert full.status_code == 422 and swap.status_code == 200
    assert full.headers["vary"] == swap.headers["vary"] == VARY
    assert b"<html" in full.body and b"<html" not in swap.body
    assert parse(swap.body.decode()).find("section").attrs["id"] == "results"


def test_a_block_rendered_alone_is_the_same_as_in_its_page() -> None:
    page = render(EN, PAGE, {**CONTEXT, "view": view(False)}).decode()
    block = render(EN, PAGE, {**CONTEXT, "view": view(False)}, ("main",)).decode()
    assert block.strip() and block.strip() in page
    assert "a &lt;refusal&gt;" in block  # escaped


def test_each_language_renders_its_own_words() -> None:
    en = render(EN, PAGE, {**CONTEXT, "view": view(False)}).decode()
    zh = render(ZH, PAGE, {**CONTEXT, "view": view(False, ZH)}).decode()
    assert "The server refused this request" in en and "服务器拒绝了这个请求" in zh


def test_compact_drops_indentation_but_not_what_pre_holds() -> None:
    html = "<div>\n    <p>a</p>\n</div><pre>\n    kept\n</pre>"
    assert compact(html) == "<div>\n<p>a</p>\n</div><pre>\n    kept\n</pre>"


def test_a_long_name_may_break_at_its_dots() -> None:
    assert str(breakable("bn.num_batches_tracked")) == "bn.<wbr>num_<wbr>batches_<wbr>tracked"
    assert str(breakable("<b>")) == "&lt;b&gt;"


def test_how_a_page_is_viewed_is_read_from_the_request() -> None:
    seen = view_of(request(b"lang=zh-CN&present=1&embed=1", [(b"hx-request", b"true")]))
    assert (seen.lang, seen.lang_chosen, seen.present, seen.embed, seen.htmx) == (ZH, True, True, True, True)
    restore = view_of(request(headers=[(b"hx-request", b"true"), (b"hx-history-restore-request", b"true")]))
    assert not restore.htmx  # a history restore wants the whole page
    assert view_of(request(headers=[(b"accept-language", b"zh")])).lang == ZH


def test_the_cache_keys_a_page_by_what_it_reads_of_each_header() -> None:
    readers = vary_readers()
    assert readers[b"accept-language"](b"zh-CN,zh;q=0.9") == readers[b"accept-language"](b"zh") == ZH
    assert readers[b"hx-request"](b"true") is True and readers[b"hx-request"](b"TRUE") is False
