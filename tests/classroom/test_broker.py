"""Every rule of a class, held by both brokers alike (in this process, and in a real redis-server):
rooms and their versions, joins, votes and their caps at the boundary, expiry, failed joins, what
their streams are told; then what only this process's broker has: its clock, its streams' hub."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace

import pytest

from app.classroom.broker import Broker, Failures, Hub, Limits, MemoryBroker, Subscriber
from app.classroom.rooms import (
    ALPHABET,
    CODE_LENGTH,
    Event,
    Full,
    NoSuchRoom,
    Refused,
    TooManyFailures,
    digest,
)
from tests.support.aio import run
from tests.support.brokers import BROKERS, Brokers


@pytest.fixture(params=BROKERS)
def brokers(request: pytest.FixtureRequest) -> Brokers:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return Brokers(request.param, url)


def test_a_room_is_made_read_and_changed_in_versions(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        room = await b.create("token", "/?preset=testmodel", "10.0.0.1")
        assert (room.token_digest, room.state, room.version) == (digest("token"), "/?preset=testmodel", 1)
        changed = await b.set_state(room.code, "/lessons/x?step=2")
        assert (changed.state, changed.version) == ("/lessons/x?step=2", 2)
        read = await b.room(room.code)
        assert (read.code, read.token_digest, read.version) == (room.code, digest("token"), 2)
        other = (await b.create("token", "/", "10.0.0.1")).code
        assert other != room.code and all(
            len(c) == CODE_LENGTH and set(c) <= set(ALPHABET) for c in (room.code, other)
        )
        with pytest.raises(NoSuchRoom, match="no class with the code ZZZZZZZZ"):
            await b.room("ZZZZZZZZ")
        with pytest.raises(NoSuchRoom, match="no class with the code ZZZZZZZZ"):
            await b.set_state("ZZZZZZZZ", "/")

    brokers.run(scenario)


def test_a_student_counts_once_and_the_room_fills_at_its_cap(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/", "c")).code
        assert (await b.join(code, "s1", "a")).students == 1
        assert (await b.join(code, "s1", "a")).students == 1  # the same student again
        assert (await b.join(code, "s2", "b")).students == 2  # the cap: accepted
        with pytest.raises(Refused, match=r"this class is full: 2 students \(MRE_CLASS_MAX_STUDENTS\)"):
            await b.join(code, "s3", "c")  # one more: refused

    brokers.run(scenario, students=2)


def test_rooms_at_their_cap_and_per_address(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        await b.create("t", "/", "a")
        await b.create("t", "/", "a")  # the per-address cap: accepted
        with pytest.raises(Refused, match="You already have 2 classes open"):
            await b.create("t", "/", "a")
        await b.create("t", "/", "b")  # the server's cap: accepted
        with pytest.raises(Full, match=r"this server runs 3 classes, its cap \(MRE_CLASS_MAX_ROOMS\)"):
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
        read = await b.tally(code, "l:1")
        assert (read.step, read.of(2), (await b.tally(code, "l:2")).total) == ("l:1", [0, 2], 0)
        assert await b.vote_of(code, "l:1", "s1") == 1
        with pytest.raises(Refused, match=r"this class has 2 votes, its cap \(MRE_CLASS_MAX_VOTES\)"):
            await b.vote(code, "l:1", "s3", 0)
        with pytest.raises(Refused, match="join the class"):
            await b.vote(code, "l:1", "stranger", 0)

    brokers.run(scenario, votes=2)


def test_votes_on_every_step_count_together_toward_the_cap(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/", "c")).code
        for student in ("s1", "s2"):
            await b.join(code, student, "a")
        await b.vote(code, "l:1", "s1", 0)
        await b.vote(code, "l:2", "s1", 1)  # the cap, over two steps: accepted
        with pytest.raises(Refused, match=r"this class has 2 votes, its cap \(MRE_CLASS_MAX_VOTES\)"):
            await b.vote(code, "l:3", "s2", 0)  # a step of its own does not start a count of its own
        assert (await b.vote(code, "l:2", "s1", 0)).of(2) == [1, 0]  # a change at the cap still counts

    brokers.run(scenario, votes=2)


def test_streams_stop_at_their_caps_per_address_and_per_process(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/", "a")).code
        async with contextlib.AsyncExitStack() as held:
            for _ in range(2):  # one address's cap: accepted
                await held.enter_async_context(b.hub.stream(code, "nat"))
            mine = (
                r"^2 class streams are open from your address, its cap \(MRE_CLASS_MAX_STREAMS_PER_CLIENT\)$"
            )
            with pytest.raises(Refused, match=mine):
                await held.enter_async_context(b.hub.stream(code, "nat"))
            await held.enter_async_context(b.hub.stream(code, "other", student=False))  # the process's cap
            cap = r"^this server has 3 class streams open, its cap \(MRE_CLASS_MAX_STREAMS\)$"
            with pytest.raises(Full, match=cap):
                await held.enter_async_context(b.hub.stream(code, "third"))
            assert (b.hub.count, b.hub.by_client) == (3, {"nat": 2, "other": 1})
        assert (b.hub.count, b.hub.by_client, b.hub.rooms) == (0, {}, {})  # closed streams free their slots
        async with b.hub.stream(code, "nat"), b.hub.stream(code, "nat"), b.hub.stream(code, "x"):
            pass

    brokers.run(scenario, streams=3, streams_per_client=2)


def test_a_room_kept_changing_stays_alive_and_one_left_alone_ends(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/", "c")).code
        await b.join(code, "s1", "a")
        await b.vote(code, "l:1", "s1", 1)
        start, changes = time.monotonic(), 0
        while time.monotonic() - start < 1.5 * 2.0:  # a teacher driving it for longer than its expiry
            await asyncio.sleep(0.1)  # a change every tenth of a second: far inside the expiry
            await b.set_state(code, "/?preset=mymodule")
            changes += 1
        room = await b.room(code)
        assert (room.version, room.students) == (1 + changes, 1)
        # and all it holds: the votes (of a step voted on before), the joins from each address
        assert (await b.tally(code, "l:1")).of(2) == [0, 1] and await b.vote_of(code, "l:1", "s1") == 1
        with pytest.raises(Refused, match="1 students have joined this class from your address"):
            await b.join(code, "s2", "a")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # then nobody touches it: it ends
            try:
                await b.room(code)
            except NoSuchRoom:
                return
            await asyncio.sleep(0.2)
        raise AssertionError("the room left alone did not end")

    brokers.run(scenario, expiry_seconds=2.0, joins_per_client=1)


def test_failed_joins_lock_out_for_a_window_that_further_failures_do_not_move(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        first = time.monotonic()
        for _ in range(3):
            await b.check_failures("x")
            await b.failed("x")
        with pytest.raises(TooManyFailures, match="3 failed joins from your address in 3 s"):  # the limit
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
        with pytest.raises(Refused, match="3 students have joined this class from your address"):
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
        assert (tally.code, tally.version) == (code, 1)

    brokers.run(scenario)


def test_a_page_open_keeps_its_class_alive_past_its_expiry(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/", "a")).code
        async with b.hub.stream(code, "a") as page:
            await b.opened(code, page.key)
            for _ in range(4):  # longer than the expiry, nothing changed, only the page open
                await asyncio.sleep(0.8)
                await b.keep(b.hub.students())
            assert (await b.room(code)).live == 1  # and the page renewed still counts
        with pytest.raises(NoSuchRoom):
            for _ in range(40):
                await asyncio.sleep(0.2)
                await b.room(code)

    brokers.run(scenario, expiry_seconds=2.0)


async def listening(b: Broker) -> None:
    """Until the Redis broker's listener has subscribed (the in-process broker always listens)."""
    store = getattr(b, "redis", None)
    deadline = time.monotonic() + 30
    while store is not None and not await store.pubsub_numpat():
        assert time.monotonic() < deadline, "the listener never subscribed"
        await asyncio.sleep(0.01)


