"""The lab page in a real browser: live htmx swaps, permalinks, languages, projector mode,
keyboard use, accessibility. Tables are checked against the torch reference modules."""

from __future__ import annotations

import pytest
import torch
from playwright.sync_api import Browser, Page, expect
from torch import nn

from tests.support.browser import (
    AXE,
    Watch,
    assert_tables_match_torch,
    mark_page,
    names,
    open_context,
    still_same_page,
)
from tests.support.reference import TUTORIAL_DEFAULTS


def test_first_load_matches_torch(page: Page) -> None:
    # The lesson-ready default: moved to a second device (meta here, no GPU), so the plain tensor
    # that stays behind on cpu is on screen before anything is touched.
    page.goto("/")
    expect(page.locator("#device")).to_have_value("meta")
    assert_tables_match_torch(page, "testmodel", TUTORIAL_DEFAULTS["testmodel"], "meta")
    stayed = page.locator("#members-table tr[data-name='buffer1'] td").last
    expect(stayed).to_contain_text("stayed behind")
    expect(page.locator("#code-text")).to_contain_text("class TestModel(nn.Module):")


def test_style_change_swaps_tables_without_reload(page: Page) -> None:
    page.goto("/?preset=testmodel")
    mark_page(page)
    page.select_option("#style-buffer1", "buffer")
    expect(page.locator("#named-buffers tr[data-name='buffer1']")).to_have_count(1)
    assert still_same_page(page)
    styles = {**TUTORIAL_DEFAULTS["testmodel"], "buffer1": "buffer"}
    assert_tables_match_torch(page, "testmodel", styles, "cpu")
    assert "style.buffer1=buffer" in page.url
    # The rows that appeared are marked (class and a text badge, not colour alone) and announced.
    expect(page.locator("#named-buffers tr[data-name='buffer1']")).to_have_class("row-added")
    expect(page.locator("#named-buffers tr[data-name='buffer1'] .badge")).to_have_text("new")
    expect(page.locator("#announce")).to_contain_text("buffer1: plain_tensor → buffer")


def test_device_change_moves_all_but_plain_tensors(page: Page) -> None:
    page.goto("/?preset=testmodel")
    mark_page(page)
    page.select_option("#device", "meta")
    expect(page.locator("#state-dict tr[data-name='buffer2']")).to_have_attribute("data-device", "meta")
    assert still_same_page(page)
    assert_tables_match_torch(page, "testmodel", TUTORIAL_DEFAULTS["testmodel"], "meta")
    expect(page.locator("#state-dict tr[data-name='buffer2']")).to_have_class("row-moved")
    after = page.locator("#members-table tr[data-name='buffer1'] td").last
    expect(after).to_contain_text("cpu")


def test_preset_change_replaces_member_controls(page: Page) -> None:
    page.goto("/?preset=testmodel")
    page.select_option("#preset", "mymodule")
    expect(page.locator("#style-weight")).to_have_value("register_parameter")
    expect(page.locator("#style-buffer1")).to_have_count(0)
    assert_tables_match_torch(page, "mymodule", TUTORIAL_DEFAULTS["mymodule"], "cpu")
    assert "style.buffer1" not in page.url and "preset=mymodule" in page.url


def test_permalink_and_back_button_restore_the_view(page: Page) -> None:
    page.goto("/?preset=testmodel")
    page.select_option("#style-parameter1", "frozen_parameter")
    page.wait_for_url(lambda url: "style.parameter1=frozen_parameter" in url)
    page.select_option("#device", "meta")
    page.wait_for_url(lambda url: "device=meta" in url)
    permalink = page.url

    page.go_back()
    expect(page.locator("#device")).to_have_value("cpu")
    expect(page.locator("#style-parameter1")).to_have_value("frozen_parameter")
    styles = {**TUTORIAL_DEFAULTS["testmodel"], "parameter1": "frozen_parameter"}
    assert_tables_match_torch(page, "testmodel", styles, "cpu")
    page.go_forward()
    expect(page.locator("#device")).to_have_value("meta")

    fresh = page.context.new_page()
    fresh.goto(permalink)
    expect(fresh.locator("#device")).to_have_value("meta")
    expect(fresh.locator("#style-parameter1")).to_have_value("frozen_parameter")
    assert_tables_match_torch(fresh, "testmodel", styles, "meta")


def test_chinese_from_query(page: Page) -> None:
    page.goto("/?lang=zh-CN")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("label[for='device']")).to_have_text("移动到设备")
    # Torch's names and the code stay as torch prints them.
    expect(page.locator("#code-text")).to_contain_text("for name, param in model.named_parameters():")
    # The language sticks through htmx changes.
    page.select_option("#device", "meta")
    page.wait_for_url(lambda url: "lang=zh-CN" in url and "device=meta" in url)
    expect(page.locator("label[for='device']")).to_have_text("移动到设备")


