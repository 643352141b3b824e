"""The architectures page in a real browser at 1280x720: the module tree opened by keyboard and by
its buttons, the filter box narrowing the grouped tables, nothing wider than the window."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import Watch, live_server, open_context

PORT = 18231  # this suite's own loopback port
SHOTS = os.environ.get("MRE_SHOTS")  # a folder: save screenshots there to look at


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with live_server(port=PORT) as url:
        yield url


@pytest.fixture
def arch_page(browser: Browser, server: str) -> Iterator[Page]:
    watch = Watch(server)
    ctx = open_context(browser, server, watch, locale="en-US", viewport={"width": 1280, "height": 720})
    yield ctx.new_page()
    ctx.close()
    assert watch.errors == [] and watch.outside == [], (watch.errors, watch.outside)


def shot(page: Page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=False)


def test_tree_by_keyboard_and_filter(arch_page: Page) -> None:
    page = arch_page
    page.goto("/architectures/llama_8b?device=meta", timeout=60_000)
    tree = page.request.get("/api/architectures/llama_8b").json()
    expect(page.locator("#total-parameters")).to_have_text(f"{tree['totals']['parameters']:,}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    # The plan comes after the page (htmx), with its form filled; the totals are the API's.
    plan = page.request.get("/api/architectures/llama_8b/plan").json()
    total = next(r["total"] for r in plan["recipes"] if r["id"] == "bf16_mixed")
    cell = page.locator("#plan-table .plan-total td[data-recipe='bf16_mixed']")
    expect(cell).to_have_text(f"{total / 1024**3:,.2f} GiB", timeout=60_000)
    expect(page.locator("#plan-batch")).to_have_value("8")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    shot(page, "architectures-llama8b")

    # Keyboard: Tab reaches a summary, Enter opens it and shows its children.
    layers = page.locator("details[data-path='model.layers']")
    expect(layers).to_be_hidden()
    page.locator("details[data-path='model'] > summary").focus()
    page.keyboard.press("Enter")
    expect(layers).to_be_visible()
    page.keyboard.press("Tab")  # the next summary: model.embed_tokens
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # model.layers opens: its 32 identical layers are one row
    repeat = page.locator("details[data-path='model.layers.{0..31}']")
    expect(repeat).to_be_visible()
    expect(repeat.locator("> summary .cls")).to_have_text("32 × LlamaDecoderLayer")
    page.keyboard.press("Space")  # and closes
    expect(repeat).to_be_hidden()

    # Expand all / collapse all (shown only with JavaScript).
    all_nodes = page.locator(".module-tree details")
    page.get_by_role("button", name="Expand all").click()
    assert page.locator(".module-tree details[open]").count() == all_nodes.count() > 15
    page.get_by_role("button", name="Collapse all").click()
    assert page.locator(".module-tree details[open]").count() == 0

    # The filter narrows every table as one types; the group counts follow.
    page.locator("#tensor-filter").fill("layers.31.")
    wanted = [r["name"] for r in tree["named_parameters"] if "layers.31." in r["name"]]
    table = page.locator(".tensor-tables details.group:not([hidden])")
    visible = page.locator(".tensor-tables tr[data-name]:visible")
    # A row of the 32 identical layers stands for one name per layer: the one that matches counts.
    names = visible.evaluate_all(
        "rows => rows.flatMap(r => (r.dataset.names || r.dataset.name).split(' '))"
        ".filter(n => n.includes('layers.31.'))"
    )
    assert names == wanted * 2  # named_parameters() and state_dict(); no buffer matches
    assert table.count() == 2
    expect(table.first.locator(".count")).to_have_text(str(len(wanted)))
    # ... and the module tree opens down to the modules that hold them: in the one row of the
    # identical layers, at the same modules of the layer it shows.
    expect(page.locator("details[data-path='model.layers.0.mlp.up_proj']")).to_be_visible()
    opened = page.locator(".module-tree details[open]").evaluate_all("ds => ds.map(d => d.dataset.path)")
    owners = {n.rpartition(".")[0].replace("layers.31.", "layers.0.") for n in wanted}
    parts = [o.split(".") for o in owners]
    expected = {".".join(p[:i]) for p in parts for i in range(len(p) + 1)} | {"model.layers.{0..31}"}
    assert set(opened) == expected
    shot(page, "architectures-filter")


def test_projector_and_chinese(arch_page: Page) -> None:
    page = arch_page
    page.goto("/architectures/llama_tiny?device=cpu&present=1&lang=zh-CN", timeout=60_000)
    expect(page.locator("#not-restorable code").first).to_have_text("model.rotary_emb.inv_freq")
    expect(page.locator("svg.treemap rect.tm-param").first).to_be_visible()
    expect(page.locator("#plan-table")).to_be_visible(timeout=60_000)
    expect(page.locator("#plan-h")).to_have_text("放得下吗？")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    shot(page, "architectures-present-zh")
