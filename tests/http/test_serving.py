"""Connections against a real server, started the way `make run` starts it (`python -m app`, MRE_
settings): silent, half-sent and stalled connections are closed on time, and do not starve others."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import uvicorn
from uvicorn.server import ServerState

from app.http.serving import DeadlineProtocol, uvicorn_options
from app.settings import Settings
from tests.support.browser import ROOT, free_port, wait_healthy
from tests.support.serving import Transport

pytestmark = pytest.mark.servers  # starts server processes (left out of mutation runs)

TIMEOUT = 1.0  # head, body and keep-alive, in the server under test (shipped: 10, 30 and 5 s)
SLACK = 2.0  # the loop's timer, a loaded test machine


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, int]]:
    """(port, pid) of ``python -m app`` with short deadlines."""
    port = free_port()
    env = {
        **os.environ,
        "MRE_PORT": str(port),
        "MRE_HEAD_TIMEOUT_SECONDS": str(TIMEOUT),
        "MRE_BODY_TIMEOUT_SECONDS": str(TIMEOUT),
        "MRE_KEEP_ALIVE_SECONDS": str(int(TIMEOUT)),
        "MRE_SEND_TIMEOUT_SECONDS": str(TIMEOUT),
    }
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}/api/health")
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(20)


def test_health_says_the_server_writes_its_hits_itself(server: tuple[int, int]) -> None:
    port, _ = server
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=10) as answer:
        assert json.load(answer)["fast_path"] is True


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT + SLACK + 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    start, received = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"still open after {time.monotonic() - start:.1f} s; received {received[:80]!r}")
    return received, time.monotonic() - start


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a connection that stays open."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def get(port: int, path: str = "/api/health") -> bytes:
    with connect(port) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return read_until_closed(sock)[0]


def assert_timed_out(received: bytes, what: str) -> None:
    """A 408 that says what ran out of time, JSON with every security header, then the close."""
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received[:200]
    assert what in json.loads(body)["detail"]
    for name in (
        b"content-security-policy",
        b"x-frame-options",
        b"x-content-type-options",
        b"referrer-policy",
    ):
        assert name in head.lower(), name


def test_a_connection_that_sends_nothing_is_closed(server: tuple[int, int]) -> None:
    with connect(server[0]) as sock:
        received, seconds = read_until_closed(sock)
    assert received == b"" and TIMEOUT * 0.9 <= seconds <= TIMEOUT + SLACK


@pytest.mark.parametrize(
    "head",
    [b"G", b"GET / HTTP/1.1\r\n", b"GET /api/health HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n"],
)
def test_a_half_sent_head_is_closed(server: tuple[int, int], head: bytes) -> None:
    with connect(server[0]) as sock:
        sock.sendall(head)
        received, seconds = read_until_closed(sock)
    assert_timed_out(received, "request head")
    assert seconds <= TIMEOUT + SLACK


def test_a_head_trickled_a_byte_at_a_time_is_closed_on_the_first_deadline(server: tuple[int, int]) -> None:
    # Bytes keep coming, so no idle timeout would fire: the deadline is for the whole head.
    with connect(server[0]) as sock:
        start = time.monotonic()
        try:
            for byte in b"GET /api/health HTTP/1.1\r\nX-Slow: " + b"s" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(TIMEOUT / 10)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert time.monotonic() - start <= TIMEOUT + SLACK
        received = read_until_closed(sock)[0]  # the 408, unless a reset of the still-sending socket ate it
        assert received == b"" or received.startswith(b"HTTP/1.1 408")


def test_a_stalled_body_is_closed(server: tuple[int, int]) -> None:
    with connect(server[0]) as sock:
        sock.sendall(b"POST /api/lab HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        sock.sendall(b'Content-Length: 100\r\n\r\n{"preset": ')
        received, seconds = read_until_closed(sock)
    assert_timed_out(received, "request body")
    assert seconds <= TIMEOUT + SLACK


def test_an_idle_keep_alive_connection_is_closed_after_its_response(server: tuple[int, int]) -> None:
    with connect(server[0]) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        received, seconds = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 200") and seconds <= TIMEOUT + SLACK


def test_a_client_that_never_reads_its_answers_is_dropped(server: tuple[int, int]) -> None:
    page = b"GET /?preset=testmodel&device=meta HTTP/1.1\r\nHost: x\r\n\r\n"  # 20 KB each
    with socket.create_connection(("127.0.0.1", server[0]), timeout=TIMEOUT + SLACK + 3) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(page * 500)  # 10 MB of answers asked for; none read for a while
        time.sleep(TIMEOUT + SLACK)
        received, seconds = read_until_closed(sock)
    assert received.count(b"HTTP/1.1 200") < 500 and seconds < SLACK  # dropped: a reset, nothing more
    assert get(server[0]).startswith(b"HTTP/1.1 200")  # the server goes on


def test_slow_but_timely_requests_are_served(server: tuple[int, int]) -> None:
    body = b'{"preset": "testmodel", "device": "meta"}'
    with connect(server[0]) as sock:
        for _ in range(2):  # two requests on one connection, each sent in pieces within the deadlines
            sock.sendall(b"POST /api/lab HTTP/1.1\r\nHost: x\r\n")
            time.sleep(TIMEOUT / 3)
            sock.sendall(b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
            time.sleep(TIMEOUT / 3)
            sock.sendall(body[:10])
            time.sleep(TIMEOUT * 0.7)  # a pause in the body, shorter than its timeout
            sock.sendall(body[10:])
            response = read_response(sock)
            assert response.startswith(b"HTTP/1.1 200") and b'"device":"meta"' in response
            time.sleep(TIMEOUT / 3)


def test_a_head_larger_than_the_buffer_cap_is_431_and_closed(server: tuple[int, int]) -> None:
    with connect(server[0]) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nX-Big: ")
        try:
            for _ in range(200):  # never ends the header; 200 x 1 KiB is over the 64 KiB cap
                sock.sendall(b"b" * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received, _ = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 431")
    assert b"x-content-type-options: nosniff" in received and b"65536 bytes" in received


@pytest.mark.parametrize(
    "garbage",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"\x00\xff\r\n\r\n",
    ],
)
def test_a_request_the_parser_refuses_is_a_json_400_with_the_headers(
    server: tuple[int, int], garbage: bytes
) -> None:
    with connect(server[0]) as sock:
        sock.sendall(garbage)
        received, _ = read_until_closed(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"x-content-type-options: nosniff" in head
    assert b"content-security-policy: default-src 'self'" in head
    assert json.loads(body) == {"detail": "Invalid HTTP request received."}


def test_half_sent_connections_do_not_starve_others_and_are_all_closed(server: tuple[int, int]) -> None:
    port, pid = server
    assert b"<!doctype html>" in get(port, "/?preset=testmodel")  # warm: then it costs a millisecond
    baseline = len(os.listdir(f"/proc/{pid}/fd"))
    attackers = [connect(port) for _ in range(300)]
    try:
        for i, sock in enumerate(attackers):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"")
        start = time.monotonic()
        assert get(port).startswith(b"HTTP/1.1 200")
        assert b"<!doctype html>" in get(port, "/?preset=testmodel")
        assert time.monotonic() - start < TIMEOUT  # answered while they all hang on
        for i, sock in enumerate(attackers):  # a half-sent head is told 408; a silent one just closed
            received = read_until_closed(sock)[0]
            assert received.startswith(b"HTTP/1.1 408") if i % 2 else received == b""
        deadline = time.monotonic() + SLACK
        while len(os.listdir(f"/proc/{pid}/fd")) > baseline + 5:
            assert time.monotonic() < deadline, "the server still holds their descriptors"
            time.sleep(0.05)
    finally:
        for sock in attackers:
            sock.close()


def test_the_shipped_defaults_are_what_python_m_app_runs_with() -> None:
    options = uvicorn_options(Settings())
    protocol = options["http"]
    assert protocol.func is DeadlineProtocol
    assert protocol.keywords == {
        "head_timeout": 10.0,
        "body_timeout": 30.0,
        "max_head_bytes": 65536,
        "send_timeout": 30.0,
        "frame_ancestors": "",
    }
    assert options["timeout_keep_alive"] == 5


def test_a_body_the_app_has_not_read_yet_is_not_the_clients_delay() -> None:
    async def check() -> None:
        async def app(scope: dict, receive: object, send: object) -> None:
            await asyncio.sleep(3600)  # never reads its body

        config = uvicorn.Config(app, log_level="critical")
        protocol = DeadlineProtocol(
            config=config,
            server_state=ServerState(),
            app_state={},
            head_timeout=60,
            body_timeout=60,
            max_head_bytes=1 << 16,
        )
        transport = Transport()
        protocol.connection_made(transport)
        protocol.data_received(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"x" * 100_000
        )
        assert protocol.in_body and protocol.flow.read_paused  # uvicorn stopped reading: over its buffer

        def deadline_passes() -> None:
            protocol.deadline.cancel()
            protocol.deadline_at = protocol.loop.time() - 1
            protocol._due()

        deadline_passes()  # the body deadline passes while uvicorn is not reading
        assert not transport.closed and protocol.deadline_at > protocol.loop.time() + 59  # armed again
        assert not protocol.deadline.cancelled()
        protocol.flow.resume_reading()  # the app read it; now the client is the one not sending
        deadline_passes()
        assert transport.closed
        for task in list(protocol.tasks):
            task.cancel()

    # In a thread of its own: the browser tests' Playwright keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, check()).result()


def shipped_protocol(app: object) -> DeadlineProtocol:
    """The protocol as ``python -m app`` makes it, shipped defaults and all, on a recording transport."""
    options = uvicorn_options(Settings())
    config = uvicorn.Config(app, log_level="critical", timeout_keep_alive=options["timeout_keep_alive"])
    protocol = options["http"](config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(Transport())
    return protocol


def in_a_loop(check: object) -> None:
    # In a thread of its own: the browser tests' Playwright keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, check()).result()  # type: ignore[operator]


def test_a_client_that_reads_nothing_is_dropped_even_once_its_answer_ended() -> None:
    # The answer is whole in the transport's buffer, the client reads none of it: uvicorn's
    # keep-alive timer closes the transport (a close that waits for ever to flush); the send
    # deadline must still drop it.
    async def check() -> None:
        async def app(scope: dict, receive: object, send: object) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
            await send({"type": "http.response.body", "body": b"x" * 100})  # type: ignore[operator]

        protocol = shipped_protocol(app)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        while protocol.timeout_keep_alive_task is None:
            await asyncio.sleep(0.01)  # the answer's task runs and ends
        protocol.pause_writing()  # its last write filled the kernel's buffer: the client reads nothing
        protocol.timeout_keep_alive_task._run()  # the keep-alive deadline passes (5 s shipped)
        assert protocol.transport.closed and not protocol.transport.aborted
        assert (
            protocol.stall is not None and protocol.stall.when() - protocol.loop.time() > 25
        )  # 30 s shipped
        protocol.stall._run()  # the send deadline passes
        assert protocol.transport.aborted

    in_a_loop(check)


def test_the_next_request_of_a_read_is_not_closed_by_the_idle_timer_of_a_hit_before_it() -> None:
    async def check() -> None:
        hold = asyncio.Event()

        async def app(scope: dict, receive: object, send: object) -> None:
            await hold.wait()  # a slow answer, or an event stream

        protocol = shipped_protocol(app)
        # The hit is written while the read is parsed, as FastHits writes one; a slow request follows.
        written: list[bytes] = []
        protocol.hits = type(
            "Hits", (), {"wire": lambda self, scope: (200, b"", b"hit") if scope["path"] == "/hit" else None}
        )()
        protocol.hits.wired = True
        protocol.transport.write = written.append  # type: ignore[method-assign]
        protocol.data_received(b"GET /hit HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert written and written[0].endswith(b"hit")  # the hit went out at once
        assert protocol.timeout_keep_alive_task is None  # nothing will close the connection under /slow
        hold.set()
        for task in list(protocol.tasks):
            task.cancel()

    in_a_loop(check)


@pytest.fixture(scope="module")
def shipped_server() -> Iterator[int]:
    """``python -m app`` with the shipped defaults (only the port set)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MRE_")} | {"MRE_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}/api/health")
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]  # tcpi_state: 1 ESTABLISHED


