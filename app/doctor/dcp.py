"""A ``torch.distributed.checkpoint`` (DCP) folder: its ``.metadata`` lists every tensor (name, shape,
dtype, and where each chunk sits in which ``.distcp`` file), and each chunk is one ``torch.save``
output inside a data file.

torch reads ``.metadata`` with ``pickle.load``, which would run any code a file names; here it is read
by an unpickler that knows only the classes DCP's metadata is made of, and each chunk by torch's
weights-only unpickler. A chunked (sharded) tensor is put together from its chunks by their offsets.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch

from app.doctor.formats import ANSI, Described, Found, value_text
from app.doctor.report import CheckpointError, CheckpointTooLarge, Limits
from app.lab.report import dtype_name
from app.langs import Text

_METADATA = "torch.distributed.checkpoint.metadata"
# Every global a .metadata may name (torch 2.x's DCP), and nothing else.
ALLOWED = {
    _METADATA: {
        "Metadata",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "TensorProperties",
        "ChunkStorageMetadata",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
    "builtins": {"set", "frozenset"},
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if name in ALLOWED.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise CheckpointError(
            Text(
                ".metadata names the global {module}.{name}, which DCP's metadata never holds: refused "
                "(reading it would run its code)",
                module=module,
                name=name,
            )
        )


def read_metadata(path: Path, limits: Limits) -> object:
    size = path.stat().st_size
    if size > limits.pickle_max_bytes:
        raise CheckpointTooLarge(
            Text(
                ".metadata of {size} bytes, over the cap of {cap} bytes (MRE_CHECKPOINT_PICKLE_MAX_BYTES)",
                size=size,
                cap=limits.pickle_max_bytes,
            )
        )
    import torch.distributed.checkpoint.filesystem  # noqa: F401  (the classes the unpickler allows)

    try:
        with path.open("rb") as f:
            return _MetadataUnpickler(f).load()
    except CheckpointError:
        raise
    except (RecursionError, MemoryError):
        raise
    except Exception as exc:
        raise CheckpointError(
            Text("not a DCP .metadata: {error}", error=f"{type(exc).__name__}: {str(exc)[:500]}")
        ) from exc


def read_dcp(
    metadata_path: Path, data: list[tuple[Path, str]], limits: Limits, load: bool
) -> tuple[Found, int]:
    """The tensors the .metadata lists (and, with ``load``, their values from the data files), as one
    file's; and the bytes of the folder's files."""
    metadata = read_metadata(metadata_path, limits)
    listed = getattr(metadata, "state_dict_metadata", None)
    if not isinstance(listed, dict):
        raise CheckpointError(Text("not a DCP .metadata: it has no state_dict_metadata"))
    if len(listed) > limits.max_entries:
        raise CheckpointTooLarge(
            Text("{count} tensors; at most {max_entries}", count=len(listed), max_entries=limits.max_entries)
        )
    paths = getattr(metadata, "planner_data", None) or {}
    found = Found()
    values = _read_items(metadata, data) if load else {}
    for fqn, item in listed.items():
        location = (
            [str(k) for k in paths.get(fqn, (fqn,))] if isinstance(paths.get(fqn, ()), tuple) else [fqn]
        )
        location = location or [fqn]
        size = getattr(item, "size", None)
        properties = getattr(item, "properties", None)
        if size is None or properties is None:  # BytesStorageMetadata: a value saved as bytes
            found.values.append((location, values.get(fqn, "<saved as bytes>")))
            continue
        shape = list(size)
        dtype = properties.dtype
        elements = 1
        for d in shape:
            elements *= d
        found.tensors.append(
            (location, Described(shape, dtype_name(dtype), elements, elements * dtype.itemsize))
        )
        if load:
            found.objects[".".join(location)] = values[fqn]
    _state_dicts(found, paths)
    size = metadata_path.stat().st_size + sum(p.stat().st_size for p, _ in data)
    return found, size


def _state_dicts(found: Found, paths: dict) -> None:
    """The dicts of tensors a module could load: each parent whose children are all tensors."""
    children: dict[tuple, list[tuple[str, bool]]] = {}
    for location, _ in found.tensors:
        children.setdefault(tuple(location[:-1]), []).append((location[-1], True))
    for location, _ in found.values:
        children.setdefault(tuple(location[:-1]), []).append((location[-1], False))
    for parent, items in children.items():
        if all(is_tensor for _, is_tensor in items):
            found.state_dicts.append(list(parent))
            dotted = ".".join(parent)
            found.dicts[dotted] = {
                name: found.objects[".".join((*parent, name))]
                for name, _ in items
                if ".".join((*parent, name)) in found.objects
            }
            found.raw[dotted] = tuple(parent)


def _read_items(metadata: object, data: list[tuple[Path, str]]) -> dict[str, object]:
    """Each fqn's value: its chunks read with torch's weights-only unpickler, put together."""
    by_name = {Path(name).name: path for path, name in data}
    listed = metadata.state_dict_metadata  # type: ignore[attr-defined]
    chunks: dict[str, list[tuple[tuple[int, ...], object]]] = {}
    for index, info in (getattr(metadata, "storage_data", None) or {}).items():
        if getattr(info, "transform_descriptors", None):
            raise CheckpointError(
                Text("{fqn}: saved with transforms (compression) the inspector does not read", fqn=index.fqn)
            )
        path = by_name.get(Path(str(info.relative_path)).name)
        if path is None:
            raise CheckpointError(
                Text(
                    "the .metadata puts {fqn} in {file}, which is not here",
                    fqn=index.fqn,
                    file=str(info.relative_path),
                )
            )
        with path.open("rb") as f:
            f.seek(info.offset)
            raw = f.read(info.length)
        try:
            value = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                Text(
                    "{fqn}: torch.load(weights_only=True) refused its bytes in {file}: {error}",
                    fqn=index.fqn,
                    file=str(info.relative_path),
                    error=ANSI.sub("", f"{type(exc).__name__}: {exc}")[:1000],
                )
            ) from exc
        chunks.setdefault(index.fqn, []).append((tuple(index.offset or ()), value))
    out: dict[str, object] = {}
    for fqn, parts in chunks.items():
        item = listed.get(fqn)
        size = getattr(item, "size", None)
        if size is None:
            out[fqn] = (
                value_text(parts[0][1]) if not isinstance(parts[0][1], str | int | float) else parts[0][1]
            )
            continue
        if len(parts) == 1 and list(parts[0][1].shape) == list(size):  # type: ignore[union-attr]
            out[fqn] = parts[0][1]
            continue
        whole = torch.empty(tuple(size), dtype=item.properties.dtype)
        held = torch.zeros(tuple(size), dtype=torch.bool)  # torch.empty leaves the rest uninitialised
        for offsets, chunk in parts:
            where = tuple(slice(o, o + n) for o, n in zip(offsets, chunk.shape, strict=True))  # type: ignore[union-attr]
            whole[where] = chunk
            held[where] = True
        if not bool(held.all()):
            raise CheckpointError(
                Text(
                    "{fqn}: the data files hold {held} of its {count} elements (a chunk is missing)",
                    fqn=fqn,
                    held=int(held.sum()),
                    count=held.numel(),
                )
            )
        out[fqn] = whole
    missing = [
        fqn for fqn, item in listed.items() if fqn not in out and getattr(item, "size", None) is not None
    ]
    if missing:
        raise CheckpointError(Text("the .metadata lists {fqn}, and no data file holds it", fqn=missing[0]))
    return out
