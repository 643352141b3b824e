"""One class over two server processes (`python -m app`, their connection deadlines included)
sharing a real Redis: the teacher is served by one, the students by the other. Follow, votes and
tally cross between them; a stream gets the whole state on every (re)connect and outlives every
connection deadline; its caps; Redis stopped mid-class gives class features a 503 while the lab
keeps working, and everything resumes when it is back; shutdown does not wait for open streams."""

from __future__ import annotations

import asyncio
import http.client
import time

import pytest

from bench.sse import open_stream
from tests.support.aio import run
from tests.support.browser import free_port
from tests.support.class_servers import CLASS_ENV, STUDENTS, TEACHER, Teacher, app_server
from tests.support.html import parse as parse_html

pytestmark = pytest.mark.servers  # starts server processes (left out of mutation runs)

SHUTDOWN = free_port()
LESSON = "/lessons/parameters-and-buffers"
STEP = "parameters-and-buffers:1"


def get(port: int, path: str, cookie: str = "") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
    answer = conn.getresponse()
    return answer.status, answer.read().decode()


def counts(html: str) -> list[int]:
    return [int(c.text) for c in parse_html(html).find_all("span", class_="count")]


def room(lesson_step: str = "?step=1") -> tuple[Teacher, Teacher, str]:
    teacher, students = Teacher(TEACHER), Teacher(STUDENTS)  # the other process, same room
    students.code = teacher.start(LESSON + lesson_step)
    return teacher, students, students.code


def test_follow_and_vote_across_processes(class_servers) -> None:
    run(follow_and_vote(*room()))


def test_streams_outlive_deadlines_and_reconnect_whole(class_servers) -> None:
    run(streams(*room()))


def test_redis_stopped_mid_class(class_servers) -> None:
    redis, _ = class_servers
    teacher, students, code = room()
    run(outage(redis, teacher, students, code))


def test_shutdown_does_not_wait_for_open_streams() -> None:
    """Event streams never end by themselves: shutdown gives them its grace (2 s here), then closes."""
    with app_server(SHUTDOWN, CLASS_ENV) as server:
        teacher = Teacher(SHUTDOWN)
        code = teacher.start(LESSON + "?step=1")

        async def hold() -> None:
            stream = await open_stream("127.0.0.1", SHUTDOWN, f"/rooms/{code}/events", teacher.cookie)
            assert (await stream.next()).data["state"] == LESSON + "?step=1"
            started = time.monotonic()
            server.terminate()
            while (await stream.next(timeout=10)) is not None:
                pass
            assert time.monotonic() - started < 30  # its 2 s grace, not for ever

        run(hold())


async def streams(teacher: Teacher, students: Teacher, code: str) -> None:
    events = f"/rooms/{code}/events"
    cookie = await asyncio.to_thread(students.join)
    stranger = await open_stream("127.0.0.1", STUDENTS, events)
    assert stranger.status == 403  # a page that never joined gets no stream
    stranger.close()
    student = await open_stream("127.0.0.1", STUDENTS, events, cookie)
    opened = time.monotonic()
    assert student.status == 200 and student.headers["content-type"].startswith("text/event-stream")
    assert student.headers["cache-control"] == "no-store"
    first = await student.next()
    assert (first.kind, first.data, first.id) == ("state", {"version": 1, "state": LESSON + "?step=1"}, "1")

    # Idle for longer than every connection deadline: still open, kept alive by comments.
    await asyncio.sleep(2.2)
    await asyncio.to_thread(teacher.show, LESSON + "?step=2")
    late = await student.next()
    assert late.data == {"version": 2, "state": LESSON + "?step=2"} and student.comments >= 4

    # Reconnecting after missing a change: the whole current state comes first.
    await asyncio.to_thread(teacher.show, LESSON + "?step=3")
    again = await open_stream("127.0.0.1", STUDENTS, events, cookie)
    assert (await again.next()).data == {"version": 3, "state": LESSON + "?step=3"}

    # Four streams from one address is this process's cap: a fifth is refused before it starts.
    more = [await open_stream("127.0.0.1", STUDENTS, events, cookie) for _ in range(2)]
    assert [s.status for s in more] == [200, 200]
    refused = await open_stream("127.0.0.1", STUDENTS, events, cookie)
    assert refused.status == 409
    refused.close()
    missing = await open_stream("127.0.0.1", STUDENTS, "/rooms/ZZZZZZZZ/events", cookie)
    assert missing.status == 404
    missing.close()

    # No stream lives for ever: closed after class_stream_seconds, and the browser reconnects.
    while (await student.next(timeout=8)) is not None:
        pass
    assert 4.5 < time.monotonic() - opened < 7.5
    for s in (again, *more):
        s.close()


