"""Screenshots of the pages for the README: ``make screenshots`` writes them under docs/."""

from __future__ import annotations

import io

import torch
from playwright.sync_api import Browser, Page

from tests.support.browser import ROOT, chromium, live_server
from tests.support.reference import TUTORIAL_DEFAULTS, reference

# At a projector's 1280x720 (the first screen only: it must hold the lab) and a 390 px phone.
PROJECTOR = {"width": 1280, "height": 720}
PHONE = {"width": 390, "height": 844}
SHOTS = {
    "lab-en.png": ("/?preset=testmodel&device=meta", PROJECTOR),
    "lab-present.png": (
        "/?preset=testmodel&device=meta&style.buffer2=non_persistent_buffer&present=1",
        PROJECTOR,
    ),
    "lab-zh-CN.png": ("/?preset=testmodel&device=meta&lang=zh-CN", PROJECTOR),
    "lab-phone.png": ("/?preset=testmodel&device=meta", PHONE),
}
# The picture of TestModel before and after model.to("meta") (the move made on the page, so the
# after picture carries its marks): (name, query, viewport, the page whole or the picture alone).
MOVES = [
    ("picture", "", PROJECTOR, False),
    ("picture-zh-CN", "&lang=zh-CN", PROJECTOR, False),
    ("picture-present", "&present=1", PROJECTOR, True),
    ("picture-present-zh-CN", "&present=1&lang=zh-CN", PROJECTOR, True),
    ("picture-phone", "", PHONE, False),
    ("picture-phone-zh-CN", "&lang=zh-CN", PHONE, False),
]
# The picture's motion is over: no transition or animation of it running.
SETTLED = """() => document.getAnimations().every(a => a.playState !== 'running' || !a.effect
  || !a.effect.target || !a.effect.target.closest || !a.effect.target.closest('svg.diagram'))"""


def shoot(page: Page, name: str, whole: bool) -> None:
    page.wait_for_function(SETTLED)
    path = str(ROOT / "docs" / name)
    if whole:
        page.screenshot(path=path)
    else:
        page.locator("svg.diagram:visible").screenshot(path=path)
    print("docs/" + name)


def moves(browser: Browser, base: str) -> None:
    for name, extra, viewport, whole in MOVES:
        page = browser.new_page(base_url=base, viewport=viewport, device_scale_factor=2 if not whole else 1)
        page.goto("/?preset=testmodel&device=cpu" + extra)
        shoot(page, f"{name}-before.png", whole)
        with page.expect_response(lambda r: "device=meta" in r.url):
            page.select_option("#device", "meta")
        page.wait_for_function("() => document.querySelector('#device').value === 'meta'")
        page.wait_for_function("() => document.querySelector('svg.diagram .before') !== null")
        shoot(page, f"{name}-after.png", whole)
        page.close()


def main() -> None:
    with live_server() as base, chromium() as browser:
        for name, (path, viewport) in SHOTS.items():
            page = browser.new_page(base_url=base, viewport=viewport)
            page.goto(path)
            page.wait_for_load_state("load")
            page.screenshot(path=str(ROOT / "docs" / name))
            page.close()
            print("docs/" + name)
        moves(browser, base)
        # The checkpoint page after an upload: a training checkpoint of the tied-weights module.
        model = reference("tied_weights", TUTORIAL_DEFAULTS["tied_weights"])
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict(), "epoch": 12, "lr": 3e-4}, buffer)
        page = browser.new_page(base_url=base, viewport=PROJECTOR)
        page.goto("/checkpoints?preset=tied_weights&style.bias=buffer")
        upload = {"name": "tied.pt", "mimeType": "application/octet-stream", "buffer": buffer.getvalue()}
        page.set_input_files("#checkpoint-file", upload)
        page.click("#checkpoint-form button[type=submit]")
        page.wait_for_selector("#load-outcome")
        page.screenshot(path=str(ROOT / "docs" / "checkpoint.png"), full_page=True)
        page.close()
        print("docs/checkpoint.png")


if __name__ == "__main__":
    main()
