"""An inspection or a comparison for a request: its files, once uploaded, handed to a child process
under the caps (``app.doctor.isolated``) when a slot is free; and what the doctor does at start-up."""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from app.doctor import isolated
from app.doctor.caps import InProgress, Slots, budget, limits
from app.doctor.compare import Comparison
from app.doctor.report import PageReport, UploadError
from app.doctor.targets import Target
from app.doctor.uploads import FILE_FIELD, OTHER_FIELD, PREFIX, Received, check_size, owner, remove_stale
from app.doctor.writer import Written
from app.langs import Text
from app.settings import Settings

PAGE_MOST = 200  # tree nodes, values, groups, keys ... the page shows of each; the JSON API has all


@dataclass(frozen=True)
class Inspector:
    """What the doctor's routes run inspections with: the caps from the app's settings, and the app's
    slots (inspections at a time) and uploads in progress. Made once, by the composition root."""

    settings: Settings
    slots: Slots
    uploads: InProgress

    @classmethod
    def of(cls, settings: Settings) -> Inspector:
        return cls(
            settings,
            Slots(settings.checkpoint_slots, settings.checkpoint_wait_seconds),
            InProgress(settings.checkpoint_uploads),
        )

    async def inspect_json(
        self,
        files: list[Received],
        spec: Target | None = None,
        at: str | None = None,
        shown: int | None = None,
    ) -> bytes:
        """The report as the child wrote it (JSON), once a slot is free: the upload is complete by now.
        Several files are one sharded checkpoint."""
        check_size(files, self.settings.checkpoint_max_bytes, Text("the checkpoint"))
        paths, names = _paths(files)
        async with self.slots.taken():
            return await isolated.inspect_isolated(
                paths[0] if len(paths) == 1 else paths,
                limits(self.settings),
                spec,
                at,
                budget(self.settings),
                shown,
                names,
            )

    async def inspect_page(
        self, files: list[Received], spec: Target | None = None, at: str | None = None
    ) -> PageReport:
        """What the page shows: cut short to PAGE_MOST of each kind in the child, so the server parses
        and renders a few hundred things, not the 100,000 a file may hold."""
        return PageReport.model_validate_json(await self.inspect_json(files, spec, at, PAGE_MOST))

    async def compare_json(self, a: list[Received], b: list[Received], shown: int | None = None) -> bytes:
        """The comparison of two checkpoints (each a file or its shards), from one child."""
        if not a or not b:
            missing = FILE_FIELD if not a else OTHER_FIELD
            text = Text(
                "two checkpoints to compare: send the second in the part named {missing!r}", missing=missing
            )
            raise UploadError(422, text)
        check_size(a, self.settings.checkpoint_max_bytes, Text("the first checkpoint"))
        check_size(b, self.settings.checkpoint_max_bytes, Text("the second checkpoint"))
        (paths_a, names_a), (paths_b, names_b) = _paths(a), _paths(b)
        cap = self.settings.checkpoint_compare_max_elements
        job = isolated.comparison_job(paths_a, names_a, paths_b, names_b, limits(self.settings), cap, shown)
        async with self.slots.taken():
            return await isolated.run_isolated(job, budget(self.settings))

    async def compare_page(self, a: list[Received], b: list[Received]) -> Comparison:
        return Comparison.model_validate_json(await self.compare_json(a, b, PAGE_MOST))

    async def fixed_file(
        self, files: list[Received], spec: Target | None, at: str | None
    ) -> tuple[Path, Written]:
        """The fixed checkpoint, proven and written by a child into a folder of its own (the caller
        removes it with ``discard`` once sent); refused (409) when no fix makes every tensor load."""
        check_size(files, self.settings.checkpoint_max_bytes, Text("the checkpoint"))
        paths, names = _paths(files)
        folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{owner()}-", dir=self.settings.checkpoint_tmp_dir))
        out = folder / "fixed.safetensors"
        job = isolated.fixing_job(paths, names, limits(self.settings), spec, at, out)
        try:
            async with self.slots.taken():
                body = await isolated.run_isolated(job, budget(self.settings))
        except BaseException:
            discard(out)
            raise
        return out, Written.model_validate_json(body)


def discard(path: Path) -> None:
    """A fixed file and its folder, once sent."""
    shutil.rmtree(path.parent, ignore_errors=True)


def _paths(files: list[Received]) -> tuple[list[Path], list[str]]:
    return [f.path for f in files], [f.filename or f"file {i + 1}" for i, f in enumerate(files)]


def start(settings: Settings) -> None:
    """At start: clean what a killed server left, start the inspectors' forkserver in the background
    (with the architectures' imports where they are on), stop inspections at once on SIGTERM (a
    graceful shutdown would wait for them). Children that are left at exit are daemons:
    multiprocessing ends them."""
    if settings.checkpoints:
        remove_stale(settings.checkpoint_tmp_dir)
        if settings.architectures:  # inspections into an architecture: its imports done once
            isolated.preload_architectures()
        threading.Thread(target=isolated.warm_up, name="checkpoint-forkserver", daemon=True).start()
        isolated.kill_children_on_signals()
