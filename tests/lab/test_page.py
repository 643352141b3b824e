"""The lab page over HTTP: full page vs htmx fragments, permalinks, languages, errors."""

from __future__ import annotations

import json
import re

import pytest
import torch
from fastapi.testclient import TestClient
from markupsafe import escape
from torch import nn

from app.main import create_app
from app.settings import Settings
from tests.support.html import HX, Element, parse, table_rows
from tests.support.reference import TUTORIAL_DEFAULTS, attach, reference, tables


def test_full_page_has_the_form_contract(client: TestClient) -> None:
    response = client.get("/", params={"preset": "testmodel", "device": "meta"})
    assert response.status_code == 200
    assert response.text.startswith("<!doctype html>")
    page = parse(response.text)
    html = page.find("html")
    assert html.attrs["lang"] == "en" and [c.tag for c in html.children if isinstance(c, Element)] == [
        "head",
        "body",
    ]
    form = page.find("form", id="lab-form")
    assert (form.attrs["action"], form.attrs["method"]) == ("/", "get")
    fields = {e.attrs.get("name") for e in form.walk() if e.tag in ("select", "input")}
    assert {"preset", "device", *(f"style.{m}" for m in TUTORIAL_DEFAULTS["testmodel"])} <= fields
    torch_says = tables("testmodel", TUTORIAL_DEFAULTS["testmodel"], "meta")
    for table_id, table, extra in (
        ("named-parameters", "named_parameters", "requires_grad"),
        ("named-buffers", "named_buffers", "persistent"),
        ("state-dict", "state_dict", None),
    ):
        expected = [
            {k: row[k] for k in ("name", "shape", "dtype", "device")}
            | ({"extra": row[extra]} if extra else {})
            for row in torch_says[table]
        ]
        assert table_rows(page, table_id) == expected, table
    # Nothing inline: a strict CSP holds.
    assert all("style" not in e.attrs for e in page.walk())
    assert all(e.attrs.get("src") for e in page.find_all("script"))
    assert "HX-Request" in response.headers["vary"]


def swap(client: TestClient, current: str, **params: str):
    """An htmx request from a page showing ``current`` (a query string)."""
    headers = {**HX, "HX-Current-URL": "http://testserver/?" + current}
    return client.get("/", params=params, headers=headers)


def test_htmx_request_gets_only_the_named_blocks(client: TestClient) -> None:
    response = swap(client, "preset=testmodel", preset="testmodel", **{"style.buffer1": "buffer"})
    html = response.text
    blocks = parse(html)
    assert not blocks.find_all("html") and not blocks.find_all("form")
    assert len(blocks.find_all(id="results")) == 1 and not blocks.find_all(id="controls")  # selects stay
    row = blocks.find("table", id="named-buffers").find("tr", data_name="buffer1")
    assert row.attrs == {
        "data-name": "buffer1",
        "data-device": "cpu",
        "data-member": "buffer1",
        "class": "row-added",
    }
    assert 'hx-swap-oob="innerHTML"' in html and "buffer1: plain_tensor → buffer" in html
    assert response.headers["HX-Push-Url"] == (
        "/?preset=testmodel&device=cpu&style.parameter1=parameter&style.parameter2=register_parameter"
        "&style.buffer1=buffer&style.buffer2=buffer"
    )


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_a_changed_cell_shows_its_new_value_plain_and_the_old_one_labelled_before(
    client: TestClient, lang: str
) -> None:
    """In words, not only in colour or a strike-through: read aloud it is "cpu, before: meta"."""
    response = swap(client, "preset=testmodel&device=meta", preset="testmodel", device="cpu", lang=lang)
    blocks = parse(response.text)
    styles = TUTORIAL_DEFAULTS["testmodel"]
    on_meta, on_cpu = tables("testmodel", styles, "meta"), tables("testmodel", styles, "cpu")
    label = "before" if lang == "en" else "之前"
    for name in styles:
        old, new = on_meta["devices_after"][name], on_cpu["devices_after"][name]
        row = blocks.find("table", id="members-table").find("tr", data_name=name)
        cell = row.find("td", data_label="Device" if lang == "en" else "设备")
        assert [c.text for c in cell.find_all("code")] == [on_cpu["devices_before"][name], new]
        if old == new:  # buffer1, a plain tensor: it stayed on cpu, nothing changed there
            assert "changed" not in cell.attrs["class"] and not cell.find_all(class_="before")
            continue
        mark = cell.find("span", class_="before")
        assert mark.find("span", class_="was-label").text == label
        assert mark.find("span", class_="was").text == old
    saved = blocks.find("table", id="state-dict").find("tr", data_name="buffer2").find("td", class_="changed")
    was, now = ({r["name"]: r["device"] for r in t["state_dict"]}["buffer2"] for t in (on_meta, on_cpu))
    assert (saved.find("span", class_="now").text, saved.find("span", class_="was").text) == (now, was)
    flags = swap(client, "preset=testmodel", preset="testmodel", **{"style.buffer1": "buffer"})
    row = parse(flags.text).find("table", id="members-table").find("tr", data_name="buffer1")
    cell = row.find("td", data_label="named_buffers()")
    assert cell.text.startswith("✓ yes") and cell.find("span", class_="was").text == "✗ no"


