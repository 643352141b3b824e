"""A sharded checkpoint (``save_pretrained(max_shard_size=...)``): its shards read as one state_dict,
and its index (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``) checked as the
format implies: every key the index names is in the shard it names, once; every key a shard holds
is in the index; ``metadata.total_size`` is the bytes of the tensors present, shared storage (tied
weights in a torch shard) counted once, as transformers and huggingface_hub count it.
"""

from __future__ import annotations

from pathlib import Path

from app.doctor.files import Files
from app.doctor.formats import Found, read
from app.doctor.report import CheckpointError, CheckpointTooLarge, Limits, ShardFile, ShardProblem, Shards
from app.langs import Text

MAX_SHARDS = 256  # shards of one checkpoint, its index beside them (a 405B model in bfloat16: 191 of 5 GB)


def _index(name: str, index: dict, limits: Limits) -> dict:
    """The index's weight map and total size, checked."""
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(
            Text('{name}: an index is an object with "weight_map": {{key: shard file name}}', name=name)
        )
    if len(weight_map) > limits.max_entries:
        raise CheckpointTooLarge(
            Text(
                "{name}: {count} keys; at most {max_entries}",
                name=name,
                count=len(weight_map),
                max_entries=limits.max_entries,
            )
        )
    metadata = index.get("metadata") or {}
    total = metadata.get("total_size") if isinstance(metadata, dict) else None
    if total is not None and (type(total) is not int or total < 0):
        raise CheckpointError(
            Text(
                "{name}: metadata.total_size must be a non-negative integer, not {total!r}",
                name=name,
                total=total,
            )
        )
    return {"weight_map": weight_map, "total_size": total}


def too_many_shards(count: int) -> CheckpointTooLarge:
    return CheckpointTooLarge(
        Text(
            "{count} shards; a sharded checkpoint has at most {most}, and its index",
            count=count,
            most=MAX_SHARDS,
        )
    )


def _read_shard(path: Path, name: str, limits: Limits) -> tuple[str, Found, dict[str, str]]:
    """One shard, read; a refusal names the shard (a truncated one among eight)."""
    try:
        return read(path, limits)
    except CheckpointError as exc:
        raise type(exc)(Text("{name}: {error}", name=name, error=exc.words), status=exc.status) from exc


def read_shards(files: Files, limits: Limits) -> tuple[str, Found, dict[str, str], Shards]:
    """The shards' tensors as one file's (the first shard to hold a key keeps it), and the check."""
    paths = [p for p, _ in files.weights]
    names = [n for _, n in files.weights]
    if len(paths) > MAX_SHARDS:  # the index is not among them (Files told it apart)
        raise too_many_shards(len(paths))
    size = sum(p.stat().st_size for p in paths)
    if size > limits.max_bytes:
        raise CheckpointTooLarge(
            Text(
                "{size} bytes in all, over the cap of {max_bytes} bytes",
                size=size,
                max_bytes=limits.max_bytes,
            )
        )
    base = [Path(n).name for n in names]
    if len(set(base)) != len(base):
        twice = sorted({n for n in base if base.count(n) > 1})
        raise CheckpointError(
            Text("two files are called {twice!r}: the index names shards by file name", twice=twice[0])
        )
    index = _index(files.index[1], files.index[2], limits) if files.index is not None else None
    if not paths:
        raise CheckpointError(Text("an index and no shard: send the shard files with it"))
    merged = Found(state_dicts=[[]])
    merged.dicts[""] = {}
    shard_files, formats, metadata = [], set(), {}
    holder: dict[str, str] = {}  # key -> the shard that holds it first
    problems: list[ShardProblem] = []
    entries = 0
    storages: set[tuple] = set()
    storage_bytes = unique_bytes = 0  # what an index may count: each storage (or its tensor) once
    for path, name in zip(paths, base, strict=True):
        fmt, found, meta = _read_shard(path, name, limits)
        formats.add(fmt)
        metadata.update(meta)
        tops = [t for t in found.tensors if len(t[0]) == 1]
        if fmt != "safetensors" and found.state_dicts != [[]]:
            raise CheckpointError(
                Text("{name}: a shard is one flat dict of tensors; this file holds other things", name=name)
            )
        entries += len(tops)
        if entries > limits.max_entries:
            raise CheckpointTooLarge(
                Text("more than {max_entries} tensors in the shards", max_entries=limits.max_entries)
            )
        shard_files.append(
            ShardFile(name=name, format=fmt, tensors=len(tops), bytes=sum(d.bytes for _, d in tops))
        )
        for location, described in tops:
            key = location[0]
            if key in holder:
                problems.append(
                    ShardProblem(kind="in_two_shards", key=key, detail=f"{holder[key]} and {name}")
                )
                continue
            holder[key] = name
            merged.tensors.append((location, described))
            if described.storage is None:
                storage_bytes += described.bytes
                unique_bytes += described.bytes
            elif (name, described.storage) not in storages:
                storages.add((name, described.storage))
                storage_bytes += described.storage[1]
                unique_bytes += described.bytes
            if fmt == "safetensors":
                merged.sources[key] = path
            else:
                merged.dicts[""][key] = found.objects[key]
                merged.objects[key] = found.objects[key]
    if len(formats) > 1:
        raise CheckpointError(
            Text("the shards mix formats ({names}); a checkpoint uses one", names=", ".join(sorted(formats)))
        )
    tensor_bytes = sum(d.bytes for _, d in merged.tensors)
    if index is not None:
        sent = set(base)
        problems += _check(index, holder, sent, (tensor_bytes, unique_bytes, storage_bytes))
        merged.absent = {k: f for k, f in index["weight_map"].items() if f not in sent and k not in holder}
    report = Shards(
        index=files.index[1] if files.index else None,
        files=shard_files,
        total_size=index["total_size"] if index else None,
        tensor_bytes=tensor_bytes,
        problems=problems,
    )
    return formats.pop(), merged, metadata, report


def _check(
    index: dict, holder: dict[str, str], sent: set[str], sizes: tuple[int, int, int]
) -> list[ShardProblem]:
    weight_map: dict[str, str] = index["weight_map"]
    problems = []
    for file in sorted(set(weight_map.values()) - sent):
        count = sum(1 for v in weight_map.values() if v == file)
        problems.append(
            ShardProblem(
                kind="shard_not_uploaded",
                key=file,
                detail=f"the index puts {count} keys in it, and it is not here",
            )
        )
    for key, file in weight_map.items():
        if key not in holder:
            where = "which is not here" if file not in sent else "which does not hold it"
            problems.append(
                ShardProblem(kind="missing_from_shards", key=key, detail=f"the index says {file}, {where}")
            )
        elif holder[key] != file:
            problems.append(
                ShardProblem(
                    kind="wrong_shard", key=key, detail=f"the index says {file}; it is in {holder[key]}"
                )
            )
    for key, file in holder.items():
        if key not in weight_map:
            problems.append(ShardProblem(kind="not_in_index", key=key, detail=f"in {file}"))
    total = index["total_size"]
    # Each key's bytes (older savers), each storage's tensor once or each storage's bytes once
    # (transformers' and huggingface_hub's, which count tied weights once): any of them agrees.
    if total is not None and total not in sizes:
        problems.append(
            ShardProblem(
                kind="total_size",
                key="",
                detail=f"the index says total_size {total}; the tensors present take {sizes[0]} bytes "
                f"({sizes[1]} with shared storage counted once)",
            )
        )
    return problems
