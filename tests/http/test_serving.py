"""Connections against a real server, started the way `make run` starts it (`python -m app`, MRE_
settings): silent, half-sent and stalled connections are closed on time, and do not starve others."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import uvicorn
from uvicorn.server import ServerState

from app.http.serving import DeadlineProtocol, uvicorn_options
from app.settings import Settings
from tests.support.browser import ROOT, free_port, wait_healthy
from tests.support.serving import Transport

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
