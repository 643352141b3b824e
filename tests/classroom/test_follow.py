"""Students follow the teacher over Server-Sent Events, against the real server (`python -m app`,
its connection deadlines included): the whole state on every (re)connect, every change live, the
stream kept past the keep-alive and head deadlines, and its caps."""

from __future__ import annotations

import asyncio
import time

from bench.sse import open_stream
from tests.classroom.servers import Teacher, app_server

PORT = 18110
LESSON = "/lessons/parameters-and-buffers"
# Deadlines far below a stream's life: a stream must outlive them all.
ENV = {
    "MRE_KEEP_ALIVE_SECONDS": "1",
    "MRE_HEAD_TIMEOUT_SECONDS": "1",
    "MRE_BODY_TIMEOUT_SECONDS": "1",
    "MRE_CLASS_HEARTBEAT_SECONDS": "0.3",
    "MRE_CLASS_STREAM_SECONDS": "4",
    "MRE_CLASS_MAX_STREAMS_PER_CLIENT": "3",
}


def test_students_follow_every_change() -> None:
    with app_server(PORT, ENV) as server:
        follow_a_class(Teacher(PORT))
        shutdown_with_a_stream_open(Teacher(PORT), server)


def follow_a_class(teacher: Teacher) -> None:
    code = teacher.start(LESSON + "?step=1")

    async def scenario() -> None:
        events = f"/rooms/{code}/events"
        student = await open_stream("127.0.0.1", PORT, events)
        assert student.status == 200 and student.headers["content-type"].startswith("text/event-stream")
        assert student.headers["cache-control"] == "no-store"
        first = await student.next()
        assert (first.kind, first.data, first.id) == (
            "state",
            {"version": 1, "state": LESSON + "?step=1"},
            "1",
        )

        await asyncio.to_thread(teacher.show, LESSON + "?step=2")
        change = await student.next()
        assert change.data == {"version": 2, "state": LESSON + "?step=2"}

        # Idle for longer than every connection deadline: still open, kept alive by comments.
        await asyncio.sleep(2.2)
        await asyncio.to_thread(teacher.show, LESSON + "?step=2&reveal=1")
        late = await student.next()
        assert late.data["state"] == LESSON + "?step=2&reveal=1" and student.comments >= 4

        # Reconnecting after missing a change: the whole current state comes first.
        student.close()
        await asyncio.to_thread(teacher.show, LESSON + "?step=3")
        again = await open_stream("127.0.0.1", PORT, events)
        assert (await again.next()).data == {"version": 4, "state": LESSON + "?step=3"}

        # The teacher's console hears votes and joins; the student stream gets them too (and ignores them).
        console = await open_stream("127.0.0.1", PORT, events)
        await console.next()
        cookie = await asyncio.to_thread(teacher.join)
        joined = await console.next()
        assert joined.kind == "students" and joined.data["students"] == 1
        status, _, _ = await asyncio.to_thread(
            teacher.request,
            "POST",
            f"/rooms/{code}/vote",
            {"step": "parameters-and-buffers:3", "choice": 1},
            cookie,
        )
        assert status == 303
        tally = await console.next()
        assert (tally.kind, tally.data["votes"], tally.data["step"]) == (
            "tally",
            1,
            "parameters-and-buffers:3",
        )

        # Three streams from one address is the cap here: a fourth is refused before it starts.
        third = await open_stream("127.0.0.1", PORT, events)
        assert third.status == 200
        refused = await open_stream("127.0.0.1", PORT, events)
        assert refused.status == 409
        refused.close()

        # No stream lives for ever: closed after class_stream_seconds, the browser reconnects.
        started = time.monotonic()
        while (await again.next(timeout=6)) is not None:
            pass
        assert time.monotonic() - started < 5
        console.close()
        third.close()

        missing = await open_stream("127.0.0.1", PORT, "/rooms/ZZZZZZZZ/events")
        assert missing.status == 404
        missing.close()

    asyncio.run(scenario())


def shutdown_with_a_stream_open(teacher: Teacher, server) -> None:
    """Event streams never end by themselves: shutdown gives them its grace (2 s here), then closes."""
    code = teacher.start("/?preset=testmodel&device=meta")

    async def hold() -> None:
        stream = await open_stream("127.0.0.1", PORT, f"/rooms/{code}/events")
        assert (await stream.next()).data["state"].startswith("/?preset=testmodel&device=meta&style.")
        started = time.monotonic()
        server.terminate()
        while (await stream.next(timeout=10)) is not None:
            pass
        assert time.monotonic() - started < 5

    asyncio.run(hold())