def test_history_restore_gets_the_full_page(client: TestClient) -> None:
    response = client.get("/", headers={**HX, "HX-History-Restore-Request": "true"})
    page = parse(response.text)
    assert page.find("html").find("body").find(id="results") and page.find("form", id="lab-form")


def test_removed_rows_are_listed(client: TestClient) -> None:
    response = swap(client, "preset=mymodule", preset="mymodule", **{"style.weight": "plain_tensor"})
    assert "Gone from named_parameters():" in response.text and "<code>weight</code>" in response.text


def test_other_modules_members_are_dropped_and_said(client: TestClient) -> None:
    response = client.get("/", params={"preset": "mymodule", "style.buffer1": "buffer"})
    assert response.status_code == 200
    assert "Ignored" in response.text and "style.buffer1" in response.text


@pytest.mark.parametrize(
    ("params", "status", "text"),
    [
        ({"preset": "nope"}, 404, "unknown preset"),
        ({"preset": "testmodel", "style.buffer1": "bogus"}, 422, "unknown style"),
        ({"preset": "testmodel", "device": "nowhere"}, 422, "available: cpu, meta"),
        ({"preset": "testmodel", "colour": "red"}, 422, "colour"),
    ],
)
def test_bad_page_queries_get_an_html_error(client: TestClient, params: dict, status: int, text: str) -> None:
    response = client.get("/", params=params)
    assert response.status_code == status
    assert "text/html" in response.headers["content-type"] and text in response.text
    assert "(torch )" not in response.text  # no report, so no version to name


def test_chinese_page_is_translated(client: TestClient) -> None:
    html = client.get("/", params={"lang": "zh-CN"}).text
    assert "模块注册浏览器" in html and "移动到设备" in html
    assert "Move to device" not in html


def test_module_change_swaps_the_member_controls(client: TestClient) -> None:
    response = swap(client, "preset=testmodel", preset="mymodule", **{"style.buffer1": "buffer"})
    assert 'id="controls" class="controls" hx-swap-oob="true"' in response.text
    assert 'name="style.weight"' in response.text and "Ignored" not in response.text


@pytest.mark.parametrize(
    "url", ["/", "/api/lab?preset=testmodel", "/docs", "/static/app.css", "/checkpoints"]
)
def test_security_headers_everywhere(client: TestClient, url: str) -> None:
    headers = client.get(url).headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    inline = "'unsafe-inline'" in csp
    assert inline is (url == "/docs")  # only Swagger UI's start-up script, and only there


CUSTOM = "/?preset=custom&style.w=buffer&shape.w=2"


def test_custom_edit_without_javascript_redirects_to_the_permalink(client: TestClient) -> None:
    edit = "&add=1&new=v&new_shape=2x2&new_style=frozen_parameter"
    added = client.get(CUSTOM + edit, follow_redirects=False)
    assert added.status_code == 303
    assert added.headers["location"] == (
        "/?preset=custom&device=cpu&style.w=buffer&style.v=frozen_parameter&shape.w=2&shape.v=2x2"
    )
    dropped = client.get(CUSTOM + "&drop=w", follow_redirects=False)
    assert (dropped.status_code, dropped.headers["location"]) == (303, "/?preset=custom&device=cpu")
    # The new member's fields ride in every submission: without "add" they change nothing.
    assert client.get(CUSTOM + "&new=v&new_shape=2").status_code == 200


