"""Rooms, snapshots and votes in Redis, changes carried by Redis pub/sub: any number of workers,
on any number of machines, serve one class (MRE_REDIS_URL).

Every key of a room expires after the inactivity setting and is renewed by each change, join and,
every few seconds, each open student page. Each process listens on one pattern subscription and
fans events out to its own streams (``Hub``); whatever goes wrong with it (Redis restarting, a
refused resend), it logs, waits and subscribes again, then sends each of its rooms' current state,
so a change made while it was away is never lost. The connections come from one blocking pool
(a class of 300 joining at once waits for a connection rather than being refused), and every
operation is tried once more across a reconnect. Redis unreachable: a class call is
``Unavailable`` (503); nothing else of the app uses Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError, RedisError, TimeoutError

from app.classroom.broker import Hub, Limits
from app.classroom.rooms import (
    Event,
    NoSuchRoom,
    Room,
    Tally,
    TooManyFailures,
    Unavailable,
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

T = TypeVar("T")
PREFIX = "mre:"
CHANNELS = PREFIX + "events:*"
RECONNECT_SECONDS = (0.2, 5.0)  # the listener's wait after a failure: doubling from the first to the last
LIVE_SECONDS = 30.0  # an open page not renewed this long (its process died) no longer counts
KEEP_SECONDS = 10.0  # how often a process renews its open pages and their rooms
log = logging.getLogger("uvicorn.error")
# A change of state in one step: stored, its version bumped, the room's keys renewed, the step
# revealed remembered, and published, so events leave in version order even when requests race.
SET_STATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
if ARGV[5] ~= '' then redis.call('SADD', KEYS[6], ARGV[5]) end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
redis.call('EXPIRE', KEYS[6], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
local event = {kind = 'state', code = ARGV[4], version = version, state = ARGV[1],
               step = '', votes = 0, students = 0, live = 0}
redis.call('PUBLISH', KEYS[5], cjson.encode(event))
return version
"""
# A room's life renewed: its own keys (the last, the set of the steps voted on) and each step's votes
# (ARGV[2]: their keys' prefix), which live as long as the room, not as long as their last vote.
RENEW = """
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
for _, step in ipairs(redis.call('SMEMBERS', KEYS[#KEYS])) do
  redis.call('EXPIRE', ARGV[2] .. step, ARGV[1])
end
"""


def _unavailable(exc: Exception) -> Unavailable:
    return Unavailable(
        Text(
            "the class store (Redis) is unreachable ({error}); the lab still works",
            error=type(exc).__name__,
        )
    )


