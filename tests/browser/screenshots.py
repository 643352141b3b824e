"""Screenshots of the pages for the README: ``make screenshots`` writes them under docs/."""

from __future__ import annotations

import io

import torch

from tests.support.browser import ROOT, chromium, live_server
from tests.support.reference import TUTORIAL_DEFAULTS, reference

# At a projector's 1280x720 (the first screen only: it must hold the lab) and a 390 px phone.
PROJECTOR = {"width": 1280, "height": 720}
SHOTS = {
    "lab-en.png": ("/?preset=testmodel&device=meta", PROJECTOR),
    "lab-present.png": (
        "/?preset=testmodel&device=meta&style.buffer2=non_persistent_buffer&present=1",
        PROJECTOR,
    ),
    "lab-zh-CN.png": ("/?preset=testmodel&device=meta&lang=zh-CN", PROJECTOR),
    "lab-phone.png": ("/?preset=testmodel&device=meta", {"width": 390, "height": 844}),
}


def main() -> None:
    with live_server() as base, chromium() as browser:
        for name, (path, viewport) in SHOTS.items():
            page = browser.new_page(base_url=base, viewport=viewport)
            page.goto(path)
            page.wait_for_load_state("load")
            page.screenshot(path=str(ROOT / "docs" / name))
            page.close()
            print("docs/" + name)
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
