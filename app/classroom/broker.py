"""The broker: where rooms, snapshots and votes live, and how a change reaches every student.

``Hub`` is the fan-out inside one process: each open stream holds only the latest event of each
kind, so a slow or stalled student never makes the server queue anything (and misses nothing
that matters: every event carries the whole state). ``MemoryBroker`` keeps rooms in this process
(one worker, nothing to install); ``app.classroom.redis_broker`` keeps them in Redis and carries
events by pub/sub, so any number of workers serve one class.

A student exists only once they joined (a click, never a page view) and holds an id the room
signed (``rooms.issue_student``). Caps per client address stop one laptop from taking a class,
but are never lower than a class: a whole class behind one NAT address shares that address.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Protocol

from app.classroom.rooms import (
    Event,
    Full,
    Refused,
    Room,
    Tally,
    TooManyFailures,
    class_full,
    digest,
    joins_per_client_cap,
    new_code,
    new_key,
    no_such_room,
    not_joined,
    rooms_cap,
    rooms_per_client_cap,
    votes_cap,
)
from app.langs import Text

KINDS = ("state", "tally", "students", "ended")  # the order a stream sends what came at once
CONSOLE_ONLY = ("tally", "students")  # a student's page is not told of votes and arrivals


@dataclass(frozen=True)
class Limits:
    """The caps of a classroom server (from Settings, class_*)."""

    rooms: int = 100
    rooms_per_client: int = 5  # open at once, started from one client address
    students: int = 300  # per room
    joins_per_client: int = 300  # per room and client address: a whole class behind one NAT
    votes: int = 20_000  # per room, all steps together
    streams: int = 2000  # open event streams per process
    streams_per_client: int = 320  # per client address and process: a class behind one NAT
    expiry_seconds: float = 3 * 3600.0  # a room nobody touched this long is gone
    failed_joins: int = 20  # per client address a minute: then 429 until the minute is over
    failure_window_seconds: float = 60.0


class Broker(Protocol):
    """Where a server keeps its classes: ``MemoryBroker`` (this process) or ``RedisBroker``."""

    limits: Limits
    hub: Hub

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def create(self, token: str, state: str, client: str) -> Room: ...
    async def room(self, code: str) -> Room: ...
    async def set_state(self, code: str, state: str, revealed: str = "") -> Room: ...
    async def end(self, code: str) -> None: ...
    async def join(self, code: str, student: str, client: str) -> Room: ...
    async def vote(self, code: str, step: str, student: str, choice: int) -> Tally: ...
    async def tally(self, code: str, step: str) -> Tally: ...
    async def vote_of(self, code: str, step: str, student: str) -> int | None: ...
    async def check_failures(self, client: str) -> None: ...
    async def failed(self, client: str) -> None: ...
    async def opened(self, code: str, stream: str) -> None: ...
    async def closed(self, code: str, stream: str) -> None: ...
    async def keep(self, codes: dict[str, list[str]]) -> None: ...


class Subscriber:
    """One open stream: the latest event of each kind, and a flag that something came."""

    def __init__(self, key: str, student: bool) -> None:
        self.key, self.student = key, student  # an id for the live count; a student's page or a console
        self.latest: dict[str, Event] = {}
        self.woken = asyncio.Event()
        self.version = 0  # of the newest state delivered: an older one arriving late is dropped

    def deliver(self, event: Event) -> None:
        if self.student and event.kind in CONSOLE_ONLY:
            return
        if event.kind == "state":
            if event.version <= self.version:
                return
            self.version = event.version
        self.latest[event.kind] = event
        self.woken.set()

    async def next(self, timeout: float) -> list[Event]:
        """What came since the last call (state first), or [] after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.woken.wait(), timeout)
        except TimeoutError:
            return []
        self.woken.clear()
        return [self.latest.pop(k) for k in KINDS if k in self.latest]


