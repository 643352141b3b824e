"""Inspecting an uploaded checkpoint, for the API and the page alike: the feature switch, a bounded
number of inspections at a time, one temporary directory per upload removed on every path."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app.lab.checkpoints import MIN_TORCH, CheckpointReport, Limits, inspect_checkpoint, torch_ok
from app.lab.spec import LabSpec
from app.settings import Settings
from app.uploads import Upload, UploadError, receive

PATHS = ("/api/checkpoints", "/checkpoints")  # the routes that take an upload (their own body cap)
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
                raise UploadError(503, f"{self.n} checkpoint inspections are running; try again in a moment")
            await asyncio.sleep(0.05)
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
    )


def body_caps(settings: Settings) -> dict[str, int]:
    return dict.fromkeys(PATHS, settings.checkpoint_max_bytes + SLACK)


def check_available(settings: Settings) -> None:
    """Refuse at once where the inspector is off or this torch is too old for it."""
    if not settings.checkpoints:
        raise UploadError(404, "checkpoint inspection is turned off on this server (MRE_CHECKPOINTS=false)")
    if not torch_ok():
        raise UploadError(
            503,
            f"checkpoint inspection needs torch >= {'.'.join(map(str, MIN_TORCH))}"
            " (weights-only unpickler fixes for CVE-2025-32434 and CVE-2026-24747)",
        )


@asynccontextmanager
async def uploaded(request: Request) -> AsyncIterator[tuple[Path, Upload]]:
    """The request's file on disk while the block runs; gone afterwards, whatever happened."""
    settings: Settings = request.app.state.settings
    check_available(settings)
    slots: Slots = request.app.state.checkpoint_slots
    async with slots.taken():
        directory = Path(tempfile.mkdtemp(prefix="mre-checkpoint-", dir=settings.checkpoint_tmp_dir))
        try:
            path = directory / "upload"
            yield path, await receive(request, path, settings.checkpoint_max_bytes)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


async def inspect(
    request: Request, path: Path, spec: LabSpec | None = None, at: str | None = None
) -> CheckpointReport:
    """Off the event loop: torch.load and the header parse are blocking work."""
    return await run_in_threadpool(inspect_checkpoint, path, limits(request.app.state.settings), spec, at)