def test_chinese_from_accept_language(browser: Browser, base_url: str, watch: Watch) -> None:
    context = open_context(browser, base_url, watch, locale="zh-CN")
    page = context.new_page()
    page.goto("/")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("h1")).to_have_text("模块注册浏览器")
    page.click("a[hreflang='en']")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    context.close()


def test_projector_mode(page: Page) -> None:
    page.goto("/?preset=mymodule")
    normal = page.evaluate("parseFloat(getComputedStyle(document.querySelector('td')).fontSize)")
    page.keyboard.press("t")
    expect(page.locator("html")).to_have_class("present")
    page.wait_for_load_state("load")  # the new page's stylesheet applied, not just its DOM parsed
    assert "present=1" in page.url
    big = page.evaluate("parseFloat(getComputedStyle(document.querySelector('td')).fontSize)")
    # Larger by a quarter at least: the type scales with the viewport so the lab stays on one screen.
    assert big >= 1.25 * normal
    expect(page.locator(".code")).to_be_hidden()
    # Shortcuts: d cycles the device, 1 the first member's style, ? opens the help.
    page.keyboard.press("d")
    expect(page.locator("#device")).to_have_value("meta")
    page.keyboard.press("1")
    expect(page.locator("#style-weight")).to_have_value("frozen_parameter")
    expect(page.locator("#named-parameters tr[data-name='weight'] td .now").last).to_have_text("False")
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()
    assert "present=1" in page.url


def test_keyboard_only(page: Page) -> None:
    page.goto("/?preset=testmodel")
    for _ in range(40):  # tab through the page until the buffer2 control has focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "style-buffer2":
            break
    else:
        pytest.fail("style-buffer2 is not reachable with Tab")
    focus = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert focus != "none"
    page.keyboard.press("ArrowDown")
    expect(page.locator("#style-buffer2")).to_have_value("non_persistent_buffer")
    # The changed cell says what it was and what it is now.
    persistent = page.locator("#named-buffers tr[data-name='buffer2'] td.changed").last
    expect(persistent.locator(".was")).to_have_text("True")
    expect(persistent.locator(".now")).to_have_text("False")
    expect(page.locator("#state-dict tr[data-name='buffer2']")).to_have_count(0)
    assert page.evaluate("document.activeElement.id") == "style-buffer2"  # focus survives the swap
    expect(page.locator("#announce")).to_contain_text("buffer2: buffer → non_persistent_buffer")


def test_without_javascript_the_form_still_works(no_js_page: Page) -> None:
    page = no_js_page
    page.goto("/?preset=testmodel")
    page.select_option("#style-buffer1", "nn_buffer")
    page.select_option("#device", "meta")
    page.click("form#lab-form button[type=submit]")
    page.wait_for_url(lambda url: "device=meta" in url)
    styles = {**TUTORIAL_DEFAULTS["testmodel"], "buffer1": "nn_buffer"}
    assert_tables_match_torch(page, "testmodel", styles, "meta")


def test_layers_in_a_list_then_in_a_module_list(page: Page) -> None:
    page.goto("/?preset=layer_list")
    assert_tables_match_torch(page, "layer_list", {"blocks": "python_list"}, "cpu")
    mark_page(page)
    page.select_option("#style-blocks", "module_list")
    expect(page.locator("#named-parameters tr[data-name='blocks.0.weight']")).to_have_class("row-added")
    assert still_same_page(page)
    assert_tables_match_torch(page, "layer_list", {"blocks": "module_list"}, "cpu")


def torch_refusal(name: str) -> str:
    """What torch itself says when a parameter gets this name."""
    try:
        nn.Module().register_parameter(name, nn.Parameter(torch.randn(3)))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError(f"torch took {name!r}")


def test_custom_members_added_refused_and_dropped(page: Page) -> None:
    page.goto("/?preset=custom")
    mark_page(page)
    page.fill("#new-name", "w")
    page.fill("#new-shape", "2x3")
    page.select_option("#new-style", "buffer")
    page.press("#new-name", "Enter")  # Enter adds, like the Add button
    expect(page.locator("#named-buffers tr[data-name='w']")).to_have_count(1)
    assert "style.w=buffer" in page.url and "shape.w=2x3" in page.url
    expect(page.locator("#style-w")).to_have_value("buffer")  # the member's own control came in
    expect(page.locator("#new-name")).to_have_value("")
    page.fill("#new-name", "a.b")
    page.click("#add-member button.add")
    refusal = page.locator("#members-table tr[data-name='a.b'] .refused")
    expect(refusal.locator("code")).to_have_text(torch_refusal("a.b"))
    page.fill("#new-name", "big")
    page.fill("#new-shape", "100x100")
    page.click("#add-member button.add")
    expect(page.locator("#results [role=alert]")).to_contain_text("at most 4096")
    page.click("a.remove[data-member='w']")
    expect(page.locator("#named-buffers tr[data-name='w']")).to_have_count(0)
    expect(page.locator("#style-w")).to_have_count(0)
    assert still_same_page(page)
    assert "style.w" not in page.url and "style.a.b=parameter" in page.url


