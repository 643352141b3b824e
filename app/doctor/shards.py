"""A sharded checkpoint (``save_pretrained(max_shard_size=...)``): its shards read as one state_dict,
and its index (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``) checked as the
format implies: every key the index names is in the shard it names, once; every key a shard holds
is in the index; ``metadata.total_size`` is the bytes of the tensors present.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.doctor.formats import Found, read
from app.doctor.report import CheckpointError, CheckpointTooLarge, Limits, ShardFile, ShardProblem, Shards
from app.langs import Text

MAX_SHARDS = 256  # shards of one checkpoint, its index beside them (a 405B model in bfloat16: 191 of 5 GB)


def is_index(path: Path, name: str) -> bool:
    """Named .json, or starting with "{" where a safetensors file has the 8 bytes of its header's
    length before its own "{"."""
    with path.open("rb") as f:
        head = f.read(9)
    return name.endswith(".json") or (head[:1] == b"{" and head[8:9] != b"{")


def _index(path: Path, name: str, limits: Limits) -> dict | None:
    """The index's JSON, if ``path`` is one."""
    if not is_index(path, name):
        return None
    size = path.stat().st_size
    if size > limits.header_max_bytes:
        raise CheckpointTooLarge(
            Text(
                "{name}: an index of {size} bytes, over the cap of {header_max_bytes}",
                name=name,
                size=size,
                header_max_bytes=limits.header_max_bytes,
            )
        )
    try:
        index = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:
        error = str(exc)[:2000]
        raise CheckpointError(
            Text("{name}: not a JSON index: {error}", name=name[:200], error=error)
        ) from exc
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
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


def read_shards(
    paths: list[Path], names: list[str], limits: Limits
) -> tuple[str, Found, dict[str, str], Shards]:
    """The shards' tensors as one file's (the first shard to hold a key keeps it), and the check."""
    size = sum(p.stat().st_size for p in paths)
    if size > limits.max_bytes:
        raise CheckpointTooLarge(
            Text(
                "{size} bytes in all, over the cap of {max_bytes} bytes",
                size=size,
                max_bytes=limits.max_bytes,
            )
        )
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise CheckpointError(
            Text("two files are called {twice!r}: the index names shards by file name", twice=twice[0])
        )
    index, index_name = None, None
    shards: list[tuple[Path, str]] = []
    for path, name in zip(paths, names, strict=True):
        found = _index(path, name, limits)
        if found is None:
            shards.append((path, name))
        elif index is not None:
            raise CheckpointError(
                Text(
                    "two index files: {index_name!r} and {name!r}; send one checkpoint at a time",
                    index_name=index_name,
                    name=name,
                )
            )
        else:
            index, index_name = found, name
    if not shards:
        raise CheckpointError(Text("an index and no shard: send the shard files with it"))
    if len(shards) > MAX_SHARDS:
        raise too_many_shards(len(shards))
    merged = Found(state_dicts=[[]])
    merged.dicts[""] = {}
    files, formats, metadata = [], set(), {}
    holder: dict[str, str] = {}  # key -> the shard that holds it first
    problems: list[ShardProblem] = []
    entries = 0
    for path, name in shards:
        fmt, found, meta = read(path, limits)
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
        files.append(ShardFile(name=name, format=fmt, tensors=len(tops), bytes=sum(d.bytes for _, d in tops)))
        for location, described in tops:
            key = location[0]
            if key in holder:
                problems.append(
                    ShardProblem(kind="in_two_shards", key=key, detail=f"{holder[key]} and {name}")
                )
                continue
            holder[key] = name
            merged.tensors.append((location, described))
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
        problems += _check(index, holder, {n for _, n in shards}, tensor_bytes)
    report = Shards(
        index=index_name,
        files=files,
        total_size=index["total_size"] if index else None,
        tensor_bytes=tensor_bytes,
        problems=problems,
    )
    return formats.pop(), merged, metadata, report


def _check(index: dict, holder: dict[str, str], sent: set[str], tensor_bytes: int) -> list[ShardProblem]:
    weight_map: dict[str, str] = index["weight_map"]
    problems = []
    for file in sorted(set(weight_map.values()) - sent):
        count = sum(1 for v in weight_map.values() if v == file)
        problems.append(
            ShardProblem(kind="shard_not_uploaded", key=file, detail=f"the index puts {count} keys in it")
        )
    for key, file in weight_map.items():
        if key not in holder:
            where = "which was not sent" if file not in sent else "which does not hold it"
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
    if total is not None and total != tensor_bytes:
        problems.append(
            ShardProblem(
                kind="total_size",
                key="",
                detail=f"the index says total_size {total}; the tensors present take {tensor_bytes} bytes",
            )
        )
    return problems