class Hub:
    """The open streams of this process, by room, with their caps."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.rooms: dict[str, set[Subscriber]] = {}
        self.by_client: dict[str, int] = {}
        self.count = 0
        self.made = 0  # streams opened so far: each gets its own key
        self.prefix = secrets.token_hex(6)  # this hub's, so keys differ across processes and machines

    def check(self, client: str) -> None:
        """Refuse a stream over the caps: this process's, and one client address's."""
        if self.count >= self.limits.streams:
            raise Full(
                Text(
                    "this server has {count} class streams open, its cap (MRE_CLASS_MAX_STREAMS)",
                    count=self.count,
                )
            )
        if self.by_client.get(client, 0) >= self.limits.streams_per_client:
            raise Refused(
                Text(
                    "{cap} class streams are open from your address, its cap"
                    " (MRE_CLASS_MAX_STREAMS_PER_CLIENT)",
                    cap=self.limits.streams_per_client,
                )
            )

    @asynccontextmanager
    async def stream(self, code: str, client: str, student: bool = True) -> AsyncIterator[Subscriber]:
        self.check(client)
        self.made += 1
        subscriber = Subscriber(f"{self.prefix}:{self.made}", student)
        self.rooms.setdefault(code, set()).add(subscriber)
        self.by_client[client] = self.by_client.get(client, 0) + 1
        self.count += 1
        try:
            yield subscriber
        finally:
            self.count -= 1
            self.by_client[client] -= 1
            if not self.by_client[client]:
                del self.by_client[client]
            self.rooms[code].discard(subscriber)
            if not self.rooms[code]:
                del self.rooms[code]

    def deliver(self, event: Event) -> None:
        for subscriber in self.rooms.get(event.code, ()):
            subscriber.deliver(event)

    def codes(self) -> list[str]:
        return list(self.rooms)

    def students(self) -> dict[str, list[str]]:
        """The keys of the students' streams open in this process, by room."""
        return {code: [s.key for s in subs if s.student] for code, subs in self.rooms.items()}


class Failures:
    """Failed joins per client address: a lockout window opened by the first failure, which further
    failures do not move, for a bounded number of addresses."""

    MAX_CLIENTS = 10_000

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.seen: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self.seen.get(client, []) if now - t < self.window]
        self.seen[client] = times
        self.seen.move_to_end(client)
        while len(self.seen) > self.MAX_CLIENTS:
            self.seen.popitem(last=False)
        return times

    def check(self, client: str) -> None:
        if len(self._recent(client, time.monotonic())) >= self.limit:
            raise TooManyFailures.after(self.limit, self.window)

    def add(self, client: str) -> None:
        self._recent(client, time.monotonic()).append(time.monotonic())


