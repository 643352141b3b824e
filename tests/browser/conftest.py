"""Browser fixtures: one live server and one chromium for the session, a fresh context per test
that fails the test on any console error or any request leaving the server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.browser.harness import chromium, live_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def base_url() -> Iterator[str]:
    with live_server() as url:
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


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


@pytest.fixture
def watch(base_url: str) -> Iterator[Watch]:
    w = Watch(base_url)
    yield w
    assert w.errors == [], f"console errors: {w.errors}"
    assert w.outside == [], f"requests left the server: {w.outside}"


@pytest.fixture
def context(browser: Browser, base_url: str, watch: Watch) -> Iterator[BrowserContext]:
    ctx = open_context(browser, base_url, watch, locale="en-US")
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def no_js_page(browser: Browser, base_url: str, watch: Watch) -> Iterator[Page]:
    """A page with JavaScript off: the forms must work as plain HTML."""
    ctx = open_context(browser, base_url, watch, java_script_enabled=False)
    yield ctx.new_page()
    ctx.close()
