"""A live server and Debian's chromium driven by Playwright, shared by the browser tests and the
screenshot script. Playwright's own browser download is never used."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.support.reference import tables

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, url: str, seconds: float = 60) -> None:
    """Poll ``url`` until it answers; fail if the server process dies or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server at {url} did not start") from None
            time.sleep(0.02)


@contextmanager
def live_server(env: dict[str, str] | None = None, port: int | None = None) -> Iterator[str]:
    """The app as ``make run`` serves it (``python -m app``: its connection deadlines included), on
    loopback port (a free one unless given), with ``env`` added to the environment; yields its base URL."""
    port = port or free_port()
    settings = {k: v for k, v in os.environ.items() if not k.startswith("MRE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env={**settings, "MRE_HOST": "127.0.0.1", "MRE_PORT": str(port), **(env or {})},
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base + "/api/health")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Watch:
    """Console errors, page errors and outside requests seen by a context."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.errors: list[str] = []
        self.outside: list[str] = []

    def attach(self, page: Page) -> None:
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def request(self, route, request) -> None:
        if request.url.startswith(self.base_url) or request.url.startswith("data:"):
            route.continue_()
        else:
            self.outside.append(request.url)
            route.abort()


def open_context(browser: Browser, base_url: str, watch: Watch, **options) -> BrowserContext:
    context = browser.new_context(base_url=base_url, **options)
    context.route("**/*", watch.request)
    context.on("page", watch.attach)
    return context


AXE = Path(__file__).parents[1] / "browser" / "vendor" / "axe-core-4.14.1.min.js"


TABLES = {
    "named-parameters": "named_parameters",
    "named-buffers": "named_buffers",
    "state-dict": "state_dict",
}


def names(page: Page, table_id: str) -> list[str]:
    return page.locator(f"#{table_id} tbody tr[data-name]").evaluate_all(
        "rows => rows.map(r => r.dataset.name)"
    )


def devices_of(page: Page, table_id: str) -> list[str]:
    return page.locator(f"#{table_id} tbody tr[data-name]").evaluate_all(
        "rows => rows.map(r => r.dataset.device)"
    )


def assert_tables_match_torch(page: Page, preset: str, styles: dict[str, str], device: str) -> None:
    ref = tables(preset, styles, device)
    for table_id, key in TABLES.items():
        assert names(page, table_id) == [row["name"] for row in ref[key]], table_id
        assert devices_of(page, table_id) == [row["device"] for row in ref[key]], table_id


def mark_page(page: Page) -> None:
    """A marker that a full page load would wipe out."""
    page.evaluate("window.__noReload = true")


def still_same_page(page: Page) -> bool:
    return page.evaluate("window.__noReload === true")