def test_with_the_shipped_defaults_a_client_that_never_reads_a_large_answer_is_reset(
    shipped_server: int,
) -> None:
    # A checkpoint of 20,000 tensors: its report is ~8.5 MB of JSON, more than the kernel buffers.
    buffer = io.BytesIO()
    torch.save({f"layer{i}.weight": torch.zeros(1) for i in range(20_000)}, buffer)
    settings = Settings()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing, holds little
    sock.connect(("127.0.0.1", shipped_server))
    head = "POST /api/checkpoints HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n"
    head += f"Content-Type: application/octet-stream\r\nContent-Length: {len(buffer.getvalue())}\r\n\r\n"
    sock.sendall(head.encode() + buffer.getvalue())
    start = time.monotonic()
    # the inspection, the keep-alive, the send deadline, and room for a loaded machine
    deadline = start + settings.checkpoint_wall_seconds + settings.send_timeout_seconds + 30
    while tcp_state(sock) == 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert tcp_state(sock) != 1, "the server still holds the connection of a client that reads nothing"
    assert time.monotonic() - start > settings.send_timeout_seconds - 5  # by the send deadline, not before
    sock.close()


def test_with_the_shipped_defaults_an_event_stream_behind_a_hit_stays_open(shipped_server: int) -> None:
    base = f"http://127.0.0.1:{shipped_server}"
    urllib.request.urlopen(base + "/api/presets").read()  # stored: the next one is a hit
    request = urllib.request.Request(base + "/rooms", data=b"state=%2F", method="POST")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(request)
    except urllib.error.HTTPError as redirect:
        code = redirect.headers["location"].split("/")[2]
        cookie = redirect.headers["set-cookie"].split(";")[0]  # the teacher's: their console listens
    sock = socket.create_connection(("127.0.0.1", shipped_server), timeout=30)
    sock.sendall(
        b"GET /api/presets HTTP/1.1\r\nHost: x\r\n\r\n"
        + f"GET /rooms/{code}/events HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode()
    )
    seen = b""
    while b"event: state" not in seen:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the stream's first event: {seen[-300:]!r}"
        seen += chunk
    waited = Settings().keep_alive_seconds + 2
    sock.settimeout(waited)
    quiet_until = time.monotonic() + waited
    while time.monotonic() < quiet_until:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        assert chunk, "the event stream was closed under the client"  # heartbeats may come
    sock.close()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object) -> None:
        return None
