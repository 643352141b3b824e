"""The lab page in headless chromium: the first load (bytes, time to a rendered page) and each
interaction (a select changed -> the new tables and picture painted, p50 and p95; the picture's
motion starts in that frame and its 0.5 s transition is not counted).

``python -m bench.page [BASE_URL]`` starts its own server when no URL is given.
"""

from __future__ import annotations

import statistics
import sys
from contextlib import nullcontext

from tests.support.browser import chromium, live_server

RUNS = 15
CHANGES = 20  # per kind of interaction
# Each kind flips one select between two values, as a teacher does in front of a class.
INTERACTIONS = {
    "style": ("#style-buffer1", ("buffer", "plain_tensor")),
    "device": ("#device", ("cpu", "meta")),
    "module": ("#preset", ("mymodule", "testmodel")),
}
# From the change event to the frame after htmx settled the swap (the new tables on screen, the
# picture's chips set off on their way): its time, and how many of the picture's transitions and
# animations that frame started (the picture is in place and moving, not left out).
CHANGE_TO_PAINT = """async ([selector, value]) => {
  const moving = () => document.getAnimations().filter((a) => a.effect && a.effect.target
    && a.effect.target.closest && a.effect.target.closest("svg.diagram")).length;
  const painted = new Promise((resolve) => document.addEventListener("htmx:afterSettle", () =>
    requestAnimationFrame(() => setTimeout(() => resolve([performance.now(), moving()]))), {once: true}));
  const select = document.querySelector(selector);
  const start = performance.now();
  select.value = value;
  select.dispatchEvent(new Event("change", {bubbles: true}));
  const [end, motions] = await painted;
  return [end - start, motions];
}"""
# The picture's motion is over (a person watches it before the next change).
SETTLED = """() => document.getAnimations().every((a) => a.playState !== "running" || !a.effect
  || !a.effect.target || !a.effect.target.closest || !a.effect.target.closest("svg.diagram"))"""


def measure(base: str) -> dict:
    with chromium() as browser:
        sizes, times = [], []
        for _ in range(RUNS):
            context = browser.new_context(base_url=base)  # fresh: nothing cached
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Network.enable")
            received: list[int] = []
            cdp.on("Network.loadingFinished", lambda e, r=received: r.append(e["encodedDataLength"]))
            page.goto("/?preset=testmodel&device=meta", wait_until="load")
            page.wait_for_selector("#state-dict tbody tr[data-name]")
            timing = page.evaluate(
                "(() => { const n = performance.getEntriesByType('navigation')[0];"
                " return n.loadEventEnd - n.startTime; })()"
            )
            sizes.append(sum(received))
            times.append(timing)
            context.close()
    return {
        "first_load_bytes": int(statistics.median(sizes)),
        "first_load_ms_p50": round(statistics.median(times), 1),
        "first_load_ms_max": round(max(times), 1),
    }


def interactions(base: str) -> dict:
    """p50 and p95 of change -> painted, per kind, with the picture in place (the lab at 1280x720
    draws it beside the members); the module kind ends where it started."""
    result = {}
    with chromium() as browser:
        page = browser.new_page(base_url=base, viewport={"width": 1280, "height": 720})
        for kind, (selector, values) in INTERACTIONS.items():
            page.goto("/?preset=testmodel&device=cpu", wait_until="load")
            assert page.locator("#wide-diagram").is_visible(), "the picture is not on the page"
            times, motions = [], []
            for i in range(CHANGES):
                took, moved = page.evaluate(CHANGE_TO_PAINT, [selector, values[i % 2]])
                times.append(took)
                motions.append(moved)
                page.wait_for_function(SETTLED)  # its motion watched to the end, as a person would
            times.sort()
            result[kind] = {
                "changes": len(times),
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
                "picture_motions_p50": statistics.median(motions),
            }
        page.close()
    return result


def main() -> None:
    given = sys.argv[1] if len(sys.argv) > 1 else None
    with nullcontext(given) if given else live_server() as base:
        print(measure(base))
        print(interactions(base))


if __name__ == "__main__":
    main()
