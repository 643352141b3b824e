"""The doctor's caps: what one inspection may spend and how many run at a time, read from Settings
in one place for the web routes and ``mre`` alike (no web import here)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from app.doctor import isolated
from app.doctor.formats import MIN_TORCH, torch_ok
from app.doctor.report import Limits, UploadError
from app.langs import Text
from app.settings import Settings

# the routes that take an upload (their own body cap); those that may take two checkpoints, twice it
PATHS = ("/api/checkpoints", "/api/checkpoints/fix", "/checkpoints/fix")
TWO = ("/checkpoints", "/api/checkpoints/compare")
SLACK = 64 * 1024  # multipart framing and form fields around the file


class Slots:
    """At most ``n`` inspections at a time; a request waits up to ``wait`` seconds for one.

    A counter polled by the event loop rather than an asyncio.Semaphore: it is not bound to the
    loop it was first used in (each test client runs its own).
    """

    def __init__(self, n: int, wait: float) -> None:
        self.n, self.wait, self.active = n, wait, 0

    @asynccontextmanager
    async def taken(self) -> AsyncIterator[None]:
        deadline = time.monotonic() + self.wait
        while self.active >= self.n:
            if time.monotonic() > deadline:
                raise UploadError(
                    503, Text("{n} checkpoint inspections are running; try again in a moment", n=self.n)
                )
            await asyncio.sleep(0.05)
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


class InProgress:
    """At most ``n`` uploads on disk at a time, from their first byte to their answer; one more is
    refused at once (a slow client must not make others wait, nor fill the disk)."""

    def __init__(self, n: int) -> None:
        self.n, self.active = n, 0

    @contextmanager
    def taken(self) -> Iterator[None]:
        if self.active >= self.n:
            raise UploadError(
                503,
                Text(
                    "{n} checkpoint uploads are in progress on this server, its most "
                    "(MRE_CHECKPOINT_UPLOADS); try again in a moment",
                    n=self.n,
                ),
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


def limits(settings: Settings) -> Limits:
    return Limits(
        max_bytes=settings.checkpoint_max_bytes,
        header_max_bytes=settings.checkpoint_header_max_bytes,
        max_entries=settings.checkpoint_max_entries,
        legacy_max_bytes=settings.checkpoint_legacy_max_bytes,
        pickle_max_bytes=settings.checkpoint_pickle_max_bytes,
    )


def budget(settings: Settings) -> isolated.Budget:
    return isolated.Budget(
        memory_bytes=settings.checkpoint_memory_bytes,
        cpu_seconds=settings.checkpoint_cpu_seconds,
        wall_seconds=settings.checkpoint_wall_seconds,
        report_max_bytes=settings.checkpoint_report_max_bytes,
        threads=settings.torch_threads,
    )


def body_caps(settings: Settings) -> dict[str, int]:
    one = dict.fromkeys(PATHS, settings.checkpoint_max_bytes + SLACK)
    return one | dict.fromkeys(TWO, 2 * settings.checkpoint_max_bytes + SLACK)


def check_available(settings: Settings) -> None:
    """Refuse at once where the inspector is off or this torch is too old for it."""
    if not settings.checkpoints:
        raise UploadError(
            404, Text("checkpoint inspection is turned off on this server (MRE_CHECKPOINTS=false)")
        )
    if not torch_ok():
        raise UploadError(
            503,
            Text(
                "checkpoint inspection needs torch >= {names} (weights-only unpickler fixes for "
                "CVE-2025-32434 and CVE-2026-24747)",
                names=".".join(map(str, MIN_TORCH)),
            ),
        )
