"""First page load in headless chromium: bytes transferred and time to a rendered lab page.

``python -m bench.page [BASE_URL]`` starts its own server when no URL is given.
"""

from __future__ import annotations

import statistics
import sys
from contextlib import nullcontext

from tests.browser.harness import chromium, live_server

RUNS = 15


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


def main() -> None:
    given = sys.argv[1] if len(sys.argv) > 1 else None
    with nullcontext(given) if given else live_server() as base:
        print(measure(base))


if __name__ == "__main__":
    main()