async def follow_and_vote(teacher: Teacher, students: Teacher, code: str) -> None:
    events = f"/rooms/{code}/events"
    console = await open_stream("127.0.0.1", TEACHER, events, teacher.cookie)  # hears joins and votes
    await console.next()
    cookies = [await asyncio.to_thread(students.join) for _ in range(3)]
    streams = [await open_stream("127.0.0.1", STUDENTS, events, cookie) for cookie in cookies]
    assert [(await s.next()).data["version"] for s in streams] == [1, 1, 1]
    assert await asyncio.to_thread(teacher.show, LESSON + "?step=1&lang=en") == 303  # same step, v2
    await asyncio.to_thread(teacher.show, LESSON + "?step=1")
    for s in streams:
        assert (await s.next()).data == {"version": 2, "state": LESSON + "?step=1"}
        assert (await s.next()).data["version"] == 3

    for cookie, choice in zip(cookies, (0, 1, 1), strict=True):
        form = {"step": STEP, "choice": choice}
        status, _, _ = await asyncio.to_thread(students.request, "POST", f"/rooms/{code}/vote", form, cookie)
        assert status == 303
    heard: dict[str, dict] = {}  # the latest of each kind: a stream sends only the latest
    while heard.get("tally", {}).get("votes") != 3:
        event = await console.next()
        heard[event.kind] = event.data
    assert heard["tally"]["counts"] == [1, 2] and heard["state"]["version"] == 3
    assert (heard["students"]["students"], heard["students"]["live"]) == (3, 3)  # joined, pages open
    status, page = await asyncio.to_thread(get, TEACHER, f"/rooms/{code}/teach", teacher.cookie)
    assert status == 200 and counts(page) == [1, 2]
    console_page = parse_html(page)
    assert (console_page.find(class_="n-joined").text, console_page.find(class_="n-live").text) == ("3", "3")
    console.close()

    await asyncio.to_thread(teacher.show, LESSON + "?step=1&reveal=1")
    _, shown = await asyncio.to_thread(get, STUDENTS, f"/rooms/{code}", cookies[0])
    right = [li for li in parse_html(shown).find_all("li") if "right" in li.attrs.get("class", "")]
    assert [li.attrs["data-choice"] for li in right] == ["0"]  # cpu: the plain tensor stays
    form = {"step": STEP, "choice": 0}
    status, _, _ = await asyncio.to_thread(students.request, "POST", f"/rooms/{code}/vote", form, cookies[1])
    assert status == 409  # closed once revealed, in every process
    for s in streams[:2]:
        s.close()
    # Two pages closed: the console is told one left at a time, down to one here now.
    # A console that (re)connects hears the counts at once, after the state: nothing of its gap is lost.
    console = await open_stream("127.0.0.1", TEACHER, events, teacher.cookie)
    assert (await console.next()).kind == "state"
    counted = await console.next()
    assert counted.kind == "students" and counted.data["students"] == 3 and counted.data["live"] in (1, 2, 3)
    gap = await console.next()  # and the votes of the step it shows (none were lost in its gap)
    assert (gap.kind, gap.data["step"], gap.data["votes"], gap.data["counts"]) == ("tally", STEP, 3, [1, 2])
    live = counted.data["live"]
    while live != 1:
        event = await console.next()
        live = event.data["live"] if event.kind == "students" else live
    streams[2].close()
    console.close()


async def outage(redis, teacher: Teacher, students: Teacher, code: str) -> None:
    events = f"/rooms/{code}/events"
    cookie = await asyncio.to_thread(students.join)
    stream = await open_stream("127.0.0.1", STUDENTS, events, cookie)
    version = (await stream.next()).data["version"]
    # A student on the teacher's process too: after Redis comes back, both processes hear changes.
    near = await open_stream("127.0.0.1", TEACHER, events, cookie)
    await near.next()
    redis.stop()
    assert await asyncio.to_thread(teacher.show, LESSON + "?step=2") == 503
    status, page = await asyncio.to_thread(get, STUDENTS, f"/rooms/{code}", cookie)
    assert status == 503 and "the class store (Redis) is unreachable" in page
    refused = await open_stream("127.0.0.1", STUDENTS, events, cookie)
    assert refused.status == 503
    refused.close()
    for port in (TEACHER, STUDENTS):  # the lab and the API do not need Redis
        assert (await asyncio.to_thread(get, port, "/?preset=testmodel&device=meta"))[0] == 200
        assert (await asyncio.to_thread(get, port, "/api/lab?preset=mymodule"))[0] == 200
        assert (await asyncio.to_thread(get, port, LESSON + "?step=2"))[0] == 200

    redis.start()
    statuses = []
    for _ in range(50):  # redis-py reconnects on the next command
        statuses.append(await asyncio.to_thread(teacher.show, LESSON + "?step=2"))
        if statuses[-1] == 303:
            break
        await asyncio.sleep(0.1)
    assert statuses[-1] == 303, statuses
    # The streams held open through the outage get the change: each process listens again,
    # the one that was not serving the teacher included.
    for held in (stream, near):
        change = await held.next(timeout=10)
        while change.kind != "state" or change.data["state"] != LESSON + "?step=2":
            change = await held.next(timeout=10)
        assert change.data["version"] > version
    # And the next change, made after the restart, reaches both without a reload.
    assert await asyncio.to_thread(teacher.show, LESSON + "?step=3") == 303
    for held in (stream, near):
        change = await held.next(timeout=10)
        while change.kind != "state" or change.data["state"] != LESSON + "?step=3":
            change = await held.next(timeout=10)
    again = await open_stream("127.0.0.1", STUDENTS, events, cookie)
    assert again.status == 200 and (await again.next()).data["state"] == LESSON + "?step=3"
    for s in (stream, near, again):
        s.close()