async def told(subscriber: Subscriber, kind: str, timeout: float = 30.0) -> Event:
    """The next event of ``kind`` a stream is told (generous deadline: the machine may be busy)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in await subscriber.next(0.1):
            if event.kind == kind:
                return event
    raise AssertionError(f"no {kind} event")


def test_a_change_and_the_end_reach_the_rooms_streams_with_their_versions(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        await b.start()
        code = (await b.create("t", "/", "a")).code
        async with b.hub.stream(code, "a") as page:
            await listening(b)
            await b.set_state(code, "/?preset=mymodule")
            state = await told(page, "state")
            assert (state.code, state.version, state.state) == (code, 2, "/?preset=mymodule")
            await b.end(code)
            ended = await told(page, "ended")
            assert (ended.code, ended.version) == (code, 3)  # past the last state: never taken for one

    brokers.run(scenario)


def test_the_console_is_told_who_joined_and_whose_page_is_open(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        await b.start()
        code = (await b.create("t", "/", "a")).code
        # Everything happens once the console listens: on Redis, an event published before it
        # subscribed may still reach it (the event stream reads the counts anew when told).
        async with b.hub.stream(code, "a", student=False) as console:
            await listening(b)
            await b.closed(code, "a page never opened")  # nothing to close: no harm, nobody told
            await b.set_state(code, "/?preset=mymodule")  # told after anything the close told
            heard = [event.kind for event in await console.next(30)]
            while "state" not in heard:
                heard += [event.kind for event in await console.next(30)]
            assert heard == ["state"]
            counts = []
            for action in (
                lambda: b.opened(code, "k1"),  # a page open before anyone joined (a reload)
                lambda: b.join(code, "s1", "a"),
                lambda: b.join(code, "s2", "b"),
                lambda: b.opened(code, "k2"),
                lambda: b.closed(code, "k1"),
            ):
                await action()
                event = await told(console, "students")
                assert (event.code, event.version) == (code, 2)
                counts.append((event.students, event.live))
        assert counts == [(0, 1), (1, 1), (2, 1), (2, 2), (2, 1)]

    brokers.run(scenario)


def test_each_room_signs_its_students_with_a_key_of_its_own(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        one, two = await b.create("t", "/", "a"), await b.create("t", "/", "a")
        keys = {one.student_key, two.student_key, (await b.room(one.code)).student_key}
        assert len(keys) == 2 and all(len(k) == 32 and int(k, 16) >= 0 for k in keys)

    brokers.run(scenario)


def test_an_ended_class_keeps_no_votes(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/", "a")).code
        await b.join(code, "s1", "a")
        tally = await b.vote(code, "l:1", "s1", 1)
        assert (tally.step, tally.of(2), await b.vote_of(code, "l:1", "s1")) == ("l:1", [0, 1], 1)
        await b.end(code)
        assert (await b.tally(code, "l:1")).total == 0 and await b.vote_of(code, "l:1", "s1") is None

    brokers.run(scenario)


def test_a_room_untouched_for_exactly_its_expiry_is_kept_and_a_join_renews_it() -> None:
    """In this process a clock can be given: the boundary exactly, with no waiting."""
    now = [0.0]
    b = MemoryBroker(replace(Limits(), expiry_seconds=10.0), clock=lambda: now[0])

    async def scenario() -> None:
        code = (await b.create("t", "/", "a")).code
        alone = (await b.create("t", "/", "b")).code  # nobody will touch this one
        now[0] = 10.0  # untouched for exactly its expiry: kept (reading it renews nothing)
        assert (await b.room(alone)).code == alone
        assert (await b.room(code)).code == code
        await b.join(code, "s1", "x")  # a join keeps a class alive
        now[0] = 20.0
        assert (await b.room(code)).students == 1
        with pytest.raises(NoSuchRoom):
            await b.room(alone)
        now[0] = 20.001
        with pytest.raises(NoSuchRoom):
            await b.room(code)

    run(scenario())


def test_failed_joins_are_remembered_for_the_newest_addresses_only() -> None:
    failures = Failures(limit=1, window=60.0)
    failures.MAX_CLIENTS = 2  # a bounded memory: the oldest address is forgotten first
    for client in ("a", "b", "c"):
        failures.add(client)
    for client in ("b", "c"):
        with pytest.raises(TooManyFailures):
            failures.check(client)
    failures.check("a")  # forgotten: no longer locked out


def test_each_stream_has_a_key_of_its_own_in_every_process() -> None:
    async def scenario() -> set[str]:
        one, two = Hub(Limits()), Hub(Limits())  # two processes
        async with one.stream("R", "a") as a, one.stream("R", "a") as b, two.stream("R", "a") as c:
            return {a.key, b.key, c.key}

    assert len(run(scenario())) == 3


def test_a_stream_takes_the_newest_state_and_drops_one_arriving_late() -> None:
    async def scenario() -> None:
        page = Subscriber("k", student=True)
        page.deliver(Event("state", "R", 1, state="/one"))  # a room never changed: version 1
        page.deliver(Event("tally", "R", 1, step="l:1"))  # votes are not a student's page's
        assert [(e.kind, e.state) for e in await page.next(1.0)] == [("state", "/one")]
        page.deliver(Event("state", "R", 3, state="/three"))
        page.deliver(Event("state", "R", 2, state="/two"))  # an older one, late
        assert [e.state for e in await page.next(1.0)] == ["/three"]
        page.deliver(Event("state", "R", 3, state="/three"))  # the same again (a resend): nothing new
        assert await page.next(0.01) == []

    run(scenario())


def test_a_cap_of_one_admits_one(brokers: Brokers) -> None:
    """Each per-address and per-room cap at its smallest: the first is taken, the second refused."""

    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/", "a")).code
        with pytest.raises(Refused, match="You already have 1 classes open"):
            await b.create("t", "/", "a")
        await b.join(code, "s1", "x")
        with pytest.raises(Refused, match="1 students have joined this class from your address"):
            await b.join(code, "s2", "x")
        await b.join(code, "s2", "y")
        with pytest.raises(Refused, match="this class is full: 2 students"):
            await b.join(code, "s3", "z")
        await b.vote(code, "l:1", "s1", 0)
        with pytest.raises(Refused, match="this class has 1 votes"):
            await b.vote(code, "l:2", "s1", 0)
        await b.check_failures("z")
        await b.failed("z")
        with pytest.raises(TooManyFailures, match="1 failed joins"):
            await b.check_failures("z")
        async with b.hub.stream(code, "x"):
            with pytest.raises(Refused, match="1 class streams are open from your address"):
                async with b.hub.stream(code, "x"):
                    pass

    limits = {"rooms_per_client": 1, "joins_per_client": 1, "students": 2, "votes": 1, "failed_joins": 1}
    brokers.run(scenario, **limits, streams_per_client=1)


def test_an_ended_class_frees_its_place_among_the_servers_rooms(brokers: Brokers) -> None:
    async def scenario(b: Broker) -> None:
        code = (await b.create("t", "/", "a")).code
        with pytest.raises(Full, match="this server runs 1 classes"):
            await b.create("t", "/", "b")
        await b.end(code)
        await b.create("t", "/", "b")

    brokers.run(scenario, rooms=1)
