"""The broker: where rooms, snapshots and votes live, and how a change reaches every student.

``Hub`` is the fan-out inside one process: each open stream holds only the latest event of each
kind, so a slow or stalled student never makes the server queue anything (and misses nothing
that matters: every event carries the whole state). ``MemoryBroker`` keeps rooms in this process
(one worker, nothing to install); ``app.classroom.redis_broker`` keeps them in Redis and carries
events by pub/sub, so any number of workers serve one class.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
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
    new_code,
    no_such_room,
    not_joined,
    rooms_cap,
    rooms_per_client_cap,
    votes_cap,
)
from app.langs import Text

KINDS = ("state", "tally", "students")  # the order a stream sends what came at once


@dataclass(frozen=True)
class Limits:
    """The caps of a classroom server (from Settings, class_*)."""

    rooms: int = 100
    rooms_per_client: int = 5  # started from one client address, alive at once
    students: int = 300  # per room
    votes: int = 20_000  # per room, all steps together
    streams: int = 2000  # open event streams per process
    streams_per_client: int = 8  # per client address and process: a few tabs, not a flood
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
    async def set_state(self, code: str, state: str) -> Room: ...
    async def join(self, code: str, student: str) -> Room: ...
    async def vote(self, code: str, step: str, student: str, choice: int) -> Tally: ...
    async def tally(self, code: str, step: str) -> Tally: ...
    async def vote_of(self, code: str, step: str, student: str) -> int | None: ...
    async def check_failures(self, client: str) -> None: ...
    async def failed(self, client: str) -> None: ...


class Subscriber:
    """One open stream: the latest event of each kind, and a flag that something came."""

    def __init__(self) -> None:
        self.latest: dict[str, Event] = {}
        self.woken = asyncio.Event()
        self.version = 0  # of the newest state delivered: an older one arriving late is dropped

    def deliver(self, event: Event) -> None:
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
        events = [self.latest.pop(k) for k in KINDS if k in self.latest]
        return events


class Hub:
    """The open streams of this process, by room, with their caps."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.rooms: dict[str, set[Subscriber]] = {}
        self.by_client: dict[str, int] = {}
        self.count = 0

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
    async def stream(self, code: str, client: str) -> AsyncIterator[Subscriber]:
        self.check(client)
        subscriber = Subscriber()
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


class Failures:
    """Failed joins per client address in a sliding window, for a bounded number of addresses."""

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

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.hub = Hub(limits)
        self.rooms: dict[str, Room] = {}
        self.touched: dict[str, float] = {}
        self.students: dict[str, set[str]] = {}
        self.votes: dict[str, dict[str, dict[str, int]]] = {}  # code -> step -> student -> choice
        self.creators: dict[str, str] = {}  # code -> the client address that started it
        self.failures = Failures(limits.failed_joins, limits.failure_window_seconds)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _expire(self) -> None:
        now = time.monotonic()
        for code in [c for c, t in self.touched.items() if now - t > self.limits.expiry_seconds]:
            for table in (self.rooms, self.touched, self.students, self.votes, self.creators):
                table.pop(code, None)

    def _room(self, code: str) -> Room:
        self._expire()
        room = self.rooms.get(code)
        if room is None:
            raise no_such_room(code)
        return replace(room, students=len(self.students[code]))

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
        self.rooms[code] = Room(code, digest(token), state, 1)
        self.touched[code], self.students[code], self.votes[code] = time.monotonic(), set(), {}
        return self.rooms[code]

    async def room(self, code: str) -> Room:
        return self._room(code)

    async def set_state(self, code: str, state: str) -> Room:
        room = self._room(code)
        room = self.rooms[code] = replace(room, state=state, version=room.version + 1)
        self.touched[code] = time.monotonic()
        self.hub.deliver(Event("state", code, room.version, state=state))
        return room

    async def join(self, code: str, student: str) -> Room:
        room = self._room(code)
        joined = self.students[code]
        if student not in joined:
            if len(joined) >= self.limits.students:
                raise class_full(len(joined))
            joined.add(student)
            self.hub.deliver(Event("students", code, room.version, students=len(joined)))
        return replace(room, students=len(joined))

    async def vote(self, code: str, step: str, student: str, choice: int) -> Tally:
        room = self._room(code)
        if student not in self.students[code]:
            raise not_joined()
        votes = self.votes[code]
        if student not in votes.get(step, {}) and sum(map(len, votes.values())) >= self.limits.votes:
            raise votes_cap(self.limits.votes)
        votes.setdefault(step, {})[student] = choice
        tally = await self.tally(code, step)
        self.hub.deliver(Event("tally", code, room.version, step=step, votes=tally.total))
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
