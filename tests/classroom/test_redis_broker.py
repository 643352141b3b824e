"""What only the Redis broker does: a class store that is away answers 503 (the lab goes on), and
every process's listener carries a change made on another to its own streams."""

from __future__ import annotations

import asyncio

import pytest

from app.classroom.broker import Limits
from app.classroom.redis_broker import RedisBroker
from app.classroom.rooms import Unavailable
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