def test_custom_edit_by_htmx_swaps_the_member_controls(client: TestClient) -> None:
    headers = {"HX-Request": "true", "HX-Current-URL": "http://testserver" + CUSTOM}
    response = client.get(CUSTOM + "&add=1&new=v", headers=headers)
    assert response.status_code == 200
    assert 'id="style-v"' in response.text and 'id="controls"' in response.text
    assert response.headers["HX-Push-Url"].endswith("style.w=buffer&style.v=parameter&shape.w=2&shape.v=3")
    assert "v: — → parameter" in response.text


@pytest.mark.parametrize(
    ("new", "message"),
    [
        ("&new=v&new_shape=100x100", "10000 elements; at most 4096 per tensor"),
        ("&new=v&new_shape=2xx", "shape.v must look like 3x4"),
        ("&new=v&new_style=sequential", "unknown style 'sequential'"),
    ],
)
def test_custom_edit_torch_cannot_take_keeps_the_lab(client: TestClient, new: str, message: str) -> None:
    full = client.get(CUSTOM + "&add=1" + new)
    assert full.status_code == 422
    assert escape(message) in full.text and 'data-name="w"' in full.text  # the lab as it was, and why not
    swapped = client.get(CUSTOM + "&add=1" + new, headers={"HX-Request": "true"})
    assert swapped.status_code == 200 and escape(message) in swapped.text


def test_adding_a_member_again_replaces_it(client: TestClient) -> None:
    response = client.get(CUSTOM + "&add=1&new=w&new_shape=4&new_style=parameter", follow_redirects=False)
    assert response.headers["location"] == "/?preset=custom&device=cpu&style.w=parameter&shape.w=4"


def test_a_member_torch_refused_is_not_said_to_stay_behind(client: TestClient) -> None:
    page = parse(client.get("/?preset=custom&device=meta&style.a.b=parameter&style.w=plain_tensor").text)
    rows = {
        m: page.find("tr", data_name=m, data_style=s)
        for m, s in (("a.b", "parameter"), ("w", "plain_tensor"))
    }
    try:
        setattr(nn.Module(), "a.b", nn.Parameter(torch.randn(3)))
    except KeyError as exc:
        refusal = f"KeyError: {exc}"
    assert rows["a.b"].find("p", class_="refused").find("code").text == refusal  # torch's own words
    assert not rows["a.b"].find_all(class_="badge")
    module = nn.Module()
    attach(module, "w", torch.randn(3), "plain_tensor")
    assert str(module.to("meta").w.device) == "cpu"  # a plain tensor really does stay on the CPU
    assert rows["w"].find(class_="badge").text == "stayed behind"


def test_load_into_on_the_page_keeps_the_custom_shapes(client: TestClient) -> None:
    """The module loaded into has the same custom sizes, so torch loads it (as it does directly)."""
    query = "/?preset=custom&style.w=buffer&shape.w=2x3&experiment=load_into&into.w=parameter"
    source = nn.Module()
    attach(source, "w", torch.randn(2, 3), "buffer")
    target = nn.Module()
    attach(target, "w", torch.randn(2, 3), "parameter")
    target.load_state_dict(source.state_dict())  # strict: torch takes it
    facts = parse(client.get(query).text).find("dl", class_="facts")
    terms = [c for c in facts.children if isinstance(c, Element)]
    shown = {dt.text: dd.text for dt, dd in zip(terms[::2], terms[1::2], strict=True)}
    assert shown["load_state_dict(strict=True)"] == "ok"


def test_the_page_obeys_the_apps_own_element_cap() -> None:
    """``create_app(Settings(...))`` rules the page too, not the environment's settings."""
    with TestClient(create_app(Settings(custom_max_elements=8))) as small:
        custom = {"preset": "custom", "style.w": "buffer"}
        assert small.get("/", params={**custom, "shape.w": "2x4"}).status_code == 200
        refused = small.get("/", params={**custom, "shape.w": "3x3"})
        assert refused.status_code == 422 and "at most 8" in refused.text
        added = small.get("/", params={"preset": "custom", "add": "1", "new": "w", "new_shape": "3x3"})
        assert added.status_code == 422 and "at most 8" in added.text  # the lab stays, the reason shows
        form = small.get("/checkpoints", params={**custom, "shape.w": "3x3"})
        assert form.status_code == 200 and 'value="custom" selected' not in form.text


@pytest.mark.parametrize(
    "query", ["preset=testmodel&device=meta", "preset=custom&style.a.b=buffer&style.w=parameter"]
)
def test_the_code_on_the_page_is_the_reports_script_exactly(client: TestClient, query: str) -> None:
    """What Copy code copies (the text of #code-text) is the script that runs, line for line."""
    page = parse(client.get("/?" + query).text)
    report = client.get("/api/lab?" + query).json()
    assert page.find("code", id="code-text").text == report["code"]


