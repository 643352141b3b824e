"""What a set of files is, by their content: checkpoint files (safetensors, torch), a sharded
checkpoint's index, a transformers ``config.json``, a ``torch.distributed.checkpoint`` folder's
``.metadata``, and files that are none of these (a tokenizer, a README), which are left out and named.

``gather`` is for paths on disk (``mre``): a model folder is its files; an index alone brings the
shards it names from beside it. ``classify`` is for any list of files, uploaded or gathered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from app.doctor.formats import LEGACY_MAGIC, ZIP_MAGIC, sniff
from app.doctor.report import CheckpointError, CheckpointTooLarge, Limits
from app.langs import Text

INDEX_SUFFIX = ".index.json"
DCP_METADATA = ".metadata"
CONFIG_MAX_BYTES = 1024**2


@dataclass
class Files:
    weights: list[tuple[Path, str]] = field(default_factory=list)  # (path, name) of each checkpoint file
    index: tuple[Path, str, dict] | None = None  # the index, and its JSON
    config: tuple[Path, str] | None = None  # a transformers config.json
    dcp: tuple[Path, str] | None = None  # a DCP folder's .metadata
    data: list[tuple[Path, str]] = field(default_factory=list)  # the DCP folder's .distcp files
    ignored: list[str] = field(default_factory=list)  # names of files that are none of these
    adapter_config: dict | None = None  # a PEFT adapter_config.json

    @property
    def one(self) -> bool:
        """A single checkpoint file, no index: read as one file."""
        return len(self.weights) == 1 and self.index is None and self.dcp is None


def gather(paths: list[Path]) -> list[Path]:
    """The files ``paths`` stand for on disk: a folder's files (sorted; its sub-folders left out),
    and, for an index given without shards, the shards it names from beside it."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.is_file())
        else:
            out.append(path)
    alone = not any(_checkpoint(_head(p)) for p in out if p.is_file())
    for path in list(out) if alone else []:  # an index without its shards: those beside it
        if path.name.endswith(INDEX_SUFFIX):
            index = _json(path, path.name)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if isinstance(weight_map, dict):
                given = {p.name for p in out}
                for shard in sorted({v for v in weight_map.values() if isinstance(v, str)}):
                    beside = path.parent / shard
                    if shard not in given and "/" not in shard and beside.is_file():
                        out.append(beside)
                        given.add(shard)
    return list(dict.fromkeys(out))


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(16)


def _json(path: Path, name: str) -> object:
    size = path.stat().st_size
    if size > CONFIG_MAX_BYTES * 64:
        raise CheckpointTooLarge(
            Text("{name}: {size} bytes of JSON is not an index or a config", name=name, size=size)
        )
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(
            Text("{name}: not a JSON index or config: {error}", name=name[:200], error=str(exc)[:500])
        ) from exc


def is_json(head: bytes) -> bool:
    """Text that opens a JSON object (safetensors has 8 bytes of header size before its "{")."""
    text = head.lstrip()
    return text[:1] == b"{" and head[8:9] != b"{"


def classify(paths: list[Path], names: list[str], limits: Limits) -> Files:
    files = Files()
    if len(paths) == 1 and not is_json(_head(paths[0])):
        files.weights.append((paths[0], names[0] if names else paths[0].name))
        return files
    metadata = [
        (p, n)
        for p, n in zip(paths, names, strict=True)
        if Path(n).name == DCP_METADATA and _head(p)[:1] == b"\x80"
    ]
    if metadata:
        files.dcp = metadata[0]
    for path, name in zip(paths, names, strict=True):
        if files.dcp is not None and (path, name) == files.dcp:
            continue
        head = _head(path)
        if is_json(head):
            _json_file(files, path, name, limits)
        elif files.dcp is not None and Path(name).name.endswith(".distcp"):
            files.data.append((path, name))
        elif _checkpoint(head):
            files.weights.append((path, name))
        else:
            files.ignored.append(name)
    if not files.weights and files.dcp is None:
        if files.index is not None:
            raise CheckpointError(Text("an index and no shard: send the shard files with it"))
        first = next((p, n) for p, n in zip(paths, names, strict=True) if n in files.ignored)
        try:
            sniff(first[0])
        except CheckpointError as exc:  # what the first file is (empty, an LFS pointer, ...)
            raise CheckpointError(
                Text("no checkpoint among these files; {name}: {error}", name=first[1], error=exc.words)
            ) from exc
        raise CheckpointError(Text("no checkpoint among these files: no safetensors or torch file"))
    return files


def _checkpoint(head: bytes) -> bool:
    return head.startswith((ZIP_MAGIC, LEGACY_MAGIC)) or (len(head) >= 9 and head[8:9] == b"{")


def _json_file(files: Files, path: Path, name: str, limits: Limits) -> None:
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
    data = _json(path, name)
    if isinstance(data, dict) and "weight_map" in data:
        if files.index is not None:
            raise CheckpointError(
                Text(
                    "two index files: {index_name!r} and {name!r}; send one checkpoint at a time",
                    index_name=files.index[1],
                    name=name,
                )
            )
        files.index = (path, name, data)
    elif isinstance(data, dict) and isinstance(data.get("model_type"), str) and files.config is None:
        files.config = (path, name)
    elif isinstance(data, dict) and "peft_type" in data:
        files.adapter_config = data
        files.ignored.append(name)
    elif name.endswith(INDEX_SUFFIX):
        raise CheckpointError(
            Text('{name}: an index is an object with "weight_map": {{key: shard file name}}', name=name)
        )
    else:
        files.ignored.append(name)
