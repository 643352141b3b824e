"""Both brokers, for the tests every class rule runs against: the in-memory one and a RedisBroker on
a real redis-server (emptied before each test). A broker is made inside the event loop that uses
it (redis-py's pool belongs to one loop)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from app.classroom.broker import Broker, Limits, MemoryBroker
from tests.support.aio import run

BROKERS = ["memory", "redis"]


class Brokers:
    """Makes the broker of one kind, with some limits changed, and runs a scenario on it."""

    def __init__(self, kind: str, redis_url: str | None) -> None:
        self.kind, self.redis_url = kind, redis_url

    def make(self, **limits: Any) -> Broker:
        chosen = replace(Limits(), **limits)
        if self.kind == "memory":
            return MemoryBroker(chosen)
        from app.classroom.redis_broker import RedisBroker

        assert self.redis_url is not None
        return RedisBroker(self.redis_url, chosen)

    def run(self, scenario: Callable[[Broker], Awaitable[None]], **limits: Any) -> None:
        async def main() -> None:
            broker = self.make(**limits)
            if self.kind == "redis":
                await broker.redis.flushall()  # type: ignore[attr-defined]
            try:
                await scenario(broker)
            finally:
                await broker.close()

        run(main())
