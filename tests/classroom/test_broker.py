"""Every rule of a class, held by both brokers alike (in this process, and in a real redis-server):
rooms and their versions, joins, votes and their caps at the boundary, expiry, failed joins."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.classroom.broker import Broker
from app.classroom.rooms import Full, NoSuchRoom, Refused, TooManyFailures, digest
from tests.support.brokers import BROKERS, Brokers


@pytest.fixture(params=BROKERS)
def brokers(request: pytest.FixtureRequest) -> Brokers:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return Brokers(request.param, url)


def test_a_room_is_made_read_and_changed_in_versions(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        room = await b.create("token", "/?preset=testmodel", "10.0.0.1")
        assert (room.token_digest, room.version) == (digest("token"), 1)
        changed = await b.set_state(room.code, "/lessons/x?step=2")
        assert (changed.state, changed.version) == ("/lessons/x?step=2", 2)
        assert (await b.room(room.code)).version == 2
        with pytest.raises(NoSuchRoom):
            await b.room("ZZZZZZZZ")

    brokers.run(scenario)


def test_a_student_counts_once_and_the_room_fills_at_its_cap(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/", "c")).code
        assert (await b.join(code, "s1")).students == 1
        assert (await b.join(code, "s1")).students == 1  # the same student again
        assert (await b.join(code, "s2")).students == 2  # the cap: accepted
        with pytest.raises(Refused, match="MRE_CLASS_MAX_STUDENTS"):
            await b.join(code, "s3")  # one more: refused

    brokers.run(scenario, students=2)


def test_rooms_at_their_cap_and_per_address(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        await b.create("t", "/", "a")
        await b.create("t", "/", "a")  # the per-address cap: accepted
        with pytest.raises(Refused, match="MRE_CLASS_MAX_ROOMS_PER_CLIENT"):
            await b.create("t", "/", "a")
        await b.create("t", "/", "b")  # the server's cap: accepted
        with pytest.raises(Full, match="MRE_CLASS_MAX_ROOMS"):
            await b.create("t", "/", "c")

    brokers.run(scenario, rooms=3, rooms_per_client=2)


def test_a_changed_vote_does_not_count_again_toward_the_cap(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/", "c")).code
        for student in ("s1", "s2", "s3"):
            await b.join(code, student)
        await b.vote(code, "l:1", "s1", 0)
        await b.vote(code, "l:1", "s1", 1)  # a change, not a second vote
        tally = await b.vote(code, "l:1", "s2", 1)  # the cap: accepted
        assert (tally.total, tally.of(2)) == (2, [0, 2])
        assert await b.vote_of(code, "l:1", "s1") == 1
        with pytest.raises(Refused, match="MRE_CLASS_MAX_VOTES"):
            await b.vote(code, "l:1", "s3", 0)
        with pytest.raises(Refused, match="join the class"):
            await b.vote(code, "l:1", "stranger", 0)

    brokers.run(scenario, votes=2)


def test_a_room_kept_changing_stays_alive_and_one_left_alone_ends(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/", "c")).code
        start = time.monotonic()
        for _ in range(3):  # a teacher driving it for longer than its expiry
            await asyncio.sleep(1.0)
            await b.set_state(code, "/?preset=mymodule")
        assert time.monotonic() - start > 2.0 and (await b.room(code)).version == 4
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # then nobody touches it: it ends
            try:
                await b.room(code)
            except NoSuchRoom:
                return
            await asyncio.sleep(0.2)
        raise AssertionError("the room left alone did not end")

    brokers.run(scenario, expiry_seconds=2.0)


def test_failed_joins_lock_out_for_a_window_that_further_failures_do_not_move(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        first = time.monotonic()
        for _ in range(3):
            await b.check_failures("x")
            await b.failed("x")
        with pytest.raises(TooManyFailures):  # the third failure was the limit
            await b.check_failures("x")
        await b.check_failures("another address")  # only this address is locked out
        await asyncio.sleep(1.5)
        await b.failed("x")  # one more failure, half-way through the window
        await asyncio.sleep(max(0.0, first + 3.6 - time.monotonic()))
        await b.check_failures("x")  # the window from the first failures is over: no 429

    brokers.run(scenario, failed_joins=3, failure_window_seconds=3.0)