def test_every_glossary_word_links_to_its_entry(client: TestClient) -> None:
    """Table headers, each style's why, matrix columns and experiment kinds reach the glossary."""
    page = parse(client.get("/?preset=testmodel&experiment=step").text)
    entries = {e.attrs["id"] for e in page.find("section", id="glossary").find_all("dt")}
    links = [a.attrs["href"] for a in page.find_all("a", class_="term")]
    assert {href.removeprefix("#") for href in links} <= entries
    for where in ("members-table", "named-parameters", "named-buffers", "matrix", "experiment"):
        assert page.find("table", id=where).find_all("a", class_="term"), where


def test_pages_drop_template_indentation_but_keep_code_verbatim(client: TestClient) -> None:
    """The indentation of the templates is not sent (a smaller swap); the scripts keep theirs."""
    query = "preset=testmodel&device=meta&experiment=step"
    page = client.get("/?" + query).text
    outside = re.sub(r"<(pre|textarea)\b.*?</\1>", "", page, flags=re.DOTALL)
    assert "<pre" in page and not re.search(r"\n[ \t]+", outside)
    report = client.get("/api/lab?preset=testmodel&device=meta").json()
    assert "\n    " in report["code"] and parse(page).find("code", id="code-text").text == report["code"]


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


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_a_permalink_to_a_device_this_server_lacks_opens_on_the_nearest_with_a_notice(
    client: TestClient, lang: str
) -> None:
    response = client.get("/", params={"preset": "testmodel", "device": "cuda:3", "lang": lang})
    assert response.status_code == 200
    page = parse(response.text)
    notice = [p.text for p in page.find_all("p") if "notice" in (p.attrs.get("class") or "")]
    assert any("cuda:3" in n and "meta" in n for n in notice), notice
    assert "device=meta" in response.headers["hx-push-url"]  # the canonical link names where it is shown
    torch_says = tables("testmodel", TUTORIAL_DEFAULTS["testmodel"], "meta")
    shown = [row["device"] for row in table_rows(page, "named-buffers")]
    assert shown == [row["device"] for row in torch_says["named_buffers"]]


def test_a_device_that_is_no_device_is_still_refused(client: TestClient) -> None:
    response = client.get("/", params={"preset": "testmodel", "device": "cuda-ish"})
    assert response.status_code == 422 and "cuda-ish" in response.text


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_an_experiment_option_the_page_does_not_know_is_refused_naming_the_choices(
    client: TestClient, lang: str
) -> None:
    response = client.get(
        "/", params={"preset": "testmodel", "experiment": "cast", "dtype": "nope", "lang": lang}
    )
    assert response.status_code == 422
    assert all(choice in response.text for choice in ("half", "bfloat16", "double"))


def chips(page: Element, variant: str = "wide") -> dict[str, Element]:
    """The picture's chips by the tensor names they stand for."""
    svg = page.find("svg", id=f"{variant}-diagram")
    return {
        name: g
        for g in svg.find_all("g")
        if "chip" in g.attrs.get("class", "").split()
        for name in json.loads(g.attrs["data-tensors"])
    }


def test_the_picture_is_beside_the_tables_and_says_what_they_say(client: TestClient) -> None:
    page = parse(client.get("/", params={"preset": "testmodel", "device": "meta"}).text)
    figure = page.find("figure", id="picture")
    assert [e.attrs["id"] for e in figure.find_all("svg")] == ["wide-diagram", "narrow-diagram"]
    torch_says = tables("testmodel", TUTORIAL_DEFAULTS["testmodel"], "meta")
    listed = {
        row["name"] for t in ("named_parameters", "named_buffers", "state_dict") for row in torch_says[t]
    }
    for variant in ("wide", "narrow"):
        drawn = chips(page, variant)
        assert set(drawn) == listed | {"buffer1"}  # and the plain tensor torch lists nowhere
        assert drawn["buffer1"].attrs["data-member"] == "buffer1"
        svg = page.find("svg", id=f"{variant}-diagram")
        assert svg.attrs["role"] == "img" and svg.attrs["aria-labelledby"].split() == [
            f"{variant}-diagram-title",
            f"{variant}-diagram-desc",
        ]
        desc = svg.find("desc", id=f"{variant}-diagram-desc").text
        assert all(name.removeprefix("linear.") in desc for name in listed)
    # The picture takes the place of the members' flags (still in the page, for the table view).
    assert len(page.find("table", id="members-table").find_all("th", class_="fact")) == 4
    assert all("style" not in e.attrs for e in page.walk())  # a strict CSP holds in the SVG too


