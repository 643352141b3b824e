"""One checkpoint, or the files of a sharded one, examined: read, described, and loaded into a module
when one is given. The one place that tells a single file from a sharded set."""

from __future__ import annotations

from pathlib import Path

from app.doctor.describe import describe
from app.doctor.formats import read
from app.doctor.load import load_into
from app.doctor.report import CheckpointReport, Limits
from app.doctor.shards import is_index, read_shards
from app.doctor.targets import Target


def inspect_checkpoint(
    path: Path, limits: Limits, spec: Target | None = None, at: str | None = None
) -> CheckpointReport:
    """Everything the explorer says about a checkpoint file, and its load into ``spec``'s module."""
    fmt, found, metadata = read(path, limits)
    report = describe(fmt, found, metadata, path.stat().st_size)
    if spec is not None:
        report.load = load_into(path, fmt, found, report, spec, at)
    return report


def inspect_files(
    paths: list[Path], names: list[str], limits: Limits, spec: Target | None = None, at: str | None = None
) -> CheckpointReport:
    """One file, or the files of a sharded checkpoint (its shards and index) read as one."""
    if len(paths) == 1 and not is_index(paths[0], names[0] if names else ""):
        return inspect_checkpoint(paths[0], limits, spec, at)
    return inspect_shards(paths, names, limits, spec, at)


def inspect_shards(
    paths: list[Path], names: list[str], limits: Limits, spec: Target | None, at: str | None
) -> CheckpointReport:
    """The report on a sharded checkpoint, as on one file, with its shards and index checked."""
    fmt, found, metadata, shards = read_shards(paths, names, limits)
    report = describe(fmt, found, metadata, sum(p.stat().st_size for p in paths))
    report.shards = shards
    if spec is not None:
        report.load = load_into(paths[0], fmt, found, report, spec, at)
    return report
