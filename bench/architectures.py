"""Architectures: what a report costs, cold and warm, what a plan costs, and what the biggest page weighs.

In process: importing transformers (once per process), the first report of each architecture (it
also imports that family's modeling module), the cold report (cache cleared, imports done), median
of a few; the planner on the Llama 3 8B shape at batch 1 x 8192 tokens: one activation count (one
forward on meta, bf16 mixed precision) and the whole plan (every recipe, two batches each, FLOPs and
shapes). Over HTTP, against ``python -m app`` started fresh: the first architecture request after
the server says it is healthy (its warm-up done), ten simultaneous first requests for one plan
(single flight: about one plan's time), a warm request (an HTTP cache hit), and the page of the
biggest tree (Llama 8B: its bytes plain and gzipped, with and without its plan, the server's time to
render it, and headless chromium's time to a loaded page at 1280x720).

``python -m bench.architectures`` prints them; ``make bench`` includes them.
"""

from __future__ import annotations

import gzip
import http.client
import os
import statistics
import threading
import time

from tests.support.browser import chromium, free_port, live_server

COLD_RUNS = 5
PLAN_RUNS = 3
WARM_REQUESTS = 200
BIGGEST = "/architectures/llama_8b?device=meta"
BIGGEST_PLAN = BIGGEST + "&batch=1&tokens=8192&context=8192"
FIRST = "/api/architectures/llama_8b"
SHARED_PLAN = "/api/architectures/gpt2/plan?batch=3&tokens=256"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def in_process() -> dict:
    import torch

    from app.architectures import memo as architecture_memo
    from app.architectures.activations import training_forward
    from app.architectures.catalogue import ARCHITECTURES, build, transformers_module
    from app.architectures.planner import PlanInput, plan, training_inputs

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
    spec = PlanInput(batch=1, tokens=8192, context=8192)
    counts, plans = [], []
    for _ in range(PLAN_RUNS):
        model = build("llama_8b", "meta")
        inputs = training_inputs(model, 1, spec)
        start = time.perf_counter()
        training_forward(model, inputs, torch.bfloat16)
        counts.append(time.perf_counter() - start)
        model = build("llama_8b", "meta")
        start = time.perf_counter()
        plan("llama_8b", model, spec)
        plans.append(time.perf_counter() - start)
    result["llama_8b_1x8192"] = {
        "activation_count_ms": _ms(statistics.median(counts)),
        "whole_plan_ms": _ms(statistics.median(plans)),
    }
    return result


def _get(conn: http.client.HTTPConnection, path: str, gzipped: bool = False) -> tuple[bytes, float]:
    start = time.perf_counter()
    conn.request("GET", path, headers={"Accept-Encoding": "gzip"} if gzipped else {})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, (path, response.status)
    return body, time.perf_counter() - start


def _together(base: str, path: str, n: int) -> float:
    """Seconds for ``n`` simultaneous first requests of one path, each on its own connection."""
    host = base.removeprefix("http://")
    done = []
    gate = threading.Barrier(n)

    def one() -> None:
        conn = http.client.HTTPConnection(host, timeout=300)
        gate.wait()
        done.append(_get(conn, path)[1])

    threads = [threading.Thread(target=one) for _ in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def over_http(base: str) -> dict:
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=300)
    _, first = _get(conn, FIRST)  # the first architecture request after healthy: warm-up paid it
    _, first_page = _get(conn, BIGGEST)
    together = _together(base, SHARED_PLAN, 10)
    _, single = _get(conn, SHARED_PLAN.replace("batch=3", "batch=5"))  # another plan, alone
    warm = sorted(_get(conn, FIRST)[1] for _ in range(WARM_REQUESTS))
    page, render = _get(conn, BIGGEST)  # its report is memoised already: this is the rendering
    packed, _ = _get(conn, BIGGEST, gzipped=True)
    planned, planned_s = _get(conn, BIGGEST_PLAN)
    planned_packed, _ = _get(conn, BIGGEST_PLAN, gzipped=True)
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
    gz = lambda raw, got: len(got) if got != raw else len(gzip.compress(raw))  # noqa: E731
    return {
        "first_request_after_healthy_ms": _ms(first),
        "first_page_after_healthy_ms": _ms(first_page),
        "ten_first_plan_requests_together_ms": _ms(together),
        "one_plan_alone_ms": _ms(single),
        "warm_json_p50_ms": _ms(statistics.median(warm)),
        "warm_json_p99_ms": _ms(warm[int(0.99 * (len(warm) - 1))]),
        "biggest_page": BIGGEST,
        "biggest_page_bytes": len(page),
        "biggest_page_gzip_bytes": gz(page, packed),
        "biggest_page_server_render_ms": _ms(render),
        "biggest_page_with_plan": BIGGEST_PLAN,
        "biggest_page_with_plan_bytes": len(planned),
        "biggest_page_with_plan_gzip_bytes": gz(planned, planned_packed),
        "biggest_page_with_plan_first_ms": _ms(planned_s),
        "biggest_page_browser_load_ms_p50": round(statistics.median(loads), 1),
    }


def bench() -> dict:
    port = int(os.environ.get("BENCH_ARCH_PORT", "0")) or free_port()
    with live_server(port=port) as base:  # fresh: the first request is the first after healthy
        http_rows = over_http(base)
    result = in_process()
    result["http"] = http_rows
    return result


def print_report(r: dict) -> None:
    print(f"architectures: import transformers {r['import_transformers_ms']} ms (once per process)")
    print(f"  {'id':<12}{'first ms':>10}{'cold ms':>9}{'memo hit ms':>13}")
    for arch_id, t in r["reports"].items():
        print(f"  {arch_id:<12}{t['first_ms']:>10}{t['cold_ms']:>9}{t['memo_hit_ms']:>13}")
    p = r["llama_8b_1x8192"]
    print(
        f"  Llama 3 8B at batch 1 x 8192 tokens on meta: activation count {p['activation_count_ms']} ms"
        f" (target <= 2000), whole plan {p['whole_plan_ms']} ms"
    )
    h = r["http"]
    print(
        f"  first request after healthy GET {FIRST}: {h['first_request_after_healthy_ms']} ms"
        f" (target <= 1000); first page {BIGGEST}: {h['first_page_after_healthy_ms']} ms"
    )
    print(
        f"  ten simultaneous first requests for one plan: {h['ten_first_plan_requests_together_ms']} ms"
        f" (one plan alone: {h['one_plan_alone_ms']} ms)"
    )
    print(
        f"  warm (HTTP cache hit) GET {FIRST}: p50 {h['warm_json_p50_ms']} ms, p99 {h['warm_json_p99_ms']} ms"
    )
    print(
        f"  biggest page {h['biggest_page']}: {h['biggest_page_bytes']} bytes, "
        f"{h['biggest_page_gzip_bytes']} gzipped; server render {h['biggest_page_server_render_ms']} ms; "
        f"chromium load p50 {h['biggest_page_browser_load_ms_p50']} ms"
    )
    print(
        f"  with its plan inline ({h['biggest_page_with_plan']}): {h['biggest_page_with_plan_bytes']} bytes, "
        f"{h['biggest_page_with_plan_gzip_bytes']} gzipped, first {h['biggest_page_with_plan_first_ms']} ms"
    )


if __name__ == "__main__":
    print_report(bench())