def test_the_picture_speaks_chinese_on_a_chinese_page(client: TestClient) -> None:
    page = parse(client.get("/", params={"preset": "testmodel", "device": "meta", "lang": "zh-CN"}).text)
    svg = page.find("svg", id="wide-diagram")
    title, desc = svg.find("title", id="wide-diagram-title"), svg.find("desc", id="wide-diagram-desc")
    assert "模块 TestModel" in title.text and "不在任何表中" in desc.text
    kinds = {t.text for t in svg.find_all("tspan", class_="kind")}
    assert kinds == {"参数", "缓冲区", "普通"}


def test_a_swap_sends_the_picture_with_its_stable_ids_and_marks(client: TestClient) -> None:
    full = parse(client.get("/", params={"preset": "testmodel", "device": "cpu"}).text)
    swapped = parse(swap(client, "preset=testmodel&device=cpu", preset="testmodel", device="meta").text)
    before, after = chips(full), chips(swapped)
    assert {n: g.attrs["id"] for n, g in before.items()} == {n: g.attrs["id"] for n, g in after.items()}
    moved = {n for n, g in after.items() if "moved" in g.attrs["class"].split()}
    torch_moved = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"]).to("meta").state_dict()
    assert moved == set(torch_moved)
    assert "stayed" in after["buffer1"].attrs["class"].split()
    # The before mark: on the lane of the device the module went to, the device it came from.
    marks = swapped.find("svg", id="wide-diagram").find_all("g", class_="before")
    assert [m.find("text", class_="was-device").text for m in marks] == ["cpu"]
    restyled = parse(
        swap(
            client,
            "preset=testmodel&device=meta",
            preset="testmodel",
            device="meta",
            **{"style.buffer2": "non_persistent_buffer"},
        ).text
    )
    ghosts = [
        g
        for g in restyled.find("svg", id="wide-diagram").find_all("g")
        if "ghost" in g.attrs.get("class", "").split()
    ]
    assert [json.loads(g.attrs["data-tensors"]) for g in ghosts] == [["buffer2"]]  # where it stood
    assert "left" in chips(restyled)["buffer2"].attrs["class"].split()


def test_the_table_view_shows_the_flags_instead_and_keeps_itself(client: TestClient) -> None:
    response = client.get("/", params={"preset": "testmodel", "device": "meta", "table": "1"})
    page = parse(response.text)
    assert not page.find_all("figure", id="picture")
    assert "table-view" in page.find(id="results").find("div", class_="first table-view").attrs["class"]
    assert page.find("input", name="table").attrs["value"] == "1"  # htmx requests keep it
    toggle = page.find("a", aria_keyshortcuts="g")
    assert toggle.attrs["href"] == "/?preset=testmodel&device=meta&" + "&".join(
        f"style.{k}={v}" for k, v in TUTORIAL_DEFAULTS["testmodel"].items()
    )
    swapped = swap(client, "preset=testmodel&table=1", preset="testmodel", device="meta", table="1")
    assert swapped.headers["HX-Push-Url"].endswith("&table=1")
    picture = parse(client.get(toggle.attrs["href"]).text)
    assert picture.find("a", aria_keyshortcuts="g").attrs["href"].endswith("&table=1")


def test_projected_an_experiments_conclusion_and_facts_come_before_the_tables(client: TestClient) -> None:
    query = {"preset": "testmodel", "device": "cpu", "experiment": "step"}
    page = parse(client.get("/", params={**query, "present": "1"}).text)
    results = page.find("section", id="results")
    order = [e.attrs.get("class", "") for e in results.children if isinstance(e, Element)]
    summary = results.find("section", class_="experiment-summary")
    assert order.index("experiment-summary") < order.index("tables")
    model = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"])
    trained = {n for n, p in model.named_parameters() if p.requires_grad}  # SGD over parameters()
    facts = [dd.text for dd in summary.find_all("dd")]
    assert len(facts) == len(summary.find_all("dt"))
    assert any(set(fact.split(", ")) == trained for fact in facts)
    assert "step" in summary.find("p", class_="lead").text.lower()
    assert not parse(client.get("/", params=query).text).find_all("section", class_="experiment-summary")
