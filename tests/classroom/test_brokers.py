"""The broker a server uses: in this process by default, Redis when MRE_REDIS_URL is set, each with
the class caps of the settings."""

from __future__ import annotations

from app.classroom.broker import MemoryBroker
from app.classroom.brokers import limits_of, make_broker
from app.classroom.redis_broker import RedisBroker
from app.settings import Settings
from tests.support.aio import run


def test_the_caps_are_the_settings_fields() -> None:
    settings = Settings(
        class_max_rooms=1,
        class_max_rooms_per_client=2,
        class_max_students=3,
        class_max_votes=4,
        class_max_streams=5,
        class_max_streams_per_client=6,
        class_expiry_seconds=7.0,
        class_failed_joins_per_minute=8,
    )
    limits = limits_of(settings)
    got = (limits.rooms, limits.rooms_per_client, limits.students, limits.votes, limits.streams)
    more = (limits.streams_per_client, limits.expiry_seconds, limits.failed_joins)
    assert (*got, *more) == (1, 2, 3, 4, 5, 6, 7.0, 8)


def test_in_this_process_unless_redis_is_named() -> None:
    assert isinstance(make_broker(Settings()), MemoryBroker)
    redis = make_broker(Settings(redis_url="redis://127.0.0.1:1/0", class_max_students=9))
    assert isinstance(redis, RedisBroker) and redis.limits.students == 9
    run(redis.close())
