"""Browser fixtures: one live server and one chromium for the session, a fresh context per test
that fails the test on any console error or any request leaving the server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.support.browser import Watch, chromium, live_server, open_context


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def base_url() -> Iterator[str]:
    # Every class test starts its classes from loopback: the default of 5 open per address is the
    # class tests' own (tests/classroom); here the browser tests share one server.
    with live_server({"MRE_CLASS_MAX_ROOMS_PER_CLIENT": "50"}) as url:
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


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
