"""An inspection or a comparison for a request: its files, once uploaded, handed to a child process
under the caps (``app.doctor.isolated``) when a slot is free; and what the doctor does at start-up."""

from __future__ import annotations

import threading
from pathlib import Path

from starlette.requests import Request

from app.doctor import isolated
from app.doctor.caps import Slots, budget, limits
from app.doctor.compare import Comparison
from app.doctor.report import PageReport, UploadError
from app.doctor.targets import Target
from app.doctor.uploads import FILE_FIELD, OTHER_FIELD, Received, remove_stale
from app.langs import Text
from app.settings import Settings

PAGE_MOST = 200  # tree nodes, values, groups, keys ... the page shows of each; the JSON API has all


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
        raise UploadError(
            422,
            Text(
                "two checkpoints to compare: send the second in the part named {missing!r}", missing=missing
            ),
        )
    settings: Settings = request.app.state.settings
    (paths_a, names_a), (paths_b, names_b) = _paths(a), _paths(b)
    job = isolated.comparison_job(
        paths_a, names_a, paths_b, names_b, limits(settings), settings.checkpoint_compare_max_elements, shown
    )
    async with request.app.state.checkpoint_slots.taken():
        return await isolated.run_isolated(job, budget(settings))


async def compare_page(request: Request, a: list[Received], b: list[Received]) -> Comparison:
    return Comparison.model_validate_json(await compare_json(request, a, b, PAGE_MOST))


def start(settings: Settings) -> None:
    """At start: clean what a killed server left, start the inspectors' forkserver in the background,
    stop inspections at once on SIGTERM (a graceful shutdown would wait for them). Children that
    are left at exit are daemons: multiprocessing ends them."""
    if settings.checkpoints:
        remove_stale(settings.checkpoint_tmp_dir)
        threading.Thread(target=isolated.warm_up, name="checkpoint-forkserver", daemon=True).start()
        isolated.kill_children_on_signals()