class RedisBroker:
    def __init__(self, url: str, limits: Limits, connections: int = 64, wait: float = 10.0) -> None:
        self.limits = limits
        self.hub = Hub(limits)
        # A blocking pool: past ``connections`` at once, a call waits up to ``wait`` seconds for one.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=connections,
            timeout=wait,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
        )
        self.redis = Redis(connection_pool=pool)
        self.tasks: list[asyncio.Task] = []
        self.ttl = max(int(limits.expiry_seconds), 1)
        self.set_script = self.redis.register_script(SET_STATE)
        self.renew_script = self.redis.register_script(RENEW)

    # Keys of one room.
    def _room_key(self, code: str) -> str:
        return f"{PREFIX}room:{code}"

    def _students_key(self, code: str) -> str:
        return f"{PREFIX}students:{code}"

    def _votes_key(self, code: str, step: str) -> str:
        return f"{PREFIX}votes:{code}:{step}"

    def _count_key(self, code: str) -> str:
        return f"{PREFIX}votecount:{code}"

    def _revealed_key(self, code: str) -> str:
        return f"{PREFIX}revealed:{code}"

    def _joins_key(self, code: str) -> str:
        return f"{PREFIX}joins:{code}"

    def _live_key(self, code: str) -> str:
        return f"{PREFIX}live:{code}"

    def _steps_key(self, code: str) -> str:
        return f"{PREFIX}steps:{code}"

    def _keys(self, code: str) -> list[str]:
        """The keys a room's life renews (the set of its steps last: RENEW renews their votes)."""
        return [
            self._room_key(code),
            self._students_key(code),
            self._count_key(code),
            self._revealed_key(code),
            self._joins_key(code),
            self._live_key(code),
            self._steps_key(code),
        ]

    async def _renew(self, code: str, pipe: object) -> None:
        votes = self._votes_key(code, "")  # the prefix of its steps' votes
        await self.renew_script(keys=self._keys(code), args=[self.ttl, votes], client=pipe)

    async def start(self) -> None:
        if not self.tasks or any(t.done() for t in self.tasks):
            loop = asyncio.get_running_loop()
            for task in self.tasks:
                task.cancel()
            self.tasks = [loop.create_task(self._listen()), loop.create_task(self._keep_forever())]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.redis.aclose()

    async def _listen(self) -> None:
        """Events of every room, to this process's streams, for ever: any failure is logged, waited
        out (longer each time, up to a few seconds) and followed by a new subscription."""
        pause = RECONNECT_SECONDS[0]
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(CHANNELS)
                await self._resend()
                pause = RECONNECT_SECONDS[0]
                async for message in pubsub.listen():
                    if message["type"] == "pmessage":
                        self.hub.deliver(Event.of(json.loads(message["data"])))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away, a refused resend, a malformed message: never die
                name = type(exc).__name__
                log.warning("class events: %s: %s; subscribing again in %.1f s", name, exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECONNECT_SECONDS[1])
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _resend(self) -> None:
        """Each local room's current state, to its streams: what they missed while Redis was away."""
        for code in self.hub.codes():
            try:
                room = await self._room(code)
            except NoSuchRoom:
                self.hub.deliver(Event("ended", code, 0))
                continue
            self.hub.deliver(Event("state", code, room.version, state=room.state))

    async def _keep_forever(self) -> None:
        while True:
            await asyncio.sleep(KEEP_SECONDS)
            with contextlib.suppress(Exception):  # Redis away: the listener says so; try again later
                await self.keep(self.hub.students())

    async def _publish(self, event: Event) -> None:
        await self.redis.publish(f"{PREFIX}events:{event.code}", json.dumps(asdict(event)))

    async def _call(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work`` run once, and once more if the connection broke under it (Redis restarted: the
        pool connects again); Unavailable when Redis is still away."""
        await self.start()
        try:
            try:
                return await work()
            except (ConnectionError, TimeoutError):
                return await work()
        except RedisError as exc:
            raise _unavailable(exc) from None

    async def _touch(self, code: str) -> None:
        pipe = self.redis.pipeline()
        await self._renew(code, pipe)
        pipe.zadd(PREFIX + "rooms", {code: time.time()})
        await pipe.execute()

    async def _room(self, code: str) -> Room:
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.hgetall(self._room_key(code))
        pipe.scard(self._students_key(code))
        pipe.smembers(self._revealed_key(code))
        pipe.zremrangebyscore(self._live_key(code), "-inf", now)
        pipe.zcard(self._live_key(code))
        fields, students, revealed, _, live = await pipe.execute()
        if not fields:
            raise no_such_room(code)
        return Room(
            code,
            fields["token"],
            fields["state"],
            int(fields["version"]),
            students,
            fields.get("key", ""),
            frozenset(revealed),
            live,
        )

    async def room(self, code: str) -> Room:
        return await self._call(lambda: self._room(code))

    async def create(self, token: str, state: str, client: str) -> Room:
        return await self._call(lambda: self._create(token, state, client))

    async def _create(self, token: str, state: str, client: str) -> Room:
        rooms = PREFIX + "rooms"
        await self.redis.zremrangebyscore(rooms, "-inf", time.time() - self.ttl)
        if await self.redis.zcard(rooms) >= self.limits.rooms:
            raise rooms_cap(self.limits.rooms)
        # The rooms this address started that are still open (an ended or expired one is gone).
        started = f"{PREFIX}client:{client}"
        codes = list(await self.redis.smembers(started))
        pipe = self.redis.pipeline()
        for code in codes:
            pipe.exists(self._room_key(code))
        alive = [c for c, exists in zip(codes, await pipe.execute(), strict=True) if exists]
        if len(alive) >= self.limits.rooms_per_client:
            raise rooms_per_client_cap(self.limits.rooms_per_client)
        while True:
            code = new_code()
            key = self._room_key(code)
            if await self.redis.hsetnx(key, "token", digest(token)):
                break
        student_key = new_key()
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping={"state": state, "version": 1, "key": student_key, "client": client})
        if len(alive) < len(codes):
            pipe.srem(started, *(c for c in codes if c not in alive))
        pipe.sadd(started, code)
        pipe.expire(started, self.ttl)
        await pipe.execute()
        await self._touch(code)
        return Room(code, digest(token), state, 1, student_key=student_key)

    async def set_state(self, code: str, state: str, revealed: str = "") -> Room:
        return await self._call(lambda: self._set_state(code, state, revealed))

    async def _set_state(self, code: str, state: str, revealed: str) -> Room:
        keys = [self._room_key(code), self._students_key(code), self._count_key(code)]
        keys += [PREFIX + "rooms", f"{PREFIX}events:{code}", self._revealed_key(code)]
        pipe = self.redis.pipeline()
        await self.set_script(keys=keys, args=[state, self.ttl, time.time(), code, revealed], client=pipe)
        await self._renew(code, pipe)  # its votes and joins too: a class being taught keeps all it has
        version = (await pipe.execute())[0]
        if version is None:
            raise no_such_room(code)
        return await self._room(code)

    async def end(self, code: str) -> None:
        await self._call(lambda: self._end(code))

    async def _end(self, code: str) -> None:
        room = await self._room(code)
        client = await self.redis.hget(self._room_key(code), "client")
        steps = [k async for k in self.redis.scan_iter(match=f"{PREFIX}votes:{code}:*", count=500)]
        pipe = self.redis.pipeline()
        pipe.delete(*self._keys(code), self._live_key(code), *steps)
        pipe.zrem(PREFIX + "rooms", code)
        if client:
            pipe.srem(f"{PREFIX}client:{client}", code)
        await pipe.execute()
        await self._publish(Event("ended", code, room.version + 1))

    async def join(self, code: str, student: str, client: str) -> Room:
        return await self._call(lambda: self._join(code, student, client))

    async def _join(self, code: str, student: str, client: str) -> Room:
        room = await self._room(code)
        key = self._students_key(code)
        if not await self.redis.sismember(key, student):
            if room.students >= self.limits.students:
                raise class_full(room.students)
            if int(await self.redis.hget(self._joins_key(code), client) or 0) >= self.limits.joins_per_client:
                raise joins_per_client_cap(self.limits.joins_per_client)
            pipe = self.redis.pipeline()
            pipe.sadd(key, student)
            pipe.hincrby(self._joins_key(code), client, 1)
            pipe.scard(key)
            added, _, students = await pipe.execute()
            if added:
                await self._publish(Event("students", code, room.version, students=students, live=room.live))
            room = replace(room, students=students)
        await self._touch(code)  # a join keeps a class alive
        return room

    async def vote(self, code: str, step: str, student: str, choice: int) -> Tally:
        return await self._call(lambda: self._vote(code, step, student, choice))

    async def _vote(self, code: str, step: str, student: str, choice: int) -> Tally:
        room = await self._room(code)
        if not await self.redis.sismember(self._students_key(code), student):
            raise not_joined()
        key = self._votes_key(code, step)
        if not await self.redis.hexists(key, student):
            if int(await self.redis.get(self._count_key(code)) or 0) >= self.limits.votes:
                raise votes_cap(self.limits.votes)
            await self.redis.incr(self._count_key(code))
        pipe = self.redis.pipeline()
        pipe.hset(key, student, choice)
        pipe.expire(key, self.ttl)
        pipe.sadd(self._steps_key(code), step)
        for renewed in (self._steps_key(code), self._count_key(code)):  # as the room's other keys
            pipe.expire(renewed, self.ttl)
        await pipe.execute()
        tally = await self._tally(code, step)
        await self._publish(
            Event("tally", code, room.version, step=step, votes=tally.total, counts=tally.listed())
        )
        return tally

    async def tally(self, code: str, step: str) -> Tally:
        return await self._call(lambda: self._tally(code, step))

    async def _tally(self, code: str, step: str) -> Tally:
        counts: dict[int, int] = {}
        for choice in (await self.redis.hgetall(self._votes_key(code, step))).values():
            counts[int(choice)] = counts.get(int(choice), 0) + 1
        return Tally(step, counts)

    async def vote_of(self, code: str, step: str, student: str) -> int | None:
        value = await self._call(lambda: self.redis.hget(self._votes_key(code, step), student))
        return int(value) if value is not None else None

    async def check_failures(self, client: str) -> None:
        failures = await self._call(lambda: self.redis.get(f"{PREFIX}fail:{client}"))
        if int(failures or 0) >= self.limits.failed_joins:
            raise TooManyFailures.after(self.limits.failed_joins, self.limits.failure_window_seconds)

    async def failed(self, client: str) -> None:
        key = f"{PREFIX}fail:{client}"

        async def add() -> None:
            pipe = self.redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, int(self.limits.failure_window_seconds), nx=True)  # the first failure's window
            await pipe.execute()

        await self._call(add)

    async def opened(self, code: str, stream: str) -> None:
        await self._call(lambda: self._live(code, add={stream: time.time() + LIVE_SECONDS}))

    async def closed(self, code: str, stream: str) -> None:
        await self._call(lambda: self._live(code, gone=stream))

    async def _live(self, code: str, add: dict[str, float] | None = None, gone: str | None = None) -> None:
        room = await self._room(code)
        pipe = self.redis.pipeline()
        if add:
            pipe.zadd(self._live_key(code), add)
        if gone:
            pipe.zrem(self._live_key(code), gone)
        pipe.expire(self._live_key(code), self.ttl)
        pipe.zcard(self._live_key(code))
        done = await pipe.execute()
        if gone and not add and not done[0]:
            return  # no page was open under that key: nothing changed, nobody is told (as in one process)
        live = done[-1]
        await self._publish(Event("students", code, room.version, students=room.students, live=live))

    async def keep(self, codes: dict[str, list[str]]) -> None:
        """This process's open student pages renewed, and their rooms kept alive."""
        if not codes:
            return
        until = time.time() + LIVE_SECONDS
        pipe = self.redis.pipeline()
        for code, streams in codes.items():
            if streams:
                pipe.zadd(self._live_key(code), dict.fromkeys(streams, until), xx=True)
            await self._renew(code, pipe)
        await pipe.execute()
