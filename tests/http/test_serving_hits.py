"""Cache hits written by the server's protocol itself (``DeadlineProtocol._write_hit``) are byte for
byte what the ASGI path sends for the same request (uvicorn's stock protocol, where ``FastHits``
answers inside the app), and everything that is not a plain hit still takes the ASGI path."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib.metadata import version
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.http.cache import BAD_NAME, BAD_VALUE, header_lines, make_entry
from app.http.serving import TESTED_UVICORN, DeadlineProtocol, missing_hooks, uvicorn_options
from app.main import create_app
from app.settings import Settings
from tests.support.browser import ROOT
from tests.support.serving import Transport

LAB = "/api/lab?preset=testmodel&device=meta&style.buffer1=buffer"
PAGE = "/?preset=testmodel&device=meta"
ORIGIN = "http://127.0.0.1:8000"
SERVER = [(b"date", b"Wed, 02 Dec 2026 02:00:00 GMT"), (b"server", b"uvicorn")]
Deadline = partial(DeadlineProtocol, head_timeout=60, body_timeout=60, max_head_bytes=1 << 16)


def run(check: Callable[[], Any]) -> Any:
    # In a thread of its own: the browser tests' Playwright keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, check()).result()


class Served:
    """One connection of ``app`` through a protocol class, over a recorded transport."""

    def __init__(
        self, app: Any, protocol: Callable[..., HttpToolsProtocol], access_log: bool = False
    ) -> None:
        config = uvicorn.Config(app, log_level="critical", access_log=access_log, lifespan="off")
        config.load()  # wraps the app as a server does (proxy headers)
        state = ServerState()
        state.default_headers = SERVER
        self.protocol = protocol(config=config, server_state=state, app_state={})
        self.transport = Transport()
        self.protocol.connection_made(self.transport)

    async def send(self, data: bytes) -> tuple[bytes, int]:
        """What the server wrote for ``data``, and how many ASGI tasks it started at once."""
        start = len(self.transport.written)
        self.protocol.data_received(data)
        tasks = len(self.protocol.tasks)
        deadline = asyncio.get_running_loop().time() + 60  # cold pages are built in a thread now
        while (self.protocol.tasks or self.protocol.pipeline) and not self.transport.closed:
            assert asyncio.get_running_loop().time() < deadline, "the app never answered"
            await asyncio.sleep(0.001)
        return self.transport.written[start:], tasks


def request(target: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: 127.0.0.1:8000", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture(scope="module")
def app() -> Any:
    app = create_app(Settings())

    async def fill() -> None:
        served = Served(app, HttpToolsProtocol)
        for target in (LAB, PAGE):
            for headers in ([], ["Accept-Encoding: gzip"]):
                await served.send(request(target, *headers))
        swap = ["HX-Request: true", f"HX-Current-URL: {ORIGIN}/?preset=testmodel"]
        await served.send(request(PAGE, *swap))
        await served.send(request(PAGE, "Accept-Language: zh-CN,zh;q=0.9"))

    run(fill)
    return app


def etag_of(response: bytes) -> str:
    head = response.partition(b"\r\n\r\n")[0].decode()
    return next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.lower().startswith("etag:"))


CASES = {
    "identity": request(LAB),
    "gzip": request(LAB, "Accept-Encoding: gzip, deflate, br, zstd"),
    "head": request(LAB, method="HEAD"),
    "head_gzip": request(PAGE, "Accept-Encoding: gzip", method="HEAD"),
    "http_1_0": request(LAB, version="1.0"),
    "close": request(PAGE, "Connection: close"),
    "fragment": request(
        PAGE,
        "HX-Request: true",
        "HX-Current-URL: http://127.0.0.1:8000/?preset=testmodel",
        "Accept-Encoding: gzip",
    ),
    "chinese": request(PAGE, "Accept-Language: zh-CN,zh;q=0.9"),
    "get_with_a_body": request(LAB, "Content-Length: 5") + b"hello",
}


@pytest.mark.parametrize("case", CASES)
def test_a_hit_written_by_the_protocol_is_what_the_asgi_path_sends(app: Any, case: str) -> None:
    async def check() -> None:
        fast, fast_tasks = await Served(app, Deadline).send(CASES[case])
        asgi, asgi_tasks = await Served(app, HttpToolsProtocol).send(CASES[case])
        assert (fast_tasks, asgi_tasks) == (0, 1)  # the protocol answered; stock uvicorn ran the app
        assert b'server-timing: cache;desc="hit"' in fast
        assert fast == asgi

    run(check)


def test_a_304_and_the_connection_close_of_http_1_0_are_the_asgi_paths(app: Any) -> None:
    async def check() -> None:
        served = Served(app, Deadline)
        first, _ = await served.send(request(LAB, "Accept-Encoding: gzip"))
        again = request(LAB, "Accept-Encoding: gzip", f"If-None-Match: {etag_of(first)}")
        fast, tasks = await served.send(again)
        asgi, _ = await Served(app, HttpToolsProtocol).send(again)
        assert tasks == 0 and fast.startswith(b"HTTP/1.1 304") and fast.endswith(b"\r\n\r\n") and fast == asgi
        old = Served(app, Deadline)
        written, _ = await old.send(request(LAB, version="1.0"))
        assert b"connection: close\r\n" in written and old.transport.closed

    run(check)


def test_pipelined_hits_behind_a_miss_are_answered_in_order_through_the_app(app: Any) -> None:
    async def check() -> None:
        miss = request("/api/lab?preset=mymodule&device=meta")  # never asked before: the app runs
        hits = [request(LAB), request(PAGE, method="HEAD"), request(LAB, "Accept-Encoding: gzip")]
        fast, _ = await Served(app, Deadline).send(b"".join([miss, *hits, miss]))
        asgi, _ = await Served(app, HttpToolsProtocol).send(b"".join([miss, *hits, miss]))
        assert fast.count(b"HTTP/1.1 200") == 5
        strip = [line for line in fast.split(b"\r\n") if not line.startswith(b"server-timing")]
        assert strip == [line for line in asgi.split(b"\r\n") if not line.startswith(b"server-timing")]

    run(check)


def test_thousands_of_pipelined_hits_in_one_read_are_all_answered(app: Any) -> None:
    async def check() -> None:
        served = Served(app, Deadline)
        written, tasks = await served.send(request(LAB, method="HEAD") * 3000)
        assert tasks == 0 and written.count(b"HTTP/1.1 200 OK\r\n") == 3000

    run(check)


def test_nothing_more_is_run_after_a_hit_that_ended_the_connection(app: Any) -> None:
    async def check() -> None:
        served = Served(app, Deadline)
        last = request(LAB, "Connection: keep-alive", method="HEAD", version="1.0")  # 1.0: it ends here
        miss = request("/api/lab?preset=batchnorm&device=meta")
        written, tasks = await served.send(last + request(LAB, method="HEAD") * 10 + miss)
        assert written.count(b"HTTP/1.1 ") == 1 and served.transport.closed
        assert tasks == 0 and served.protocol.server_state.total_requests == 1

    run(check)


def test_a_pipeline_longer_than_the_head_buffer_cap_is_not_one_head(app: Any) -> None:
    async def check() -> None:
        served = Served(app, Deadline)
        pipeline = request(LAB, method="HEAD") * 1700  # 117 KB of whole heads in one read
        written, _ = await served.send(pipeline + b"HEAD " + LAB.encode())  # and the start of one more
        assert written.count(b"HTTP/1.1 200") == 1700 and not served.transport.closed
        await served.send(b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert served.transport.written.count(b"HTTP/1.1 200") == 1701
        big = Served(app, Deadline)  # a head that itself passes the cap still does, after whole ones
        written, _ = await big.send(request(LAB) * 2 + b"GET /?" + b"a" * 70_000)
        assert written.count(b"HTTP/1.1 200") == 2 and b"HTTP/1.1 431" in written and big.transport.closed

    run(check)


def test_the_send_deadline_is_armed_while_the_client_reads_nothing(app: Any) -> None:
    async def check() -> None:
        served = Served(app, Deadline)
        protocol = served.protocol
        protocol.pause_writing()  # the transport's buffer is over its high-water mark
        stall = protocol.stall
        assert stall is not None and stall.when() - protocol.loop.time() > 29
        protocol.resume_writing()  # it read some: no deadline
        assert protocol.stall is None and stall.cancelled()
        protocol.pause_writing()
        protocol.stall.cancel()
        protocol._stalled()  # still reading nothing when it passes
        assert served.transport.aborted

    run(check)


def test_a_request_waiting_to_write_when_the_connection_is_lost_writes_nothing(app: Any) -> None:
    async def check() -> None:
        served = Served(app, Deadline)
        served.protocol.flow.pause_writing()
        served.protocol.data_received(request(LAB) * 2)  # one waits to write, one waits behind it
        task = next(iter(served.protocol.tasks))
        for _ in range(20):
            await asyncio.sleep(0)
        served.protocol.connection_lost(None)
        await asyncio.wait_for(task, 1)
        assert served.transport.written == b"" and task.exception() is None

    run(check)


def test_a_client_that_does_not_read_gets_the_asgi_path_which_waits_for_it(app: Any) -> None:
    async def check() -> None:
        served = Served(app, Deadline)
        served.protocol.flow.pause_writing()  # the socket's buffer is full
        served.protocol.data_received(request(LAB))
        assert len(served.protocol.tasks) == 1
        for _ in range(100):
            await asyncio.sleep(0)
        assert served.transport.written == b""  # it waits for the client
        served.protocol.flow.resume_writing()
        for _ in range(100):
            await asyncio.sleep(0)
        assert served.transport.written.startswith(b"HTTP/1.1 200")

    run(check)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_with_an_access_log_a_hit_logs_uvicorns_line_and_a_forwarded_one_goes_through_the_app(
    app: Any,
) -> None:
    lines = Lines()

    async def check() -> list[int]:
        served = Served(app, Deadline, access_log=True)
        logger = logging.getLogger("uvicorn.access")  # uvicorn's config, just set up, does not propagate
        logger.addHandler(lines)
        logger.setLevel(logging.INFO)
        served.protocol.access_log = True  # as the protocols of a server with an access log have it
        try:
            _, plain = await served.send(request(LAB))
            _, forwarded = await served.send(request(LAB, "X-Forwarded-For: 203.0.113.9"))
        finally:
            logger.removeHandler(lines)
        return [plain, forwarded]

    assert run(check) == [0, 1]
    assert lines.lines == [
        f'127.0.0.1:1 - "GET {LAB} HTTP/1.1" 200',
        f'203.0.113.9:0 - "GET {LAB} HTTP/1.1" 200',  # the proxy-headers middleware ran
    ]


def test_what_is_not_a_plain_hit_goes_through_the_app(app: Any) -> None:
    big = "X-Big: " + "a" * 20_000  # over the header cap: the app's 431, never the store's answer
    cases = {
        "post": (request(LAB, "Content-Length: 0", method="POST"), b"HTTP/1.1 422"),  # it wants a body
        "uncached": (request("/api/health"), b"HTTP/1.1 200"),
        "another spec": (request("/api/lab?preset=testmodel&device=cpu"), b"HTTP/1.1 200"),
        "oversized head": (request(LAB, big), b"HTTP/1.1 431"),
    }

    async def check() -> None:
        for name, (data, status) in cases.items():
            written, tasks = await Served(app, Deadline).send(data)
            assert tasks == 1 and written.startswith(status), name

    run(check)


def test_the_next_head_has_its_deadline_after_a_hit(app: Any) -> None:
    async def check() -> None:
        served = Served(app, Deadline)
        await served.send(request(LAB))
        protocol = served.protocol
        assert protocol.deadline_at is not None and not protocol.in_body  # the head deadline, armed
        protocol.data_received(b"GET / HT")  # half a head, then nothing
        protocol.deadline_at = protocol.loop.time() - 1  # ... until the deadline has passed
        protocol.deadline.cancel()
        protocol._due()
        assert served.transport.written.split(b"HTTP/1.1 ")[-1].startswith(b"408") and served.transport.closed

    run(check)


def test_one_timer_per_connection_moved_only_when_a_deadline_comes_sooner() -> None:
    async def check() -> None:
        served = Served(create_app(Settings()), Deadline)
        protocol = served.protocol
        timer = protocol.deadline
        protocol._arm(120)  # later than the armed one: the timer stays, and will find it moved
        assert protocol.deadline is timer
        protocol._arm(1)  # sooner: a new timer
        assert protocol.deadline is not timer and timer.cancelled()
        protocol._arm(120)
        protocol.deadline.cancel()
        protocol._due()  # fires early: the deadline moved later, so it waits again, answering nothing
        assert protocol.deadline is not None and not protocol.deadline.cancelled()
        assert served.transport.written == b"" and not served.transport.closed
        protocol._disarm()
        protocol.deadline.cancel()
        protocol._due()  # nothing armed: nothing happens, no timer left
        assert protocol.deadline is None and not served.transport.closed
        protocol.connection_lost(None)

    run(check)


def test_the_checks_made_once_are_uvicorns_per_response_checks() -> None:
    assert BAD_NAME.pattern == httptools_impl.HEADER_RE.pattern
    assert BAD_VALUE.pattern == httptools_impl.HEADER_VALUE_RE.pattern
    assert header_lines([(b"Content-Type", b"text/plain")]) == b"content-type: text/plain\r\n"
    assert header_lines([(b"x-bad", b"a\r\nset-cookie: x=1")]) is None
    assert header_lines([(b"bad name", b"v")]) is None
    entry = make_entry(200, [(b"x-pushed", b"/?a\nb")], b"{}")
    assert entry.plain.lines is None  # such an entry is never written by the protocol: uvicorn refuses it


def test_the_comparisons_above_are_against_the_pinned_uvicorn() -> None:
    # The protocol subclasses uvicorn's private classes: the byte-for-byte tests above prove it for
    # the version pyproject.toml pins, which is the one installed and the one the protocol names.
    pinned = next(
        d
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("uvicorn==")
    )
    assert pinned == f"uvicorn=={version('uvicorn')}" == f"uvicorn=={TESTED_UVICORN}"
    assert missing_hooks() == ()


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (HttpToolsProtocol, "_start_asgi_task"),
        (HttpToolsProtocol, "on_response_complete"),
        (httptools_impl.RequestResponseCycle, "__init__"),
    ],
)
def test_a_uvicorn_without_a_hook_is_served_by_its_own_protocol_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, owner: type, name: str
) -> None:
    if name == "__init__":  # a cycle that no longer keeps one of the fields a written hit sets
        real = inspect.getsource
        source = real(owner.__init__).replace("self.waiting_for_100_continue", "self.waiting")
        monkeypatch.setattr(inspect, "getsource", lambda obj: source if obj is owner.__init__ else real(obj))
    else:
        monkeypatch.delattr(owner, name)
    missing_hooks.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="uvicorn.error"):
            options = uvicorn_options(Settings())
        assert options["http"] == "httptools"
        assert missing_hooks() and "are OFF" in caplog.text and missing_hooks()[0] in caplog.text
    finally:
        missing_hooks.cache_clear()  # computed again once the patch is undone


def test_health_says_whether_the_server_writes_its_hits_itself() -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app()) as client:  # the ASGI path alone: no protocol of ours
        assert client.get("/api/health").json()["fast_path"] is False


def lang_of(response: bytes) -> str:
    return re.search(rb'<html lang="([^"]+)"', response).group(1).decode()


def test_a_header_sent_twice_is_read_and_keyed_by_its_first_value_on_both_paths() -> None:
    # The page reads the first Accept-Language (as Starlette does); the cache must key the answer by
    # that same value, or one request would store a Chinese page that an English request then gets.
    async def check() -> None:
        fresh = create_app(Settings())
        target = "/?preset=mymodule"
        zh_first = request(target, "Accept-Language: zh-CN", "Accept-Language: en")
        en_first = request(target, "Accept-Language: en", "Accept-Language: zh-CN")
        through_app = Served(fresh, HttpToolsProtocol)  # stock protocol: answered in the app (HttpCache)
        stored, _ = await through_app.send(zh_first)
        assert lang_of(stored) == "zh-CN"
        answered, _ = await through_app.send(en_first)  # the in-app cache's answer: a miss, then English
        assert lang_of(answered) == "en"
        written = Served(fresh, Deadline)  # the protocol writes hits itself
        for raw, lang in (
            (en_first, "en"),
            (zh_first, "zh-CN"),
            (request(target, "Accept-Language: zh-CN"), "zh-CN"),
        ):
            out, tasks = await written.send(raw)
            assert tasks == 0 and lang_of(out) == lang  # every one a hit, in the language it asked first

    run(check)
