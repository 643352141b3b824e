"""axe-core on every page family (the lab, lessons, a class's console and student page, the join
page, architectures, the checkpoint doctor with a result, an error page), light and dark, on a
1280 px screen and a 390 px phone: no serious or critical violation. Every in-page link (the skip
link first) points at an element the page has, and every scrollable block takes keyboard focus."""

from __future__ import annotations

import io

import pytest
import torch
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import AXE, Watch, open_context
from tests.support.reference import TUTORIAL_DEFAULTS, reference

LESSON = "/lessons/parameters-and-buffers"
PAGES = {
    "lab": "/?preset=testmodel&device=meta",
    "lessons": "/lessons?lang=zh-CN",
    "lesson": LESSON + "?step=2",
    "architectures": "/architectures",
    "architecture": "/architectures/llama_8b",
    "tiny architecture": "/architectures/llama_tiny?device=cpu&lang=zh-CN",
    "checkpoints": "/checkpoints?preset=testmodel",
    "join": "/join",
    "not found": "/no/such/page",
}
WIDTHS = {"screen": {"width": 1280, "height": 720}, "phone": {"width": 390, "height": 844}}


def options(scheme: str, width: str) -> dict:
    # bypass_csp only lets the test inject axe; the app's own pages never need it.
    return {"bypass_csp": True, "color_scheme": scheme, "viewport": WIDTHS[width]}


def serious(page: Page) -> list[tuple]:
    page.add_script_tag(path=str(AXE))
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        (v["id"], [n["target"] for n in v["nodes"]][:5])
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def dead_anchors(page: Page) -> list[str]:
    """In-page links whose target the page lacks (a skip link that skips to nothing)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('a[href^="#"]')]
             .map(a => a.getAttribute('href').slice(1))
             .filter(id => id && !document.getElementById(decodeURIComponent(id)))"""
    )


def unreachable_scrollers(page: Page) -> list[str]:
    """Blocks that scroll (wider or taller than their box) that take no focus and hold nothing focusable."""
    return page.evaluate(
        """() => [...document.querySelectorAll('pre, .scroll, .table-wrap, div, section')]
             .filter(el => {
               const s = getComputedStyle(el);
               const can = v => v === 'auto' || v === 'scroll';
               const scrolls = (can(s.overflowX) && el.scrollWidth > el.clientWidth + 1)
                 || (can(s.overflowY) && el.scrollHeight > el.clientHeight + 1);
               if (!scrolls || el.offsetParent === null) return false;
               const inside = 'a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])';
               const focusable = el.tabIndex >= 0 || el.querySelector(inside);
               return !focusable;
             })
             .map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + '.' + el.className)"""
    )


def check(page: Page) -> None:
    page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")  # folded parts too
    assert serious(page) == []
    assert dead_anchors(page) == []
    assert unreachable_scrollers(page) == []


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("family", PAGES)
def test_every_page_family_passes_axe(
    browser: Browser, base_url: str, watch: Watch, family: str, scheme: str, width: str
) -> None:
    context = open_context(
        browser, base_url, watch, bypass_csp=True, color_scheme=scheme, viewport=WIDTHS[width]
    )
    page = context.new_page()
    answer = page.goto(PAGES[family])
    assert answer is not None and answer.status == (404 if family == "not found" else 200)
    if family == "not found":
        watch.errors.clear()  # the browser logs the 404 itself
    check(page)
    context.close()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_checkpoint_result_passes_axe(
    browser: Browser, base_url: str, watch: Watch, scheme: str, width: str
):
    context = open_context(
        browser, base_url, watch, bypass_csp=True, color_scheme=scheme, viewport=WIDTHS[width]
    )
    page = context.new_page()
    page.goto("/checkpoints?preset=testmodel")
    buffer = io.BytesIO()
    torch.save(reference("tied_weights", TUTORIAL_DEFAULTS["tied_weights"]).state_dict(), buffer)
    page.set_input_files(
        "#checkpoint-file",
        {"name": "tied.pt", "mimeType": "application/octet-stream", "buffer": buffer.getvalue()},
    )
    page.click("#checkpoint-form button[type=submit]")
    expect(page.locator("#load-outcome")).to_be_visible()
    check(page)
    context.close()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_class_console_and_student_page_pass_axe(
    browser: Browser, base_url: str, watch: Watch, scheme: str, width: str
) -> None:
    teacher = open_context(browser, base_url, watch, **options(scheme, width))
    console = teacher.new_page()
    console.goto(LESSON + "?step=1")
    console.click("form.start-class button[type=submit]")
    expect(console.locator("#console")).to_be_visible()
    check(console)
    code = console.locator("#console").get_attribute("data-code")
    student = open_context(browser, base_url, watch, **options(scheme, width))
    follow = student.new_page()
    follow.goto(f"/rooms/{code}")
    follow.click(f"form[action^='/rooms/{code}/join'] button[type=submit]")
    expect(follow.locator("#follow")).to_be_visible()
    check(follow)
    student.close()
    teacher.close()
