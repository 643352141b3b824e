"""Class servers for the tests and the bench: ``python -m app`` (one or more workers), a real
redis-server, and a teacher driving a room over plain HTTP. Ports come from the caller."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from tests.support.browser import ROOT, free_port, wait_healthy

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
# The class tests' two processes and their Redis (loopback ports of this project's tests).
# Free loopback ports, chosen once per test process: another suite on the machine cannot collide.
REDIS, TEACHER, STUDENTS = free_port(), free_port(), free_port()
# Connection deadlines far below a stream's life: a stream must outlive them all. The join link
# points at the students' process, so a browser that follows it is served by the other one.
CLASS_ENV = {
    "MRE_KEEP_ALIVE_SECONDS": "1",
    "MRE_HEAD_TIMEOUT_SECONDS": "1",
    "MRE_BODY_TIMEOUT_SECONDS": "1",
    "MRE_CLASS_HEARTBEAT_SECONDS": "0.3",
    "MRE_CLASS_STREAM_SECONDS": "5",
    "MRE_CLASS_MAX_STREAMS_PER_CLIENT": "4",
    "MRE_CLASS_MAX_ROOMS_PER_CLIENT": "50",  # every test starts its own room from loopback
    "MRE_CLASS_URL": f"http://127.0.0.1:{STUDENTS}",
}


@contextmanager
def class_servers() -> Iterator[tuple[RedisProcess, list[subprocess.Popen]]]:
    """A real redis-server and two app processes sharing it: the teacher's and the students'."""
    with (
        redis_server(REDIS) as redis,
        app_servers([TEACHER, STUDENTS], {**CLASS_ENV, "MRE_REDIS_URL": redis.url}) as procs,
    ):
        yield redis, procs


@contextmanager
def app_server(port: int, env: dict[str, str] | None = None, workers: int = 1) -> Iterator[subprocess.Popen]:
    """The app on 127.0.0.1:port; at exit it must stop within its shutdown grace, streams open or not."""
    with app_servers([port], env, workers) as (proc,):
        yield proc


@contextmanager
def app_servers(
    ports: list[int], env: dict[str, str] | None = None, workers: int = 1
) -> Iterator[list[subprocess.Popen]]:
    """One server per port, started side by side (each is seconds of torch import)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MRE_")}
    settings = {"MRE_HOST": "127.0.0.1", "MRE_WORKERS": str(workers)}
    settings |= {"MRE_CHECKPOINTS": "false", "MRE_SHUTDOWN_GRACE_SECONDS": "2"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=ROOT,
            env={**clean, **settings, "MRE_PORT": str(port), **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for proc, port in zip(procs, ports, strict=True):
            wait_healthy(proc, f"http://127.0.0.1:{port}/api/health")
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)


@contextmanager
def redis_server(port: int) -> Iterator[RedisProcess]:
    """A real redis-server on loopback, in a temporary directory; stopped and started again at will."""
    server = RedisProcess(port)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


class RedisProcess:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.dir = tempfile.mkdtemp(prefix="mre-redis-")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # Kept on disk (append-only, every write), so a class survives the server's restart.
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen([*args, "--dir", self.dir], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.ping():
            assert self.proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def ping(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Teacher:
    """A teacher's browser reduced to its requests: starts a room, keeps the token, sets states."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""
        self.code = ""

    def request(
        self, method: str, path: str, form: dict | None = None, cookie: str = ""
    ) -> tuple[int, dict, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        body = urlencode(form).encode() if form is not None else None
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        if cookie or self.cookie:
            headers["Cookie"] = cookie or self.cookie
        conn.request(method, path, body, headers)
        answer = conn.getresponse()
        text = answer.read().decode()
        conn.close()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, text

    def start(self, state: str) -> str:
        status, headers, _ = self.request("POST", "/rooms", {"state": state})
        assert status == 303, status
        self.code = headers["location"].split("/")[2]
        morsel = SimpleCookie(headers["set-cookie"])["mre_teacher"]
        self.cookie = f"mre_teacher={morsel.value}"
        return self.code

    def show(self, state: str) -> int:
        status, _, _ = self.request("POST", f"/rooms/{self.code}/state", {"state": state})
        return status

    def join(self) -> str:
        """A student's join (the one click): the cookie their browser would keep."""
        status, headers, _ = self.request("POST", f"/rooms/{self.code}/join", cookie="none=1")
        assert status == 303, status
        return f"mre_student={SimpleCookie(headers['set-cookie'])['mre_student'].value}"
