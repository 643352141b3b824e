"""Both brokers, for the tests every class rule runs against: the in-memory one and a RedisBroker on
a real redis-server (emptied before each test). A broker is made inside the event loop that uses
it (redis-py's pool belongs to one loop); an app on either is used inside ``with TestClient(app)``,
whose one loop serves every request."""

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

    def app(self, **settings: Any) -> Any:
        """The whole app, its classes on this kind of broker (Redis emptied first)."""
        from app.main import create_app
        from app.settings import Settings

        if self.kind == "memory":
            return create_app(Settings(**settings))
        import redis

        assert self.redis_url is not None
        with redis.Redis.from_url(self.redis_url) as store:
            store.flushall()
        return create_app(Settings(redis_url=self.redis_url, **settings))

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
