"""The doctor's caps: its limits read from Settings one field each, inspections and uploads at a
time at their boundary (n taken, the n+1th waits or is refused), the feature switch."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from app.doctor import caps
from app.doctor.report import UploadError
from app.settings import Settings
from tests.support.aio import run

# Every cap the doctor reads, as a Settings field, with a value that is no default.
FIELDS = {
    "checkpoint_max_bytes": 11,
    "checkpoint_header_max_bytes": 12,
    "checkpoint_max_entries": 13,
    "checkpoint_legacy_max_bytes": 14,
    "checkpoint_pickle_max_bytes": 15,
    "checkpoint_memory_bytes": 16,
    "checkpoint_cpu_seconds": 17,
    "checkpoint_wall_seconds": 18.0,
    "checkpoint_report_max_bytes": 19,
    "torch_threads": 3,
}


def test_the_limits_and_budget_are_the_settings_fields() -> None:
    settings = Settings(**FIELDS)
    limits, budget = dataclasses.asdict(caps.limits(settings)), dataclasses.asdict(caps.budget(settings))
    assert limits == {
        "max_bytes": 11,
        "header_max_bytes": 12,
        "max_entries": 13,
        "legacy_max_bytes": 14,
        "pickle_max_bytes": 15,
    }
    assert budget == {
        "memory_bytes": 16,
        "cpu_seconds": 17,
        "wall_seconds": 18.0,
        "report_max_bytes": 19,
        "threads": 3,
    }
    # a route that may take two checkpoints (a comparison) takes twice the bytes
    assert caps.body_caps(settings) == {
        "/api/checkpoints": 11 + caps.SLACK,
        "/api/checkpoints/fix": 11 + caps.SLACK,
        "/checkpoints/fix": 11 + caps.SLACK,
        "/checkpoints": 22 + caps.SLACK,
        "/api/checkpoints/compare": 22 + caps.SLACK,
    }


def test_n_uploads_at_a_time_and_the_next_refused_at_once() -> None:
    uploads = caps.InProgress(2)
    with uploads.taken(), uploads.taken():
        with pytest.raises(UploadError) as refused, uploads.taken():
            pass
        assert refused.value.status == 503 and "MRE_CHECKPOINT_UPLOADS" in refused.value.message
    with uploads.taken():  # both slots free again
        assert uploads.active == 1


def test_n_inspections_at_a_time_and_the_next_waits_then_503() -> None:
    async def scenario() -> None:
        slots = caps.Slots(1, wait=0.2)
        released = asyncio.Event()

        async def holder() -> None:
            async with slots.taken():
                await released.wait()

        task = asyncio.create_task(holder())
        await asyncio.sleep(0)
        with pytest.raises(UploadError) as refused:
            async with slots.taken():
                pass
        assert refused.value.status == 503
        released.set()
        await task
        async with slots.taken():  # the slot came back
            assert slots.active == 1

    run(scenario())


def test_the_switch_and_the_torch_floor() -> None:
    with pytest.raises(UploadError) as off:
        caps.check_available(Settings(checkpoints=False))
    assert off.value.status == 404 and "MRE_CHECKPOINTS" in off.value.message
    caps.check_available(Settings())  # this torch is new enough
