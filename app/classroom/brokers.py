"""The broker a server uses: in this process by default, Redis when MRE_REDIS_URL is set."""

from __future__ import annotations

from app.classroom.broker import Limits, MemoryBroker
from app.settings import Settings


def limits_of(settings: Settings) -> Limits:
    return Limits(
        rooms=settings.class_max_rooms,
        rooms_per_client=settings.class_max_rooms_per_client,
        students=settings.class_max_students,
        joins_per_client=settings.class_max_joins_per_client,
        votes=settings.class_max_votes,
        streams=settings.class_max_streams,
        streams_per_client=settings.class_max_streams_per_client,
        expiry_seconds=settings.class_expiry_seconds,
        failed_joins=settings.class_failed_joins_per_minute,
    )


def make_broker(settings: Settings):
    if settings.redis_url:
        from app.classroom.redis_broker import RedisBroker  # redis-py only where it is used

        limits = limits_of(settings)
        return RedisBroker(
            settings.redis_url, limits, settings.class_redis_connections, settings.class_redis_wait_seconds
        )
    return MemoryBroker(limits_of(settings))
