"""A class arriving together: 150 students scan the QR code in the same instant, each joins (one
POST) and opens its event stream, all from one address (a classroom behind one NAT address). On one
process and on two processes sharing a real Redis: no join and no stream is refused, and each
student hears the next change. (The bench does 300; this is the same at a size CI bears.)"""

from __future__ import annotations

import asyncio
from http.cookies import SimpleCookie

import pytest

from bench.classroom import request
from bench.sse import Stream, open_stream
from tests.support.aio import run
from tests.support.browser import free_port
from tests.support.class_servers import Teacher, app_servers

pytestmark = pytest.mark.servers

COUNT = 150
ALONE, FIRST, SECOND = free_port(), free_port(), free_port()
LESSON = "/lessons/parameters-and-buffers"
ENV = {"MRE_CLASS_MAX_ROOMS_PER_CLIENT": "50"}  # the shipped caps otherwise


async def arrive(port: int, code: str) -> tuple[int, Stream | None]:
    status, headers, _ = await request(port, "POST", f"/rooms/{code}/join")
    if status != 303:
        return status, None
    cookie = f"mre_student={SimpleCookie(headers['set-cookie'])['mre_student'].value}"
    stream = await open_stream("127.0.0.1", port, f"/rooms/{code}/events", cookie)
    return stream.status, stream


async def a_class(teacher: Teacher, ports: list[int]) -> None:
    code = teacher.code
    arrived = await asyncio.gather(*(arrive(ports[i % len(ports)], code) for i in range(COUNT)))
    assert [status for status, _ in arrived] == [200] * COUNT
    streams = [stream for _, stream in arrived if stream is not None]
    firsts = await asyncio.gather(*(s.next(timeout=60) for s in streams))
    assert {(e.kind, e.data["version"]) for e in firsts if e is not None} == {("state", 1)}
    assert await asyncio.to_thread(teacher.show, LESSON + "?step=2") == 303

    async def change(stream: Stream) -> dict:
        while (event := await stream.next(timeout=60)) is not None:
            if event.kind == "state":
                return event.data
        return {}

    heard = await asyncio.gather(*(change(s) for s in streams))
    assert heard == [{"version": 2, "state": LESSON + "?step=2"}] * COUNT
    for s in streams:
        s.close()


def test_a_class_arrives_at_once_on_one_process() -> None:
    with app_servers([ALONE], ENV):
        teacher = Teacher(ALONE)
        teacher.start(LESSON + "?step=1")
        run(a_class(teacher, [ALONE]))


def test_a_class_arrives_at_once_over_redis_on_two_processes(redis_url: str) -> None:
    with app_servers([FIRST, SECOND], {**ENV, "MRE_REDIS_URL": redis_url}):
        teacher = Teacher(FIRST)
        teacher.start(LESSON + "?step=1")
        run(a_class(teacher, [FIRST, SECOND]))
