"""Rooms, snapshots and votes in Redis, changes carried by Redis pub/sub: any number of workers,
on any number of machines, serve one class (MRE_REDIS_URL).

Every key of a room expires after the inactivity setting and is renewed by each change or join.
Each process listens on one pattern subscription and fans events out to its own streams (``Hub``);
after the connection comes back it sends each of its rooms' current state again, so a change made
while it was away is never lost. Redis unreachable: every class call is ``Unavailable`` (503);
nothing else of the app uses Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import asdict, replace

from redis.asyncio import Redis
from redis.exceptions import RedisError

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
    new_code,
    no_such_room,
    not_joined,
    rooms_cap,
    rooms_per_client_cap,
    votes_cap,
)
from app.langs import Text

PREFIX = "mre:"
CHANNELS = PREFIX + "events:*"
RECONNECT_SECONDS = 0.5
# A change of state in one step: stored, its version bumped, the room's keys renewed, and published,
# so events leave in version order even when two requests race.
SET_STATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
local event = {kind = 'state', code = ARGV[4], version = version, state = ARGV[1],
               step = '', votes = 0, students = 0}
redis.call('PUBLISH', KEYS[5], cjson.encode(event))
return version
"""


def _unavailable(exc: Exception) -> Unavailable:
    return Unavailable(
        Text(
            "the class store (Redis) is unreachable ({error}); the lab still works",
            error=type(exc).__name__,
        )
    )


class RedisBroker:
    def __init__(self, url: str, limits: Limits) -> None:
        self.limits = limits
        self.hub = Hub(limits)
        self.redis = Redis.from_url(url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
        self.listener: asyncio.Task | None = None
        self.ttl = max(int(limits.expiry_seconds), 1)
        self.set_script = self.redis.register_script(SET_STATE)

    # Keys of one room.
    def _room_key(self, code: str) -> str:
        return f"{PREFIX}room:{code}"

    def _students_key(self, code: str) -> str:
        return f"{PREFIX}students:{code}"

    def _votes_key(self, code: str, step: str) -> str:
        return f"{PREFIX}votes:{code}:{step}"

    def _count_key(self, code: str) -> str:
        return f"{PREFIX}votecount:{code}"

    async def start(self) -> None:
        if self.listener is None or self.listener.done():
            self.listener = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
        await self.redis.aclose()

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(CHANNELS)
                await self._resend()
                async for message in pubsub.listen():
                    if message["type"] == "pmessage":
                        self.hub.deliver(Event(**json.loads(message["data"])))
            except (RedisError, OSError):
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def _resend(self) -> None:
        """Each local room's current state, to its streams: what they missed while Redis was away."""
        for code in self.hub.codes():
            try:
                room = await self.room(code)
            except NoSuchRoom:
                continue
            self.hub.deliver(Event("state", code, room.version, state=room.state))

    async def _publish(self, event: Event) -> None:
        await self.redis.publish(f"{PREFIX}events:{event.code}", json.dumps(asdict(event)))

    async def _call(self, coroutine):
        await self.start()
        try:
            return await coroutine
        except RedisError as exc:
            raise _unavailable(exc) from None

    async def _touch(self, code: str) -> None:
        pipe = self.redis.pipeline()
        for key in (self._room_key(code), self._students_key(code), self._count_key(code)):
            pipe.expire(key, self.ttl)
        pipe.zadd(PREFIX + "rooms", {code: time.time()})
        await pipe.execute()

    async def _room(self, code: str) -> Room:
        pipe = self.redis.pipeline()
        pipe.hgetall(self._room_key(code))
        pipe.scard(self._students_key(code))
        fields, students = await pipe.execute()
        if not fields:
            raise no_such_room(code)
        return Room(code, fields["token"], fields["state"], int(fields["version"]), students)

    async def room(self, code: str) -> Room:
        return await self._call(self._room(code))

    async def create(self, token: str, state: str, client: str) -> Room:
        return await self._call(self._create(token, state, client))

    async def _create(self, token: str, state: str, client: str) -> Room:
        rooms = PREFIX + "rooms"
        await self.redis.zremrangebyscore(rooms, "-inf", time.time() - self.ttl)
        if await self.redis.zcard(rooms) >= self.limits.rooms:
            raise rooms_cap(self.limits.rooms)
        # Rooms started from one address within the expiry time (an upper bound of those still open).
        started = f"{PREFIX}started:{client}"
        if int(await self.redis.get(started) or 0) >= self.limits.rooms_per_client:
            raise rooms_per_client_cap(self.limits.rooms_per_client)
        pipe = self.redis.pipeline()
        pipe.incr(started)
        pipe.expire(started, self.ttl)
        await pipe.execute()
        while True:
            code = new_code()
            key = self._room_key(code)
            if await self.redis.hsetnx(key, "token", digest(token)):
                break
        await self.redis.hset(key, mapping={"state": state, "version": 1})
        await self._touch(code)
        return Room(code, digest(token), state, 1)

    async def set_state(self, code: str, state: str) -> Room:
        return await self._call(self._set_state(code, state))

    async def _set_state(self, code: str, state: str) -> Room:
        keys = [self._room_key(code), self._students_key(code), self._count_key(code)]
        keys += [PREFIX + "rooms", f"{PREFIX}events:{code}"]
        version = await self.set_script(keys=keys, args=[state, self.ttl, time.time(), code])
        if version is None:
            raise no_such_room(code)
        return await self._room(code)

    async def join(self, code: str, student: str) -> Room:
        return await self._call(self._join(code, student))

    async def _join(self, code: str, student: str) -> Room:
        room = await self._room(code)
        key = self._students_key(code)
        if not await self.redis.sismember(key, student):
            if room.students >= self.limits.students:
                raise class_full(room.students)
            await self.redis.sadd(key, student)
            await self._touch(code)
            room = replace(room, students=room.students + 1)
            await self._publish(Event("students", code, room.version, students=room.students))
        return room

    async def vote(self, code: str, step: str, student: str, choice: int) -> Tally:
        return await self._call(self._vote(code, step, student, choice))

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
        await pipe.execute()
        tally = await self._tally(code, step)
        await self._publish(Event("tally", code, room.version, step=step, votes=tally.total))
        return tally

    async def tally(self, code: str, step: str) -> Tally:
        return await self._call(self._tally(code, step))

    async def _tally(self, code: str, step: str) -> Tally:
        counts: dict[int, int] = {}
        for choice in (await self.redis.hgetall(self._votes_key(code, step))).values():
            counts[int(choice)] = counts.get(int(choice), 0) + 1
        return Tally(step, counts)

    async def vote_of(self, code: str, step: str, student: str) -> int | None:
        value = await self._call(self.redis.hget(self._votes_key(code, step), student))
        return int(value) if value is not None else None

    async def check_failures(self, client: str) -> None:
        failures = await self._call(self.redis.get(f"{PREFIX}fail:{client}"))
        if int(failures or 0) >= self.limits.failed_joins:
            raise TooManyFailures.after(self.limits.failed_joins, self.limits.failure_window_seconds)

    async def failed(self, client: str) -> None:
        key = f"{PREFIX}fail:{client}"
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, int(self.limits.failure_window_seconds), nx=True)
        await self._call(pipe.execute())
