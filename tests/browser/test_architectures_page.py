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
    shot(page, "architectures-llama8b")

    # Keyboard: Tab reaches a summary, Enter opens it and shows its children.
    layers = page.locator("details[data-path='model.layers']")
    expect(layers).to_be_hidden()
    page.locator("details[data-path='model'] > summary").focus()
    page.keyboard.press("Enter")
    expect(layers).to_be_visible()
    page.keyboard.press("Tab")  # the next summary: model.embed_tokens
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # model.layers opens
    expect(page.locator("details[data-path='model.layers.31']")).to_be_visible()
    page.keyboard.press("Space")  # and closes
    expect(page.locator("details[data-path='model.layers.31']")).to_be_hidden()

    # Expand all / collapse all (shown only with JavaScript).
    all_nodes = page.locator(".module-tree details")
    page.get_by_role("button", name="Expand all").click()
    assert page.locator(".module-tree details[open]").count() == all_nodes.count() > 400
    page.get_by_role("button", name="Collapse all").click()
    assert page.locator(".module-tree details[open]").count() == 0

    # The filter narrows every table as one types; the group counts follow.
    page.locator("#tensor-filter").fill("layers.31.")
    wanted = [r["name"] for r in tree["named_parameters"] if "layers.31." in r["name"]]
    table = page.locator(".tensor-tables details.group:not([hidden])")
    visible = page.locator(".tensor-tables tr[data-name]:visible")
    names = visible.evaluate_all("rows => rows.map(r => r.dataset.name)")
    assert names == wanted * 2  # named_parameters() and state_dict(); no buffer matches
    assert table.count() == 2
    expect(table.first.locator(".count")).to_have_text(str(len(wanted)))
    # ... and the module tree opens down to the modules that hold them, only those.
    expect(page.locator("details[data-path='model.layers.31.mlp.up_proj']")).to_be_visible()
    opened = page.locator(".module-tree details[open]").evaluate_all("ds => ds.map(d => d.dataset.path)")
    owners = {n.rpartition(".")[0] for n in wanted}
    parts = [o.split(".") for o in owners]
    assert set(opened) == {".".join(p[:i]) for p in parts for i in range(len(p) + 1)}
    shot(page, "architectures-filter")


def test_projector_and_chinese(arch_page: Page) -> None:
    page = arch_page
    page.goto("/architectures/llama_tiny?device=cpu&present=1&lang=zh-CN", timeout=60_000)
    expect(page.locator("#not-restorable code").first).to_have_text("model.rotary_emb.inv_freq")
    expect(page.locator("svg.treemap rect.tm-param").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    shot(page, "architectures-present-zh")
