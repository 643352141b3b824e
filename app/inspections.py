"""Inspecting an uploaded checkpoint, for the API and the page alike: the feature switch, a bounded
number of inspections at a time (a slot is taken once the upload is complete, so a slow client holds
none), each in a child process under the settings' limits, one temporary directory per upload
removed on every path, and those a killed server left behind removed at the next start."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request

from app.lab import isolated
from app.lab.checkpoints import MIN_TORCH, Limits, PageReport, torch_ok
from app.lab.compare import Comparison
from app.lab.targets import Target
from app.settings import Settings
from app.uploads import FILE_FIELD, Pace, Received, Upload, UploadError, receive

# the routes that take an upload (their own body cap)
PATHS = ("/api/checkpoints", "/checkpoints", "/api/checkpoints/compare")
OTHER_FIELD = "other"  # the part of the second checkpoint, to compare with the first
SLACK = 64 * 1024  # multipart framing and form fields around the file
PAGE_MOST = 200  # tree nodes, values, groups, keys ... the page shows of each; the JSON API has all
PREFIX = "mre-checkpoint-"  # then its server process: mre-checkpoint-<pid>.<start time>-<random>


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
                f"{self.n} checkpoint uploads are in progress on this server, its most"
                " (MRE_CHECKPOINT_UPLOADS); try again in a moment",
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
async def uploaded(request: Request, file_fields: tuple[str, ...] = (FILE_FIELD,)) -> AsyncIterator[Upload]:
    """The request's files on disk while the block runs (several: a sharded checkpoint, or two
    checkpoints to compare); gone afterwards, whatever happened. The cap is on their sum."""
    settings: Settings = request.app.state.settings
    check_available(settings)
    in_progress: InProgress = request.app.state.checkpoint_uploads
    with in_progress.taken():
        directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{owner()}-", dir=settings.checkpoint_tmp_dir))
        try:
            pace = Pace(
                settings.checkpoint_upload_min_bytes_per_second, settings.checkpoint_upload_grace_seconds
            )
            yield await receive(request, directory, settings.checkpoint_max_bytes, pace, file_fields, True)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


async def inspect_json(
    request: Request,
    files: list[Received],
    spec: Target | None = None,
    at: str | None = None,
    shown: int | None = None,
) -> bytes:
    """The report as the child wrote it (JSON), once a slot is free: the upload is complete by now.
    Several files are one sharded checkpoint."""
    settings: Settings = request.app.state.settings
    slots: Slots = request.app.state.checkpoint_slots
    paths, names = _paths(files)
    async with slots.taken():
        return await isolated.inspect_isolated(
            paths[0] if len(paths) == 1 else paths, limits(settings), spec, at, budget(settings), shown, names
        )


def _paths(files: list[Received]) -> tuple[list[Path], list[str]]:
    return [f.path for f in files], [f.filename or f"file {i + 1}" for i, f in enumerate(files)]


async def inspect_page(
    request: Request, files: list[Received], spec: Target | None = None, at: str | None = None
) -> PageReport:
    """What the page shows: cut short to PAGE_MOST of each kind in the child, so the server parses
    and renders a few hundred things, not the 100,000 a file may hold."""
    return PageReport.model_validate_json(await inspect_json(request, files, spec, at, PAGE_MOST))


async def compare_json(
    request: Request, a: list[Received], b: list[Received], shown: int | None = None
) -> bytes:
    """The comparison of two checkpoints (each a file or its shards), from one child."""
    if not a or not b:
        missing = FILE_FIELD if not a else OTHER_FIELD
        raise UploadError(422, f"two checkpoints to compare: send the second in the part named {missing!r}")
    settings: Settings = request.app.state.settings
    (paths_a, names_a), (paths_b, names_b) = _paths(a), _paths(b)
    job = isolated.comparison_job(
        paths_a, names_a, paths_b, names_b, limits(settings), settings.checkpoint_compare_max_elements, shown
    )
    async with request.app.state.checkpoint_slots.taken():
        return await isolated.run_isolated(job, budget(settings))


async def compare_page(request: Request, a: list[Received], b: list[Received]) -> Comparison:
    return Comparison.model_validate_json(await compare_json(request, a, b, PAGE_MOST))


def owner(pid: int | None = None) -> str:
    """A process as upload directories name it: its id and start time, so that a new process given
    a dead one's id (pid 1 in every new container) is not taken for it."""
    pid = pid or os.getpid()
    return f"{pid}.{_started(pid)}"


def _started(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"  # gone (or no /proc): only the id is checked
    return stat.rsplit(")", 1)[1].split()[19]  # starttime, field 22, after the command's name


def remove_stale(tmp_dir: str | None) -> list[Path]:
    """Remove the upload directories of server processes that no longer run (killed, crashed)."""
    removed = []
    for directory in Path(tmp_dir or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        pid, _, started = directory.name.removeprefix(PREFIX).split("-", 1)[0].partition(".")
        if directory.is_dir() and not (pid.isdigit() and _alive(int(pid), started)):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to clean
        return True
    return started == "?" or _started(pid) in ("?", started)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At start: clean what a killed server left, start the inspectors' forkserver in the background,
    stop inspections at once on SIGTERM (a graceful shutdown would wait for them). Children that
    are left at exit are daemons: multiprocessing ends them."""
    settings: Settings = app.state.settings
    if settings.checkpoints:
        remove_stale(settings.checkpoint_tmp_dir)
        threading.Thread(target=isolated.warm_up, name="checkpoint-forkserver", daemon=True).start()
        isolated.kill_children_on_signals()
    yield
