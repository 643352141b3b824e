"""The checkpoint page in a real browser: file picker, drag and drop, no JavaScript, refusals, a11y."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import AXE, Watch, open_context
from tests.support.crafted import malicious_checkpoint
from tests.support.reference import TUTORIAL_DEFAULTS, reference


def tied_checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save(reference("tied_weights", TUTORIAL_DEFAULTS["tied_weights"]).state_dict(), buffer)
    return buffer.getvalue()


def file(content: bytes, name: str = "tied.pt") -> dict:
    return {"name": name, "mimeType": "application/octet-stream", "buffer": content}


def test_upload_shows_the_tree_sharing_and_torchs_load(page: Page) -> None:
    page.goto("/?preset=tied_weights")
    page.click("text=Inspect a checkpoint")
    expect(page.locator("#load-preset")).to_have_value("tied_weights")  # the lab's module, preselected
    page.evaluate("window.__noReload = true")
    page.set_input_files("#checkpoint-file", file(tied_checkpoint()))
    page.click("#checkpoint-form button[type=submit]")
    expect(page.locator("#shared li")).to_have_text("embed.weight = head.weight")
    assert page.evaluate("window.__noReload === true")  # swapped in by htmx
    state = reference("tied_weights", TUTORIAL_DEFAULTS["tied_weights"]).state_dict()
    leaves = page.locator("#tree li:not(:has(li)) > code").all_inner_texts()
    assert leaves == [k.rsplit(".", 1)[-1] for k in state]
    expect(page.locator("#load-outcome td").first).to_have_text("ok")
    expect(page.locator("#dtypes tr[data-dtype='float32'] td").first).to_have_text(str(len(state)))


def test_a_dropped_file_is_sent(page: Page) -> None:
    page.goto("/checkpoints")
    data = list(tied_checkpoint())
    page.evaluate(
        """bytes => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "dropped.pt"));
            const zone = document.getElementById("drop-zone");
            zone.dispatchEvent(new DragEvent("dragover", {bubbles: true, dataTransfer: transfer}));
            const drop = {bubbles: true, cancelable: true, dataTransfer: transfer};
            zone.dispatchEvent(new DragEvent("drop", drop));
        }""",
        data,
    )
    expect(page.locator("#results h2")).to_have_text("dropped.pt")
    expect(page.locator("#shared li")).to_have_count(1)


def test_a_malicious_file_is_refused_on_the_page(page: Page, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    page.goto("/checkpoints")
    page.set_input_files("#checkpoint-file", file(malicious_checkpoint(marker), "evil.pt"))
    page.click("#checkpoint-form button[type=submit]")
    expect(page.locator("#results [role=alert]")).to_contain_text("UnpicklingError")
    assert not marker.exists()


def test_without_javascript_the_form_posts(no_js_page: Page) -> None:
    page = no_js_page
    page.goto("/checkpoints?lang=zh-CN")
    page.set_input_files("#checkpoint-file", file(tied_checkpoint()))
    page.select_option("#load-preset", "testmodel")
    page.click("#checkpoint-form button[type=submit]")
    expect(page.locator("#load-outcome")).to_contain_text("Missing key(s) in state_dict")  # torch's words
    expect(page.locator("h3").first).to_contain_text("加载到")


def test_axe_finds_no_serious_violations_on_a_result(browser: Browser, base_url: str, watch: Watch) -> None:
    context = open_context(browser, base_url, watch, bypass_csp=True)
    page = context.new_page()
    page.goto("/checkpoints?preset=testmodel")
    page.set_input_files("#checkpoint-file", file(tied_checkpoint()))
    page.click("#checkpoint-form button[type=submit]")
    expect(page.locator("#load-outcome")).to_be_visible()
    page.add_script_tag(path=str(AXE))
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    serious = [
        (v["id"], [n["target"] for n in v["nodes"]])
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == []
    context.close()


def test_the_fixed_checkpoint_downloads_and_loads(page: Page, tmp_path: Path) -> None:
    """The download button bypasses htmx (the answer is a file to save, not a block to swap)."""
    from safetensors.torch import load_file

    model = reference("tied_weights", TUTORIAL_DEFAULTS["tied_weights"])
    buffer = io.BytesIO()
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, buffer)
    page.goto("/checkpoints")
    page.set_input_files("#checkpoint-file", file(buffer.getvalue(), "run.pt"))
    page.select_option("#load-preset", "tied_weights")
    page.click("#checkpoint-form button[type=submit]")
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "fixed")
    with page.expect_download() as download:
        page.click("#download-fixed")
    assert download.value.suggested_filename == "run.fixed.safetensors"
    path = tmp_path / "fixed.safetensors"
    download.value.save_as(path)
    reference("tied_weights", TUTORIAL_DEFAULTS["tied_weights"]).load_state_dict(load_file(path), strict=True)
    expect(page.locator("#verdict")).to_be_visible()  # the page stayed where it was
