"""The lab in an iframe of a slide or a course page: allowed only for the sites MRE_FRAME_ANCESTORS
names. The framing page is served from another origin (localhost vs 127.0.0.1, another port)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Browser, expect

from tests.support.browser import free_port, live_server


@contextmanager
def course_page(lab: str) -> Iterator[str]:
    """A page on its own origin whose only content is the lab, embedded."""
    frame = f'<iframe id="lab" src="{lab}/?embed=1&device=meta" width="1200" height="700"></iframe>'
    body = f"<!doctype html><title>course</title>{frame}"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()


def lab_frame(browser: Browser, origin: str):
    page = browser.new_page()
    page.goto(origin + "/")
    page.wait_for_load_state("load")
    (frame,) = [f for f in page.frames if f != page.main_frame]
    return page, frame


@pytest.mark.parametrize("allowed", [True, False], ids=["named", "not-named"])
def test_only_the_named_sites_may_frame_the_lab(browser: Browser, allowed: bool) -> None:
    port = free_port()
    with course_page(f"http://127.0.0.1:{port}") as origin:
        env = {"MRE_FRAME_ANCESTORS": origin} if allowed else {}
        with live_server(env, port):
            page, frame = lab_frame(browser, origin)
            if allowed:
                expect(frame.locator("#state-dict tr[data-name='buffer2']")).to_have_attribute(
                    "data-device", "meta"
                )
                expect(frame.locator("header.top")).to_have_count(0)  # the lab alone
                frame.select_option("#device", "cpu")  # and it works in place
                expect(frame.locator("#state-dict tr[data-name='buffer2']")).to_have_attribute(
                    "data-device", "cpu"
                )
            else:
                expect(frame.locator("#lab-form")).to_have_count(0)  # the browser refused to show it
            page.close()