def test_custom_member_added_without_javascript(no_js_page: Page) -> None:
    page = no_js_page
    page.goto("/?preset=custom")
    page.fill("#new-name", "w")
    page.select_option("#new-style", "non_persistent_buffer")
    page.click("#add-member button.add")
    page.wait_for_url(lambda url: "style.w=non_persistent_buffer" in url and "add=" not in url)
    assert names(page, "named-buffers") == ["w"]
    assert names(page, "state-dict") == ["linear.weight", "linear.bias"]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(
    "query",
    [
        "/?preset=testmodel&device=meta",
        "/?lang=zh-CN&present=1",
        "/?style.buffer1=parameter&experiment=step",
        "/?preset=custom&style.w=buffer&style.a.b=parameter&experiment=step",
    ],
)
def test_axe_finds_no_serious_violations(
    browser: Browser, base_url: str, watch: Watch, scheme: str, query: str
):
    # bypass_csp only lets the test inject axe; the app's own pages never need it.
    context = open_context(browser, base_url, watch, bypass_csp=True, color_scheme=scheme)
    page = context.new_page()
    page.goto(query)
    page.select_option("#device", "cpu")  # a swap has happened, so highlighted rows are scanned too
    page.add_script_tag(path=str(AXE))
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    serious = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]])
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == []
    context.close()


def test_assets_are_local_and_csp_is_strict(page: Page) -> None:
    response = page.goto("/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    sources = page.locator("script").evaluate_all("s => s.map(x => x.getAttribute('src'))")
    assert sources and all(src and src.startswith("/static/") for src in sources)
    assert page.evaluate("typeof htmx.version") == "string"
    favicon = page.request.get(page.locator("link[rel=icon]").get_attribute("href"))
    assert favicon.ok


def test_experiment_shows_torch_refusal_and_matrix(page: Page) -> None:
    page.goto("/?preset=testmodel&style.buffer1=parameter")
    mark_page(page)
    expect(page.locator("#matrix tr[data-name='buffer1'] td").nth(5)).to_contain_text("refused")
    page.click("label[for='experiment-step']")
    expect(page.locator(".refusal")).to_contain_text(
        "RuntimeError: a leaf Variable that requires grad is being used in an in-place operation."
    )
    assert still_same_page(page)
    assert "experiment=step" in page.url
    page.click("label[for='experiment-cast']")
    page.select_option("#option-dtype", "double")
    expect(page.locator("#experiment tr[data-name='buffer2'] td").nth(2)).to_have_text("float32 → float64")
    expect(page.locator("#experiment tr[data-name='buffer1'] td").nth(2)).to_have_text("float32 → float64")
    page.select_option("#style-buffer1", "plain_tensor")  # the experiment re-runs on the new spec
    expect(page.locator("#experiment tr[data-name='buffer1'] td").nth(2)).to_have_text("float32")
    page.reload()
    expect(page.locator("#option-dtype")).to_have_value("double")


def test_api_docs_work_offline(page: Page) -> None:
    page.goto("/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    assert page.locator(".opblock").count() >= 10  # every route, rendered from local files


def test_copy_button(browser: Browser, base_url: str, watch: Watch) -> None:
    context = open_context(browser, base_url, watch, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto("/?preset=mymodule")
    page.click("button.copy")
    expect(page.locator(".copy-status")).to_have_text("Copied")
    # What lands on the clipboard is the script itself, line for line, as the API gives it.
    script = page.request.get("/api/lab?preset=mymodule").json()["code"]
    assert page.evaluate("navigator.clipboard.readText()") == script
    context.close()


@pytest.mark.parametrize("url", ["/lessons", "/checkpoints", "/architectures", "/join"])
def test_the_shortcut_keys_outside_the_lab_throw_nothing(page: Page, url: str) -> None:
    # Only the lab has the shortcuts' help; elsewhere "?" and the lab's keys do nothing (the watch
    # fixture fails the test on any page error).
    page.goto(url)
    for key in ("?", "p", "d", "1", "Shift+?"):
        page.keyboard.press(key)
    expect(page.locator("dialog[open]")).to_have_count(0)


def test_the_shortcut_help_still_opens_in_the_lab(page: Page) -> None:
    page.goto("/")
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
