"""`make bench`: the app against a bare ASGI fixed-bytes baseline under the same uvicorn, both driven
by wrk on loopback in the same run, alternately, so the ratios survive a shared, noisy machine.

Prints requests/s, p50/p99 and errors per view and its ratio to the baseline; the cold cost of a
never-seen spec (server-side, from Server-Timing); startup time; resident memory after 5k and 50k
mixed requests; the first page load and change -> paint of each interaction in headless chromium;
the fan-out of a class's changes to 300 students (each also fetching what it shows) (bench/classroom.py).
Writes bench/results/latest.json.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import torch

from app.lab.presets import PRESETS
from app.lab.styles import STYLES
from bench import architectures, classroom, cli
from tests.support.browser import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "latest.json"
DURATION = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = 32
SPEC = "preset=testmodel&device=meta&style.buffer1=buffer"
EXPERIMENT = "preset=testmodel&style.buffer1=buffer"  # on the CPU, so the step really trains
# What Chromium sends; httpx and requests send "gzip, deflate". Only gzip is served compressed.
BROWSER = "Accept-Encoding: gzip, deflate, br, zstd"


@contextmanager
def server(module: str, stock: bool = False) -> tuple[str, int, float]:
    """``module`` served on a free port as ``make run`` serves the app (``bench.serve``), or by
    uvicorn's stock command line (``stock``); yields (base URL, pid, seconds to healthy)."""
    port = free_port()
    health = "/api/health" if module == "app.main:app" else "/fixed"  # the baseline answers any path
    start = time.perf_counter()
    if stock:
        command = ["-m", "uvicorn", module, "--port", str(port), "--log-level", "warning", "--no-access-log"]
    else:
        command = ["-m", "bench.serve", module]
    proc = subprocess.Popen([sys.executable, *command], cwd=ROOT, env={**os.environ, "MRE_PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base + health)
        yield base, proc.pid, time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(10)


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, headers: list[str] = (), seconds: int = DURATION) -> dict:
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    errors += int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
        "p99_ms": _ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        "errors": errors,
    }


def throughput(app: str, baseline: str, stock_app: str, stock_baseline: str) -> dict:
    """Each view against the baseline, alternately, both served as ``make run`` serves. Views ask as
    a browser or an HTTP library does (Chromium, httpx and requests all send Accept-Encoding with
    gzip), so they get what such clients get; one round each of the other rows: ``*_identity`` ask
    without it, as wrk and curl do by default; ``*_asgi`` are the same hits from the app under
    uvicorn's stock protocol, where the app's ASGI callable answers them (``FastHits.answer``)
    rather than the server's protocol (``DeadlineProtocol``); ``baseline_stock`` is the baseline
    under that stock protocol, which has no deadlines."""
    host = app.removeprefix("http://")
    swap = ["HX-Request: true", f"HX-Current-URL: http://{host}/?preset=testmodel"]
    views = {
        "lab_json": (f"{app}/api/lab?{SPEC}", [BROWSER]),
        "htmx_fragment": (f"{app}/?{SPEC}", [BROWSER, *swap]),
        "full_page": (f"{app}/?{SPEC}", [BROWSER]),
        "experiment": (f"{app}/api/experiments/step?{EXPERIMENT}", [BROWSER]),
    }
    others = {
        "lab_json_identity": (f"{app}/api/lab?{SPEC}", []),
        "htmx_fragment_identity": (f"{app}/?{SPEC}", swap),
        "full_page_identity": (f"{app}/?{SPEC}", []),
        "lab_json_asgi": (f"{stock_app}/api/lab?{SPEC}", [BROWSER]),
        "htmx_fragment_asgi": (f"{stock_app}/?{SPEC}", [BROWSER, *swap]),
        "full_page_asgi": (f"{stock_app}/?{SPEC}", [BROWSER]),
        "baseline_stock": (f"{stock_baseline}/fixed", []),
    }
    runs: dict[str, list[dict]] = {name: [] for name in ["baseline", *views, *others]}
    for url, headers in [*views.values(), *others.values()]:  # warm: the first of each fills the cache
        urllib.request.urlopen(urllib.request.Request(url, headers=dict(h.split(": ", 1) for h in headers)))
    schedule = [*views.items()] * ROUNDS + [*others.items()]
    for name, (url, headers) in schedule:  # alternate: baseline, view, baseline, view ...
        runs["baseline"].append(wrk(baseline + "/fixed"))
        runs[name].append(wrk(url, headers))
    base_rps = statistics.median(r["rps"] for r in runs["baseline"])
    summary = {}
    for name, rs in runs.items():
        rps = statistics.median(r["rps"] for r in rs)
        summary[name] = {
            "rps": round(rps),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in rs), 2),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in rs), 2),
            "errors": sum(r["errors"] for r in rs),
            "ratio": round(rps / base_rps, 2),
        }
    return summary


def specs(preset: str) -> list[str]:
    members = PRESETS[preset].member_names
    out = []
    for device in ("cpu", "meta"):
        for combo in itertools.product(STYLES, repeat=len(members)):
            styles = "&".join(f"style.{m}={s}" for m, s in zip(members, combo, strict=True))
            out.append(f"preset={preset}&device={device}&{styles}")
    random.Random(0).shuffle(out)
    return out


