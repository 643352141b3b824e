"""What only the Redis broker does: a class store that is away answers 503 (the lab goes on), every
process's listener carries a change made on another to its own streams and, after losing Redis,
what its streams missed; every key of a class expires with it and none outlives its end."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import pytest

from app.classroom import redis_broker
from app.classroom.broker import Limits
from app.classroom.redis_broker import RedisBroker
from app.classroom.rooms import Event, Unavailable
from app.langs import ZH
from tests.support.aio import run
from tests.support.browser import free_port


def test_a_store_that_is_away_is_a_503_said_in_every_language() -> None:
    async def scenario() -> None:
        broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", Limits())
        try:
            with pytest.raises(Unavailable) as refused:
                await broker.room("ABCDEFGH")
        finally:
            await broker.close()
        assert refused.value.status == 503 and "Redis" in refused.value.message
        assert "(ConnectionError)" in refused.value.message  # what went wrong, by its name
        assert refused.value.text(ZH) != refused.value.message

    run(scenario())


def test_a_change_made_by_one_process_reaches_the_streams_of_another(redis_url: str) -> None:
    async def scenario() -> None:
        teacher, students = RedisBroker(redis_url, Limits()), RedisBroker(redis_url, Limits())
        try:
            code = (await teacher.create("t", "/", "c")).code
            await students.start()
            async with students.hub.stream(code, "student") as subscriber:
                await asyncio.sleep(0.3)  # the listener's subscription is in place
                await teacher.set_state(code, "/?preset=mymodule")
                got = []
                while not got:
                    got = [e for e in await subscriber.next(10.0) if e.kind == "state"]
                assert (got[0].state, got[0].version) == ("/?preset=mymodule", 2)
        finally:
            await teacher.close()
            await students.close()

    run(scenario())


def test_every_key_of_a_class_expires_with_it_and_none_is_left_after_its_end(redis_url: str) -> None:
    async def scenario(b: RedisBroker) -> None:
        code = (await b.create("t", "/", "10.0.0.1")).code
        await b.set_state(code, "/lessons/x?step=1&reveal=1", revealed="x:1")
        await b.join(code, "s1", "10.0.0.2")
        await b.vote(code, "x:1", "s1", 0)
        await b.opened(code, "page")
        await b.failed("10.0.0.3")
        keys = {k: await b.redis.ttl(k) for k in await b.redis.keys("mre:*")}
        assert len(keys) == 11  # the room's own eight, a step's votes, its address's rooms, a failure
        assert {k for k, ttl in keys.items() if not 0 < ttl <= 60} == {"mre:rooms"}  # one for all rooms
        await b.end(code)
        assert sorted(await b.redis.keys("mre:*")) == ["mre:fail:10.0.0.3"]  # and no room in mre:rooms

    with_broker(redis_url, scenario, expiry_seconds=60.0)


def test_a_page_whose_process_died_stops_counting(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_broker, "LIVE_SECONDS", 0.5)  # a page's process renews it: this one never

    async def scenario(b: RedisBroker) -> None:
        code = (await b.create("t", "/", "a")).code
        await b.opened(code, "gone")
        assert (await b.room(code)).live == 1
        deadline = time.monotonic() + 30
        while (await b.room(code)).live:
            assert time.monotonic() < deadline, "a page nobody renews still counts"
            await asyncio.sleep(0.05)
        assert await b.redis.zcard(f"mre:live:{code}") == 0  # pruned, not only left out

    with_broker(redis_url, scenario)


def test_a_listener_that_lost_redis_tells_each_stream_what_it_missed(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Changes made while a process's subscription was down never reach it by pub/sub: once it
    subscribes again, each open stream is sent its room's current state, or that it is gone."""

    async def scenario(b: RedisBroker) -> None:
        await b.start()
        kept, lost = (await b.create("t", "/", "a")).code, (await b.create("t", "/", "a")).code
        async with b.hub.stream(lost, "s") as two, b.hub.stream(kept, "s") as one:  # the lost one first
            while not await b.redis.pubsub_numpat():
                await asyncio.sleep(0.01)
            # as another process would while this one is away: stored, not heard (no publish)
            await b.redis.hset(f"mre:room:{kept}", mapping={"state": "/?preset=mymodule", "version": 7})
            await b.redis.delete(f"mre:room:{lost}")  # expired, or Redis restarted empty
            with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
                await b.redis.client_kill_filter(_type="pubsub")
                state, ended = await heard(one, "state"), await heard(two, "ended")
        assert (state.code, state.version, state.state) == (kept, 7, "/?preset=mymodule")
        assert ended.code == lost
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("class events: ")]
        assert said and said[0].startswith("class events: ConnectionError: Connection closed")  # named
        assert said[0].endswith("; subscribing again in 0.2 s")  # and the first wait, the shortest

    with_broker(redis_url, scenario)


def test_a_process_renews_its_open_pages_by_itself(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_broker, "LIVE_SECONDS", 3.0)  # a page not renewed this long stops counting
    monkeypatch.setattr(redis_broker, "KEEP_SECONDS", 0.1)  # and this process renews its own this often

    async def scenario(b: RedisBroker) -> None:
        await b.start()
        code = (await b.create("t", "/", "a")).code
        async with b.hub.stream(code, "a") as page:
            await b.opened(code, page.key)
            start = time.monotonic()
            while time.monotonic() - start < 1.5 * redis_broker.LIVE_SECONDS:  # nobody calls keep()
                assert (await b.room(code)).live == 1
                await asyncio.sleep(0.1)

    with_broker(redis_url, scenario)


def test_an_addresss_rooms_are_counted_among_those_still_open(redis_url: str) -> None:
    async def scenario(b: RedisBroker) -> None:
        gone = (await b.create("t", "/", "a")).code
        await b.redis.delete(f"mre:room:{gone}")  # expired
        kept = (await b.create("t", "/", "a")).code
        await b.create("t", "/", "a")  # the cap of two: the expired one no longer counts
        assert kept in await b.redis.smembers("mre:client:a")
        assert gone not in await b.redis.smembers("mre:client:a")  # and is forgotten

    with_broker(redis_url, scenario, rooms_per_client=2)


async def heard(subscriber, kind: str) -> Event:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for event in await subscriber.next(0.1):
            if event.kind == kind:
                return event
    raise AssertionError(f"no {kind} event")


def with_broker(redis_url: str, scenario, **limits: float) -> None:
    """``scenario`` on a RedisBroker of an emptied store, made in the loop that runs it."""

    async def main() -> None:
        broker = RedisBroker(redis_url, replace(Limits(), **limits))
        await broker.redis.flushall()
        try:
            await scenario(broker)
        finally:
            await broker.close()

    run(main())
