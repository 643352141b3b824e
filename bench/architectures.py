"""Architectures: what a report costs, cold and warm, and what the biggest page weighs.

In process: importing transformers (once per process), the first report of each architecture (it
also imports that family's modeling module), and the cold report (cache cleared, imports done),
median of a few. Over HTTP, against ``python -m app``: a warm request (an HTTP cache hit), and the
page of the biggest tree (Llama 8B: its bytes plain and gzipped, the server's time to render it,
and headless chromium's time to a loaded page at 1280x720).

``python -m bench.architectures`` prints them; ``make bench`` includes them.
"""

from __future__ import annotations

import gzip
import http.client
import os
import statistics
import time

from tests.support.browser import chromium, free_port, live_server

COLD_RUNS = 5
WARM_REQUESTS = 200
BIGGEST = "/architectures/llama_8b?device=meta"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def in_process() -> dict:
    from app.architectures import memo as architecture_memo
    from app.architectures.catalogue import ARCHITECTURES, transformers_module

    start = time.perf_counter()
    transformers_module()
    result: dict = {"import_transformers_ms": _ms(time.perf_counter() - start), "reports": {}}
    for arch_id in ARCHITECTURES:
        architecture_memo.clear()
        start = time.perf_counter()
        architecture_memo.tree_json(arch_id)
        first = time.perf_counter() - start
        colds = []
        for _ in range(COLD_RUNS):
            architecture_memo.clear()
            start = time.perf_counter()
            architecture_memo.tree_json(arch_id)
            colds.append(time.perf_counter() - start)
        start = time.perf_counter()
        architecture_memo.tree_json(arch_id)
        result["reports"][arch_id] = {
            "first_ms": _ms(first),
            "cold_ms": _ms(statistics.median(colds)),
            "memo_hit_ms": round((time.perf_counter() - start) * 1000, 3),
        }
    return result


def _get(conn: http.client.HTTPConnection, path: str, gzipped: bool = False) -> tuple[bytes, float]:
    start = time.perf_counter()
    conn.request("GET", path, headers={"Accept-Encoding": "gzip"} if gzipped else {})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, (path, response.status)
    return body, time.perf_counter() - start


def over_http(base: str) -> dict:
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=120)
    _get(conn, "/api/architectures/llama_8b")  # imports and builds; the next one is a cache hit
    warm = sorted(_get(conn, "/api/architectures/llama_8b")[1] for _ in range(WARM_REQUESTS))
    page, render = _get(conn, BIGGEST)  # its report is memoised already: this is the rendering
    packed, _ = _get(conn, BIGGEST, gzipped=True)
    with chromium() as browser:
        loads = []
        for _ in range(5):
            context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 720})
            tab = context.new_page()
            tab.goto(BIGGEST, wait_until="load")
            loads.append(
                tab.evaluate(
                    "(() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return n.loadEventEnd - n.startTime; })()"
                )
            )
            context.close()
    return {
        "warm_json_p50_ms": _ms(statistics.median(warm)),
        "warm_json_p99_ms": _ms(warm[int(0.99 * (len(warm) - 1))]),
        "biggest_page": BIGGEST,
        "biggest_page_bytes": len(page),
        "biggest_page_gzip_bytes": len(packed) if packed != page else len(gzip.compress(page)),
        "biggest_page_server_render_ms": _ms(render),
        "biggest_page_browser_load_ms_p50": round(statistics.median(loads), 1),
    }


def bench() -> dict:
    result = in_process()
    port = int(os.environ.get("BENCH_ARCH_PORT", "0")) or free_port()
    with live_server(port=port) as base:
        result["http"] = over_http(base)
    return result


def print_report(r: dict) -> None:
    print(f"architectures: import transformers {r['import_transformers_ms']} ms (once per process)")
    print(f"  {'id':<12}{'first ms':>10}{'cold ms':>9}{'memo hit ms':>13}")
    for arch_id, t in r["reports"].items():
        print(f"  {arch_id:<12}{t['first_ms']:>10}{t['cold_ms']:>9}{t['memo_hit_ms']:>13}")
    h = r["http"]
    print(
        f"  warm (HTTP cache hit) GET /api/architectures/llama_8b: p50 {h['warm_json_p50_ms']} ms, "
        f"p99 {h['warm_json_p99_ms']} ms"
    )
    print(
        f"  biggest page {h['biggest_page']}: {h['biggest_page_bytes']} bytes, "
        f"{h['biggest_page_gzip_bytes']} gzipped; server render {h['biggest_page_server_render_ms']} ms; "
        f"chromium load p50 {h['biggest_page_browser_load_ms_p50']} ms"
    )


if __name__ == "__main__":
    print_report(bench())