class MemoryBroker:
    """Rooms in this process: the default, for one worker."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.hub = Hub(limits)
        self.clock = clock
        self.rooms: dict[str, Room] = {}
        self.touched: dict[str, float] = {}
        self.students: dict[str, set[str]] = {}
        self.joined_from: dict[str, dict[str, int]] = {}  # code -> client address -> joins
        self.votes: dict[str, dict[str, dict[str, int]]] = {}  # code -> step -> student -> choice
        self.creators: dict[str, str] = {}  # code -> the client address that started it
        self.live: dict[str, set[str]] = {}  # code -> the keys of its students' open streams
        self.failures = Failures(limits.failed_joins, limits.failure_window_seconds)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _forget(self, code: str) -> None:
        tables = (self.rooms, self.touched, self.students, self.joined_from, self.votes, self.creators)
        for table in (*tables, self.live):
            table.pop(code, None)

    def _expire(self) -> None:
        """Rooms untouched for the expiry time are gone; one with a page open is never untouched."""
        now = self.clock()
        for code in self.hub.rooms:
            self.touched[code] = now
        for code in [c for c, t in self.touched.items() if now - t > self.limits.expiry_seconds]:
            self._forget(code)

    def _room(self, code: str) -> Room:
        self._expire()
        room = self.rooms.get(code)
        if room is None:
            raise no_such_room(code)
        return replace(room, students=len(self.students[code]), live=len(self.live.get(code, ())))

    def _touch(self, code: str) -> None:
        self.touched[code] = self.clock()

    async def create(self, token: str, state: str, client: str) -> Room:
        self._expire()
        if len(self.rooms) >= self.limits.rooms:
            raise rooms_cap(len(self.rooms))
        if list(self.creators.values()).count(client) >= self.limits.rooms_per_client:
            raise rooms_per_client_cap(self.limits.rooms_per_client)
        code = new_code()
        while code in self.rooms:
            code = new_code()
        self.creators[code] = client
        self.rooms[code] = Room(code, digest(token), state, 1, student_key=new_key())
        self.students[code], self.joined_from[code], self.votes[code] = set(), {}, {}
        self._touch(code)
        return self.rooms[code]

    async def room(self, code: str) -> Room:
        return self._room(code)

    async def set_state(self, code: str, state: str, revealed: str = "") -> Room:
        room = self._room(code)
        shown = room.revealed | {revealed} if revealed else room.revealed
        room = self.rooms[code] = replace(room, state=state, version=room.version + 1, revealed=shown)
        self._touch(code)
        self.hub.deliver(Event("state", code, room.version, state=state))
        return room

    async def end(self, code: str) -> None:
        room = self._room(code)
        self._forget(code)
        self.hub.deliver(Event("ended", code, room.version + 1))

    async def join(self, code: str, student: str, client: str) -> Room:
        room = self._room(code)
        joined, by = self.students[code], self.joined_from[code]
        if student not in joined:
            if len(joined) >= self.limits.students:
                raise class_full(len(joined))
            if by.get(client, 0) >= self.limits.joins_per_client:
                raise joins_per_client_cap(self.limits.joins_per_client)
            joined.add(student)
            by[client] = by.get(client, 0) + 1
            self.hub.deliver(self._students(code, room))
        self._touch(code)  # a join keeps a class alive
        return replace(room, students=len(joined))

    def _students(self, code: str, room: Room) -> Event:
        live = len(self.live.get(code, ()))
        return Event("students", code, room.version, students=len(self.students[code]), live=live)

    async def vote(self, code: str, step: str, student: str, choice: int) -> Tally:
        room = self._room(code)
        if student not in self.students[code]:
            raise not_joined()
        votes = self.votes[code]
        if student not in votes.get(step, {}) and sum(map(len, votes.values())) >= self.limits.votes:
            raise votes_cap(self.limits.votes)
        votes.setdefault(step, {})[student] = choice
        tally = await self.tally(code, step)
        self.hub.deliver(
            Event("tally", code, room.version, step=step, votes=tally.total, counts=tally.listed())
        )
        return tally

    async def tally(self, code: str, step: str) -> Tally:
        counts: dict[int, int] = {}
        for choice in self.votes.get(code, {}).get(step, {}).values():
            counts[choice] = counts.get(choice, 0) + 1
        return Tally(step, counts)

    async def vote_of(self, code: str, step: str, student: str) -> int | None:
        return self.votes.get(code, {}).get(step, {}).get(student)

    async def check_failures(self, client: str) -> None:
        self.failures.check(client)

    async def failed(self, client: str) -> None:
        self.failures.add(client)

    async def opened(self, code: str, stream: str) -> None:
        room = self._room(code)
        self.live.setdefault(code, set()).add(stream)
        self.hub.deliver(self._students(code, room))

    async def closed(self, code: str, stream: str) -> None:
        if stream in self.live.get(code, ()):
            self.live[code].discard(stream)
            if code in self.rooms:
                self.hub.deliver(self._students(code, self.rooms[code]))

    async def keep(self, codes: dict[str, list[str]]) -> None:
        """The rooms whose students' pages are open here stay alive (a live student keeps a class)."""
        for code in codes:
            if code in self.rooms:
                self._touch(code)
