"""Screenshots of the lab page for the README: ``make screenshots`` writes them under docs/."""

from __future__ import annotations

from tests.browser.harness import ROOT, chromium, live_server

SHOTS = {
    "lab-en.png": ("/?preset=testmodel&device=meta&style.buffer1=buffer", {}),
    "lab-zh-CN.png": ("/?preset=testmodel&device=meta&lang=zh-CN", {}),
    "lab-present.png": ("/?preset=mymodule&device=meta&style.bias=non_persistent_buffer&present=1", {}),
}


def main() -> None:
    with live_server() as base, chromium() as browser:
        for name, (path, options) in SHOTS.items():
            page = browser.new_page(base_url=base, viewport={"width": 1400, "height": 1000}, **options)
            page.goto(path)
            page.screenshot(path=str(ROOT / "docs" / name), full_page=name != "lab-present.png")
            page.close()
            print("docs/" + name)


if __name__ == "__main__":
    main()
