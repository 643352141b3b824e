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
        assert (await b.join(code, "s1", "a")).students == 1
        assert (await b.join(code, "s1", "a")).students == 1  # the same student again
        assert (await b.join(code, "s2", "b")).students == 2  # the cap: accepted
        with pytest.raises(Refused, match="MRE_CLASS_MAX_STUDENTS"):
            await b.join(code, "s3", "c")  # one more: refused

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
            await b.join(code, student, "a")
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


def test_joins_from_one_address_stop_at_its_cap_and_others_still_join(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/", "teacher")).code
        other = (await b.create("t", "/", "teacher")).code
        for n in range(3):  # the per-address cap: accepted
            await b.join(code, f"nat{n}", "10.0.0.9")
        assert (await b.join(code, "nat0", "10.0.0.9")).students == 3  # a student again is no join
        with pytest.raises(Refused, match="MRE_CLASS_MAX_JOINS_PER_CLIENT"):
            await b.join(code, "nat3", "10.0.0.9")
        assert (await b.join(code, "own", "10.0.0.10")).students == 4  # another address
        assert (await b.join(other, "nat3", "10.0.0.9")).students == 1  # per room

    brokers.run(scenario, joins_per_client=3)


def test_ending_a_class_frees_its_slot_tells_its_streams_and_forgets_it(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        await b.start()
        first = (await b.create("t", "/", "a")).code
        await b.create("t", "/", "a")
        with pytest.raises(Refused, match="MRE_CLASS_MAX_ROOMS_PER_CLIENT"):
            await b.create("t", "/", "a")
        async with b.hub.stream(first, "a", student=True) as subscriber:
            await settle()
            await b.end(first)
            kinds = await until(subscriber, "ended")
        assert "ended" in kinds
        with pytest.raises(NoSuchRoom):
            await b.room(first)
        with pytest.raises(NoSuchRoom):
            await b.join(first, "s", "x")
        await b.create("t", "/", "a")  # the ended class no longer counts for its teacher's address

    brokers.run(scenario, rooms_per_client=2)


async def settle() -> None:
    """Long enough for a Redis subscription made at start to be listening."""
    await asyncio.sleep(0.3)


async def until(subscriber, kind: str, timeout: float = 5.0) -> list[str]:
    """The kinds a subscriber was told, until one is ``kind``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while kind not in seen and time.monotonic() < deadline:
        seen += [e.kind for e in await subscriber.next(0.2)]
    return seen


def test_a_revealed_step_is_remembered_and_a_change_keeps_it(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/lessons/x?step=1", "a")).code
        room = await b.set_state(code, "/lessons/x?step=1&reveal=1", revealed="x:1")
        assert room.revealed == frozenset({"x:1"})
        room = await b.set_state(code, "/lessons/x?step=2")
        assert room.revealed == frozenset({"x:1"}) and (await b.room(code)).revealed == {"x:1"}

    brokers.run(scenario)


def test_students_here_now_go_up_and_down_and_a_student_page_hears_no_votes(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        await b.start()
        code = (await b.create("t", "/", "a")).code
        for student in ("s1", "s2"):
            await b.join(code, student, "a")
        async with b.hub.stream(code, "a", student=False) as console, b.hub.stream(code, "a") as page:
            await settle()
            await b.opened(code, "k1")
            await b.opened(code, "k2")
            assert (await b.room(code)).live == 2
            await b.closed(code, "k1")
            assert ((await b.room(code)).live, (await b.room(code)).students) == (1, 2)
            await b.vote(code, "l:1", "s1", 2)
            await until(console, "tally")
            told = console.latest.get("tally") or None
            heard = await page.next(0.5)
        assert all(e.kind not in ("tally", "students") for e in heard)
        assert told is None or told.counts == (0, 0, 1)

    brokers.run(scenario)


def test_a_tally_event_carries_its_counts_by_choice(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        await b.start()
        code = (await b.create("t", "/", "a")).code
        for student in ("s1", "s2", "s3"):
            await b.join(code, student, "a")
        async with b.hub.stream(code, "a", student=False) as console:
            await settle()
            await b.vote(code, "l:1", "s1", 2)
            await b.vote(code, "l:1", "s2", 0)
            tally = None
            deadline = time.monotonic() + 5
            while (tally is None or tally.votes < 2) and time.monotonic() < deadline:
                for event in await console.next(0.2):
                    tally = event if event.kind == "tally" else tally
        assert tally is not None and (tally.step, tally.votes, tally.counts) == ("l:1", 2, (1, 0, 1))

    brokers.run(scenario)


def test_a_page_open_keeps_its_class_alive_past_its_expiry(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/", "a")).code
        async with b.hub.stream(code, "a") as page:
            await b.opened(code, page.key)
            for _ in range(4):  # longer than the expiry, nothing changed, only the page open
                await asyncio.sleep(0.8)
                await b.keep(b.hub.students())
            assert (await b.room(code)).code == code
        with pytest.raises(NoSuchRoom):
            for _ in range(40):
                await asyncio.sleep(0.2)
                await b.room(code)

    brokers.run(scenario, expiry_seconds=2.0)