def server_ms(conn: http.client.HTTPConnection, path: str) -> float:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    assert response.status == 200, (path, response.status)
    return float(re.search(r"dur=([\d.]+)", response.getheader("server-timing")).group(1))


def cold(app: str) -> dict:
    """Server-side cost of the first request for a never-seen spec, median over many specs."""
    conn = http.client.HTTPConnection(app.removeprefix("http://"))
    result = {}
    for preset, n in (("mymodule", 49), ("testmodel", 400)):
        pool = specs(preset)
        # Disjoint specs per kind: a page must not find its report already built by the JSON run.
        for (kind, prefix), chosen in zip(
            (("json", "/api/lab?"), ("page", "/?")), (pool[:n], pool[n : 2 * n]), strict=True
        ):
            times = [server_ms(conn, prefix + q) for q in chosen]
            result[f"{preset}_{kind}"] = {
                "specs": len(times),
                "median_ms": round(statistics.median(times), 3),
                "p90_ms": round(statistics.quantiles(times, n=10)[-1], 3),
            }
    return result


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def memory(app: str, pid: int) -> dict:
    """RSS after 5k and after 50k mixed requests: hot specs, htmx swaps, and a stream of new specs."""
    hot = [f"/api/lab?{SPEC}", f"/?{SPEC}", f"/?{SPEC}\thx", "/api/presets", "/?preset=mymodule&lang=zh-CN"]
    fresh = specs("testmodel")
    lines = []
    for i in range(5000):
        lines.append(hot[i % len(hot)] if i % 5 else ("/api/lab?" if i % 2 else "/?") + fresh[i % len(fresh)])
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(lines))
    script = str(ROOT / "bench" / "mixed.lua")
    result: dict = {}
    done = 0
    for target in (5_000, 50_000):
        while done < target:  # wrk runs for a duration, so count what it did until the target is passed
            cmd = ["wrk", "-t1", "-c8", "-d1s", "-s", script, app, "--", f.name]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            done += int(re.search(r"(\d+) requests in", out).group(1))
        result[f"after_{target // 1000}k"] = {"requests": done, "rss_mb": round(rss_mb(pid), 1)}
    os.unlink(f.name)
    first, last = result["after_5k"]["rss_mb"], result["after_50k"]["rss_mb"]
    result["growth_pct"] = round((last / first - 1) * 100, 1)
    return result


def page_load(app: str) -> dict:
    from bench.page import interactions, measure

    return {**measure(app), "interactions": interactions(app)}


def main() -> None:
    report: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
        f"torch {torch.__version__}",
        "wrk": f"-t2 -c{CONNECTIONS} -d{DURATION}s, {ROUNDS} rounds (other rows: 1), alternating with the "
        "baseline; views send a browser's Accept-Encoding; served as make run serves (bench.serve)",
    }
    startups = []
    for _ in range(3):
        with server("app.main:app") as (_, _, seconds):
            startups.append(seconds)
    report["startup_s"] = round(statistics.median(startups), 2)
    with server("app.main:app") as (app, pid, _), server("bench.baseline:app") as (baseline, _, _):
        report["cold"] = cold(app)
        stock_app, stock_baseline = server("app.main:app", True), server("bench.baseline:app", True)
        with stock_app as (stock_app_url, _, _), stock_baseline as (stock_baseline_url, _, _):
            report["throughput"] = throughput(app, baseline, stock_app_url, stock_baseline_url)
        report["memory"] = memory(app, pid)
        report["page"] = page_load(app)
    report["cli"] = cli.bench()
    report["architectures"] = architectures.bench()
    report["classroom"] = classroom.run()  # its own servers (and a redis-server), after the others
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)


def print_report(r: dict) -> None:
    print(f"machine: {r['machine']}\nwrk: {r['wrk']}\n")
    print(f"{'view':<24}{'req/s':>9}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, t in r["throughput"].items():
        print(f"{name:<24}{t['rps']:>9}{t['ratio']:>8}{t['p50_ms']:>9}{t['p99_ms']:>9}{t['errors']:>8}")
    print("\ncold (first request of a never-seen spec, server-side):")
    for name, c in r["cold"].items():
        print(f"  {name:<16} median {c['median_ms']} ms, p90 {c['p90_ms']} ms over {c['specs']} specs")
    print(f"\nstartup to healthy: {r['startup_s']} s (median of 3)")
    m = r["memory"]
    a, b = m["after_5k"], m["after_50k"]
    print(
        f"memory (RSS): {a['rss_mb']} MB after {a['requests']} mixed requests, "
        f"{b['rss_mb']} MB after {b['requests']} ({m['growth_pct']:+}%)"
    )
    p = r["page"]
    print(f"first page load: {p['first_load_bytes']} bytes, {p['first_load_ms_p50']} ms to load (p50)")
    print("select changed -> tables and picture painted (headless chromium, 1280x720; the picture's")
    print("0.5 s transition starts in that frame and is not counted; target p50 <= 50 ms, p95 <= 100 ms):")
    for kind, t in p["interactions"].items():
        print(
            f"  {kind:<8} p50 {t['p50_ms']} ms, p95 {t['p95_ms']} ms over {t['changes']} changes"
            f" ({t.get('picture_motions_p50', 0):g} of the picture's transitions started, p50)"
        )
    if "cli" in r:
        cli.print_report(r["cli"])
    if "architectures" in r:
        print()
        architectures.print_report(r["architectures"])
    classroom.print_report(r["classroom"])
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
