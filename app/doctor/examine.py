"""One checkpoint, or the files of a sharded one, or a model folder, examined: read, described, and
loaded into a module when one is given (or, for a model folder, the model its own config.json
describes). The one place that tells a single file from a sharded set and a DCP folder."""

from __future__ import annotations

from pathlib import Path

from app.doctor.dcp import read_dcp
from app.doctor.describe import describe
from app.doctor.files import Files, classify
from app.doctor.formats import read
from app.doctor.load import Kept, load_into
from app.doctor.report import CheckpointReport, Limits
from app.doctor.shards import read_shards
from app.doctor.targets import Target, read_config
from app.langs import Text


def inspect_checkpoint(
    path: Path,
    limits: Limits,
    spec: Target | None = None,
    at: str | None = None,
    name: str | None = None,
    kept: Kept | None = None,
) -> CheckpointReport:
    """Everything the explorer says about a checkpoint file, and its load into ``spec``'s module;
    ``name`` is the file as the user named it (for the script)."""
    fmt, found, metadata = read(path, limits)
    report = describe(fmt, found, metadata, path.stat().st_size)
    if found.safe_globals:
        report.notes.append(
            dict(
                Text(
                    "read with the allow-list of benign globals: {names} (nothing of the file's code runs; "
                    "{as_dict} read as OrderedDict)",
                    names=", ".join(found.safe_globals),
                    as_dict=", ".join(found.read_as_dict) or "no dict subclass",
                )
            )
        )
    if spec is not None:
        report.load = load_into(path, fmt, found, report, spec, at, (name or str(path),), kept)
    return report


def inspect_files(
    paths: list[Path],
    names: list[str],
    limits: Limits,
    spec: Target | None = None,
    at: str | None = None,
    kept: Kept | None = None,
) -> CheckpointReport:
    """One file, the files of a sharded checkpoint (its shards and index) or of a model folder (with
    its config.json, loaded into when no module is given), or a DCP folder, read as one."""
    names = names or [str(p) for p in paths]
    files = classify(paths, names, limits)
    if spec is None and files.config is not None:
        path, name = files.config
        spec = read_config(path.read_bytes(), name)
    if files.dcp is not None:
        report = _inspect_dcp(files, limits, spec, at, kept)
    elif files.one:
        path, name = files.weights[0]
        report = inspect_checkpoint(path, limits, spec, at, name, kept)
    else:
        report = inspect_shards(files, limits, spec, at, kept)
    if files.ignored:
        report.notes.append(
            dict(Text("not read (no checkpoint, index or config): {names}", names=", ".join(files.ignored)))
        )
    if files.adapter_config is not None:
        base = str(files.adapter_config.get("base_model_name_or_path") or "?")
        report.notes.append(
            dict(
                Text(
                    "adapter_config.json: a PEFT {kind} adapter for the base model {base}; load that "
                    "model, then the adapter with peft",
                    kind=str(files.adapter_config.get("peft_type")),
                    base=base,
                )
            )
        )
    return report


def inspect_shards(
    files: Files, limits: Limits, spec: Target | None, at: str | None, kept: Kept | None = None
) -> CheckpointReport:
    """The report on a sharded checkpoint, as on one file, with its shards and index checked."""
    fmt, found, metadata, shards = read_shards(files, limits)
    paths = [p for p, _ in files.weights]
    size = sum(p.stat().st_size for p in paths) + (files.index[0].stat().st_size if files.index else 0)
    report = describe(fmt, found, metadata, size)
    report.shards = shards
    if spec is not None:
        names = tuple(n for _, n in files.weights)
        report.load = load_into(paths[0], fmt, found, report, spec, at, names, kept)
    return report


def _inspect_dcp(
    files: Files, limits: Limits, spec: Target | None, at: str | None, kept: Kept | None
) -> CheckpointReport:
    assert files.dcp is not None
    path, name = files.dcp
    found, size = read_dcp(path, files.data, limits, load=spec is not None)
    report = describe("torch_dcp", found, {}, size)
    folder = str(Path(name).parent) if Path(name).parent != Path() else "."
    report.notes.append(
        dict(
            Text(
                "a torch.distributed.checkpoint (DCP) folder: its .metadata lists {count} tensors in "
                "{files} data files. To make one torch file of it: "
                "torch.distributed.checkpoint.format_utils.dcp_to_torch_save({folder!r}, 'model.pt')",
                count=len(found.tensors),
                files=len(files.data),
                folder=folder,
            )
        )
    )
    if spec is not None:
        report.load = load_into(path, "torch_dcp", found, report, spec, at, (folder,), kept)
    return report
