"""The lab page in headless chromium: the first load (bytes, time to a rendered page) and each
interaction (a select changed -> the new tables painted, p50 and p95).

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
# From the change event to the frame after htmx settled the swap (the new tables on screen).
CHANGE_TO_PAINT = """async ([selector, value]) => {
  const painted = new Promise((resolve) => document.addEventListener("htmx:afterSettle", () =>
    requestAnimationFrame(() => setTimeout(() => resolve(performance.now()))), {once: true}));
  const select = document.querySelector(selector);
  const start = performance.now();
  select.value = value;
  select.dispatchEvent(new Event("change", {bubbles: true}));
  return (await painted) - start;
}"""


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
    """p50 and p95 of change -> painted, per kind; the module kind ends where it started."""
    result = {}
    with chromium() as browser:
        page = browser.new_page(base_url=base, viewport={"width": 1280, "height": 720})
        for kind, (selector, values) in INTERACTIONS.items():
            page.goto("/?preset=testmodel&device=cpu", wait_until="load")
            times = []
            for i in range(CHANGES):
                times.append(page.evaluate(CHANGE_TO_PAINT, [selector, values[i % 2]]))
                page.wait_for_timeout(50)  # let the announcement and history settle, as a person would
            times.sort()
            result[kind] = {
                "changes": len(times),
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
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
