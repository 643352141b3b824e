"""What is inside a checkpoint file, read safely, and what torch says when it is loaded into a module.

Formats: safetensors (its JSON header read directly: no tensor byte is touched), torch's zip format
(``torch.load(weights_only=True, mmap=True)``: tensors stay mapped on disk and only the ones a module
takes are ever read) and torch's legacy format (weights_only, read whole: it cannot be mapped).
Pickles only ever go through torch's weights-only unpickler, which refuses anything but tensors
and plain containers, so a checkpoint can never run code here.
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from torch import nn

from app.lab.diagnosis import Diagnosis, diagnose
from app.lab.inspect import dtype_name
from app.lab.spec import LabSpec
from app.lab.targets import Target, target_module

# torch.load(weights_only=True) got the fixes for CVE-2025-32434 in 2.6 and CVE-2026-24747 in 2.10.
MIN_TORCH = (2, 10)
# The 14 bytes torch's legacy format starts with: a pickled magic number.
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
ZIP_MAGIC = b"PK\x03\x04"
# Every dtype code safetensors 0.8 reads and writes (its Rust ``Dtype`` enum), with its bits per
# element and torch's dtype for it where torch has one with the same elements. A code torch lacks
# (the 6-bit floats) is still described, from its size; F4 is torch's float4_e2m1fn_x2 two at a time.
SAFETENSORS_DTYPES: dict[str, tuple[int, torch.dtype | None]] = {
    "BOOL": (8, torch.bool),
    "F4": (4, None),
    "F6_E2M3": (6, None),
    "F6_E3M2": (6, None),
    "U8": (8, torch.uint8),
    "I8": (8, torch.int8),
    "F8_E5M2": (8, torch.float8_e5m2),
    "F8_E4M3": (8, torch.float8_e4m3fn),
    "F8_E8M0": (8, torch.float8_e8m0fnu),
    "F8_E4M3FNUZ": (8, torch.float8_e4m3fnuz),
    "F8_E5M2FNUZ": (8, torch.float8_e5m2fnuz),
    "I16": (16, torch.int16),
    "U16": (16, torch.uint16),
    "F16": (16, torch.float16),
    "BF16": (16, torch.bfloat16),
    "I32": (32, torch.int32),
    "U32": (32, torch.uint32),
    "F32": (32, torch.float32),
    "C64": (64, torch.complex64),
    "F64": (64, torch.float64),
    "I64": (64, torch.int64),
    "U64": (64, torch.uint64),
}
MAX_DIM = 2**63 - 1  # safetensors and torch keep each dimension in 64 bits
MAX_DIMS = 64  # torch's most dimensions: with each below 2**63 a product prints in under 1300 digits
MAX_DEPTH = 32  # nesting of dicts and lists in a torch checkpoint
TREE_DEPTH = 32  # module-path segments in the tree; deeper ones stay joined in the last node
VALUE_CHARS = 120  # a non-tensor value is shown this long at most
SHARED_NAMES = 8  # a tensor's shared_with lists this many of its group; `shared` lists them all
NESTED_SHAPES = 64  # a nested tensor's component shapes listed


class CheckpointError(ValueError):
    """A file that cannot be inspected; the message says why (torch's own words where it refused)."""

    status = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CheckpointTooLarge(CheckpointError):
    status = 413


def torch_ok(version: str = torch.__version__) -> bool:
    major, minor = (int(part) for part in version.split("+")[0].split(".")[:2])
    return (major, minor) >= MIN_TORCH


@dataclass(frozen=True)
class Limits:
    max_bytes: int  # the file, and what a zip declares once unpacked
    header_max_bytes: int  # a safetensors JSON header
    max_entries: int  # tensors and values listed, zip members (and twice that in dicts and lists)
    legacy_max_bytes: int = 1024**3  # the legacy format is read whole into memory
    pickle_max_bytes: int = 64 * 1024**2  # a torch zip's data.pkl: the structure, not the tensors


class TensorEntry(BaseModel):
    location: list[str] = Field(description="Keys from the top of the file down to the tensor.")
    name: str = Field(description="The location joined with dots, e.g. model.linear.weight.")
    shape: list[int]
    dtype: str
    elements: int
    bytes: int = Field(description="Bytes the tensor's data takes (a sparse tensor: its indices and values).")
    shared_with: list[str] = Field(
        default_factory=list,
        description=f"Other tensors on the same storage (tied weights, views): the first {SHARED_NAMES};"
        " `shared[shared_group]` lists the whole group.",
    )
    shared_group: int | None = Field(None, description="Index in the report's `shared` of its group.")
    layout: str = Field("strided", description="strided, sparse_coo, sparse_csr, ..., nested or jagged.")
    nested_shapes: list[list[int]] | None = Field(
        None, description=f"A nested tensor's components' shapes (the first {NESTED_SHAPES})."
    )


class ValueEntry(BaseModel):
    location: list[str]
    name: str
    type: str = Field(examples=["int"])
    value: str = Field(description="repr(), cut short.")


class TreeNode(BaseModel):
    name: str = Field(description="One segment of a module path, e.g. linear.")
    path: str
    tensors: int
    elements: int
    bytes: int
    dtype: str | None = Field(None, description="A tensor's dtype, on leaves.")
    shape: list[int] | None = None
    children: list[TreeNode] = Field(default_factory=list)


class DtypeTotal(BaseModel):
    tensors: int
    elements: int
    bytes: int


class LoadOutcome(BaseModel):
    spec: LabSpec | None = Field(None, description="The lab module it was loaded into (or none).")
    architecture: str | None = Field(
        None, description="The architecture it was loaded into (GET /api/architectures), built on meta."
    )
    state_dict: str = Field(description="Where in the file the loaded state_dict is ('' for the top).")
    strict: str = Field(description='"ok", or torch\'s refusal of load_state_dict(state), type: message.')
    non_strict: str = Field(description="The same with strict=False: size mismatches still refuse.")
    missing_keys: list[str] = Field(description="The module's keys the file lacks (strict=False).")
    unexpected_keys: list[str] = Field(description="The file's keys the module lacks (strict=False).")
    size_mismatches: list[dict[str, str | list[int]]] = Field(
        description="Keys in both with other shapes: key, checkpoint, module."
    )
    diagnosis: Diagnosis | None = Field(
        None,
        description="Why it does not load, cause by cause, each with its fix and torch's outcome after it.",
    )


class ShardFile(BaseModel):
    name: str = Field(description="The file's name as uploaded (the index names shards by it).")
    format: str
    tensors: int
    bytes: int = Field(description="Bytes of the tensors it holds.")


class ShardProblem(BaseModel):
    kind: str = Field(
        description="missing_from_shards (the index names it, no shard holds it), not_in_index, "
        "in_two_shards, wrong_shard, shard_not_uploaded, total_size"
    )
    key: str = Field(description="The tensor (or, for shard_not_uploaded, the file; total_size: '').")
    detail: str


class Shards(BaseModel):
    index: str | None = Field(description="The index file's name (model.safetensors.index.json), if sent.")
    files: list[ShardFile]
    total_size: int | None = Field(description="The index's metadata.total_size.")
    tensor_bytes: int = Field(description="Bytes of the tensors the shards hold, each key once.")
    problems: list[ShardProblem] = Field(description="What the index and the shards disagree on.")


class CheckpointReport(BaseModel):
    format: str = Field(examples=["safetensors"], description="safetensors, torch_zip or torch_legacy")
    file_bytes: int
    tensors: list[TensorEntry]
    values: list[ValueEntry] = Field(description="Everything else: epoch, step, hyper-parameters ...")
    tree: list[TreeNode] = Field(description="The tensors by module path, with totals per node.")
    dtypes: dict[str, DtypeTotal]
    total_elements: int
    total_bytes: int = Field(description="Sum over tensors; shared storage counted once per tensor.")
    unique_bytes: int = Field(description="Bytes of distinct storage: what the file really holds.")
    shared: list[list[str]] = Field(description="Groups of tensors that share one storage.")
    state_dicts: list[str] = Field(description="Dicts of tensors a module could load, by location.")
    metadata: dict[str, str] = Field(default_factory=dict, description="safetensors __metadata__.")
    load: LoadOutcome | None = None
    torch_version: str
    shards: Shards | None = Field(None, description="A sharded checkpoint: its files and index, checked.")


# -- reading -----------------------------------------------------------------------------------


def sniff(path: Path) -> str:
    """The format, from the first bytes (names and extensions are only what the user typed)."""
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(ZIP_MAGIC):
        return "torch_zip"
    if head.startswith(LEGACY_MAGIC):
        return "torch_legacy"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if not head:
        raise CheckpointError("the file is empty")
    raise CheckpointError(
        f"not a safetensors or torch checkpoint: it starts with {head[:8].hex(' ')}"
        " (safetensors starts with an 8-byte header size and '{', torch files with a zip or pickle header)"
    )


@dataclass(frozen=True)
class Described:
    """What the report says of one tensor, read once (torch tensors and safetensors entries alike)."""

    shape: list[int]
    dtype: str
    elements: int
    bytes: int
    layout: str = "strided"
    storage: tuple[int, int] | None = None  # (address, bytes) of a storage others may share
    nested_shapes: list[list[int]] | None = None


@dataclass
class Found:
    """Tensors (described) and plain values, by location, in file order, and the dicts of tensors."""

    tensors: list[tuple[list[str], Described]] = field(default_factory=list)
    values: list[tuple[list[str], object]] = field(default_factory=list)
    state_dicts: list[list[str]] = field(default_factory=list)
    dicts: dict[str, dict] = field(default_factory=dict)  # torch formats: each state_dict, as loaded
    nodes: int = 0  # dicts, lists and leaves walked
    objects: dict[str, torch.Tensor] = field(default_factory=dict)  # torch formats: tensors by name
    sources: dict[str, Path] = field(default_factory=dict)  # safetensors: the file of each key (shards)


def _safetensors(path: Path, limits: Limits) -> tuple[Found, dict[str, str]]:
    """The header alone, checked as the safetensors library checks it before it reads a byte."""
    size = path.stat().st_size
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > limits.header_max_bytes:
            raise CheckpointTooLarge(
                f"safetensors header of {length} bytes is over the cap of {limits.header_max_bytes} bytes"
            )
        if 8 + length > size:
            raise CheckpointError(
                f"truncated: the header says {length} bytes, the file has {size - 8} after it"
            )
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except ValueError as exc:  # not UTF-8, not JSON, an integer of over 4300 digits
        raise CheckpointError(f"safetensors header is not JSON: {exc}") from exc
    except RecursionError as exc:  # a header is objects two levels deep; this one nests without end
        raise CheckpointError("safetensors header is nested too deeply to be a safetensors header") from exc
    if not isinstance(header, dict):
        raise CheckpointError("safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    metadata = (
        {} if metadata is None else metadata
    )  # but 0, false, "", [] are no map: the library refuses them
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError("safetensors __metadata__ must map strings to strings")
    if len(header) > limits.max_entries:
        raise CheckpointTooLarge(f"{len(header)} tensors; at most {limits.max_entries}")
    data = size - 8 - length
    spans = []
    found = Found(state_dicts=[[]] if header else [])
    for key, info in header.items():
        described, start, end = _described(key, info, data)
        spans.append((start, end, key))
        found.tensors.append(([key], described))
    _check_spans(spans, data)
    return found, {str(k): v for k, v in metadata.items()}


def _check_spans(spans: list[tuple[int, int, str]], data: int) -> None:
    """The data bytes are the tensors' back to back: no overlap, no hole, nothing after the last."""
    spans.sort()
    for (_, end, key), (start, _, other) in pairwise(spans):
        if start < end:
            raise CheckpointError(f"tensors {key!r} and {other!r} overlap (safetensors forbids it)")
        if start > end:
            raise CheckpointError(
                f"{start - end} bytes between tensors {key!r} and {other!r} belong to no tensor"
                " (safetensors forbids holes; its library refuses the file)"
            )
    first = spans[0][0] if spans else 0
    last = spans[-1][1] if spans else 0
    if first > 0:
        raise CheckpointError(
            f"the first {first} data bytes belong to no tensor (safetensors forbids holes; its library"
            " refuses the file)"
        )
    if last < data:
        raise CheckpointError(
            f"{data - last} bytes after the last tensor belong to no tensor (trailing bytes: the"
            " safetensors library refuses the file)"
        )


def _described(key: str, info: object, data: int) -> tuple[Described, int, int]:
    """Check one header entry against the format and the bytes that follow the header."""
    if not isinstance(info, dict):
        raise CheckpointError(f"{key!r}: an entry must be an object with dtype, shape, data_offsets")
    code = info.get("dtype")
    if not isinstance(code, str) or code not in SAFETENSORS_DTYPES:
        raise CheckpointError(f"{key!r}: unknown dtype {code!r}; known: {', '.join(SAFETENSORS_DTYPES)}")
    bits, dtype = SAFETENSORS_DTYPES[code]
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if isinstance(shape, list) and len(shape) > MAX_DIMS:  # before math.prod: 400,000 dims take seconds
        raise CheckpointError(f"{key!r}: shape has {len(shape)} dimensions; torch allows at most {MAX_DIMS}")
    if not (isinstance(shape, list) and all(type(d) is int and 0 <= d <= MAX_DIM for d in shape)):
        raise CheckpointError(f"{key!r}: shape must be a list of non-negative integers below 2**63")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise CheckpointError(f"{key!r}: data_offsets must be [begin, end]")
    start, end = offsets
    if not 0 <= start <= end <= data:
        raise CheckpointError(
            f"{key!r}: data_offsets {offsets} fall outside the {data} data bytes (truncated?)"
        )
    elements = math.prod(shape)
    if elements > MAX_DIM:
        raise CheckpointError(f"{key!r}: shape {shape} has {elements} elements, over 2**63 - 1")
    expected, rest = divmod(elements * bits, 8)
    if rest:
        raise CheckpointError(
            f"{key!r}: {elements} elements of {code} ({bits} bits each) are not whole bytes"
        )
    if end - start != expected:
        raise CheckpointError(f"{key!r}: {end - start} bytes for shape {shape} of {code} ({expected})")
    name = dtype_name(dtype) if dtype is not None and dtype.itemsize * 8 == bits else code
    return Described(shape=shape, dtype=name, elements=elements, bytes=expected), start, end


def _check_zip(path: Path, limits: Limits) -> None:
    """Refuse a zip bomb from its central directory, before torch unpacks anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"not a readable zip (truncated or corrupt?): {exc}") from exc
    if len(members) > limits.max_entries:
        raise CheckpointTooLarge(f"the zip holds {len(members)} members; at most {limits.max_entries}")
    declared = sum(m.file_size for m in members)
    if declared > limits.max_bytes:
        raise CheckpointTooLarge(
            f"the zip declares {declared} bytes once unpacked, over the cap of {limits.max_bytes} bytes"
        )
    pickles = [m for m in members if m.filename.endswith(".pkl")]
    for member in pickles:
        if member.file_size > limits.pickle_max_bytes:
            raise CheckpointTooLarge(
                f"{member.filename} declares {member.file_size} bytes once unpacked: the pickle holds"
                f" the structure, not the tensors, and is capped at {limits.pickle_max_bytes} bytes"
                " (MRE_CHECKPOINT_PICKLE_MAX_BYTES)"
            )


def _torch(path: Path, fmt: str, limits: Limits) -> Found:
    if fmt == "torch_zip":
        _check_zip(path, limits)
    try:
        # weights_only: torch's restricted unpickler, whatever torch's default. mmap (zip only):
        # tensors stay on disk; nothing below reads their bytes.
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=fmt == "torch_zip")
    except (RecursionError, MemoryError):
        raise  # the inspector's limits, said by the caller
    except Exception as exc:  # torch's refusal is the answer: its type and words
        if "can't allocate memory" in str(exc):  # torch's allocator under the memory limit
            raise MemoryError(str(exc)) from exc
        raise CheckpointError(
            f"torch.load(weights_only=True) refused it: {type(exc).__name__}: {exc}"
        ) from exc
    found = Found()
    for location, value in _walk(loaded, [], limits, found):
        if isinstance(value, torch.Tensor):
            found.tensors.append((location, _of_tensor(value)))
            found.objects[".".join(location)] = value  # mapped (zip): no byte read until compared
        else:
            found.values.append((location, value))
    return found


def _walk(
    obj: object, location: list[str], limits: Limits, found: Found
) -> Iterator[tuple[list[str], object]]:
    if len(location) > MAX_DEPTH:
        raise CheckpointError(f"nested deeper than {MAX_DEPTH} levels at {'.'.join(location)}")
    # Every dict, list and leaf counts: a few bytes of pickle can point at one list from a million
    # places (its memo), and an empty list is no entry but still costs a visit.
    found.nodes += 1
    if found.nodes > 2 * limits.max_entries:
        raise CheckpointTooLarge(f"more than {2 * limits.max_entries} dicts, lists and values")
    if isinstance(obj, dict):
        if (
            obj
            and all(isinstance(k, str) for k in obj)
            and all(isinstance(v, torch.Tensor) for v in obj.values())
        ):
            found.state_dicts.append(location)
            found.dicts[".".join(location)] = obj
        items = ((_key(k), v) for k, v in obj.items())
    elif isinstance(obj, list | tuple) and not isinstance(obj, torch.Size):
        items = ((str(i), v) for i, v in enumerate(obj))
    else:
        if len(found.tensors) + len(found.values) >= limits.max_entries:
            raise CheckpointTooLarge(f"more than {limits.max_entries} entries")
        yield location, obj
        return
    for key, value in items:
        yield from _walk(value, [*location, key], limits, found)


def _key(key: object) -> str:
    return key if isinstance(key, str) else _value(key)


def read(path: Path, limits: Limits) -> tuple[str, Found, dict[str, str]]:
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise CheckpointTooLarge(f"{size} bytes, over the cap of {limits.max_bytes} bytes")
    fmt = sniff(path)
    if fmt == "torch_legacy" and size > limits.legacy_max_bytes:
        raise CheckpointTooLarge(
            f"{size} bytes in torch's legacy format, which is read whole into memory: over the cap of "
            f"{limits.legacy_max_bytes} bytes; saved again with torch.save (zip format) it is read in place"
        )
    if fmt == "safetensors":
        found, metadata = _safetensors(path, limits)
        return fmt, found, metadata
    return fmt, _torch(path, fmt, limits), {}


# -- describing --------------------------------------------------------------------------------

SPARSE_PARTS = {
    torch.sparse_coo: ("_indices", "_values"),
    torch.sparse_csr: ("crow_indices", "col_indices", "values"),
    torch.sparse_csc: ("ccol_indices", "row_indices", "values"),
    torch.sparse_bsr: ("crow_indices", "col_indices", "values"),
    torch.sparse_bsc: ("ccol_indices", "row_indices", "values"),
}


def _of_tensor(t: torch.Tensor) -> Described:
    """One tensor as the report says it; sparse and nested ones have no plain shape or storage."""
    dtype = dtype_name(t.dtype)
    if t.layout in SPARSE_PARTS:
        stored = sum(_nbytes(getattr(t, part)()) for part in SPARSE_PARTS[t.layout])
        layout = str(t.layout).removeprefix("torch.")
        return Described(list(t.shape), dtype, t.numel(), stored, layout)
    if t.is_nested:
        parts = t.unbind()
        shapes = [list(p.shape) for p in parts[:NESTED_SHAPES]]
        elements = sum(p.numel() for p in parts)
        layout = "jagged" if t.layout == torch.jagged else "nested"
        return Described([len(parts)], dtype, elements, elements * t.element_size(), layout, None, shapes)
    storage = t.untyped_storage()
    # meta tensors and empty storages (all at address 0) share nothing
    key = None if t.is_meta or storage.nbytes() == 0 else (storage.data_ptr(), storage.nbytes())
    return Described(list(t.shape), dtype, t.numel(), _nbytes(t), storage=key)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _tree(entries: list[TensorEntry]) -> list[TreeNode]:
    """Nodes by module path: the location's segments, state_dict keys split on their dots.

    One pass: each node's children are found by name in a dict (the newest child of that name,
    as a tensor "a" then "a.b" puts b under the node of a).
    """
    root = TreeNode(name="", path="", tensors=0, elements=0, bytes=0)
    index: dict[int, dict[str, TreeNode]] = {}
    for entry in entries:
        node = root
        parts = [p for segment in entry.location for p in segment.split(".")]
        if len(parts) > TREE_DEPTH:
            parts = [*parts[: TREE_DEPTH - 1], ".".join(parts[TREE_DEPTH - 1 :])]
        for depth, part in enumerate(parts):
            node.tensors += 1
            node.elements += entry.elements
            node.bytes += entry.bytes
            children = index.setdefault(id(node), {})
            child = children.get(part)
            if child is None or depth == len(parts) - 1:
                child = TreeNode(name=part, path=".".join(parts[: depth + 1]), tensors=0, elements=0, bytes=0)
                node.children.append(child)
                children[part] = child
            node = child
        node.tensors, node.elements, node.bytes = 1, entry.elements, entry.bytes
        node.dtype, node.shape = entry.dtype, entry.shape
    _number_order(root)
    return root.children


def _number_order(root: TreeNode) -> None:
    """Siblings that are all numbers (layers.0, layers.1, ..., layers.10) in numeric order, not the
    file's; compared by length then digits, so a 5,000-digit name costs no int()."""
    pending = [root]
    while pending:
        node = pending.pop()
        if node.children and all(c.name.isdecimal() and c.name.isascii() for c in node.children):
            node.children.sort(key=lambda c: (len(c.name.lstrip("0")), c.name.lstrip("0")))
        pending.extend(node.children)


def describe(fmt: str, found: Found, metadata: dict[str, str], file_bytes: int) -> CheckpointReport:
    groups: dict[tuple[int, int], list[int]] = {}  # storage -> indexes of its tensors
    entries = []
    unplaced = 0  # bytes of tensors with no storage to share (described only, sparse, nested, empty)
    for location, t in found.tensors:
        if t.storage is not None:
            groups.setdefault(t.storage, []).append(len(entries))
        else:
            unplaced += t.bytes
        entries.append(
            TensorEntry(
                location=location,
                name=".".join(location),
                shape=t.shape,
                dtype=t.dtype,
                elements=t.elements,
                bytes=t.bytes,
                layout=t.layout,
                nested_shapes=t.nested_shapes,
            )
        )
    shared = [members for members in groups.values() if len(members) > 1]
    for number, members in enumerate(shared):
        # Each tensor names a few of its group, never the whole group: linear in the tensors.
        first = [entries[i].name for i in members[: SHARED_NAMES + 1]]
        for i in members:
            entries[i].shared_group = number
            entries[i].shared_with = [n for n in first if n != entries[i].name][:SHARED_NAMES]
    dtypes: dict[str, DtypeTotal] = {}
    for entry in entries:
        total = dtypes.setdefault(entry.dtype, DtypeTotal(tensors=0, elements=0, bytes=0))
        total.tensors += 1
        total.elements += entry.elements
        total.bytes += entry.bytes
    distinct = sum(nbytes for _, nbytes in groups)
    return CheckpointReport(
        format=fmt,
        file_bytes=file_bytes,
        tensors=entries,
        values=[
            ValueEntry(location=loc, name=".".join(loc), type=type(v).__name__, value=_value(v))
            for loc, v in found.values
        ],
        tree=_tree(entries),
        dtypes=dtypes,
        total_elements=sum(e.elements for e in entries),
        total_bytes=sum(e.bytes for e in entries),
        unique_bytes=distinct + unplaced,
        shared=[[entries[i].name for i in members] for members in shared],
        state_dicts=[".".join(loc) for loc in found.state_dicts],
        metadata=metadata,
        torch_version=torch.__version__,
    )


def _value(v: object) -> str:
    """repr(), cut short, without ever building a long one (a pickle can hold a 256 MiB string)."""
    if isinstance(v, str | bytes | bytearray):
        text = repr(v[:VALUE_CHARS])
        if len(v) > VALUE_CHARS:
            text += f" ... ({len(v)} in all)"
    elif isinstance(v, int) and v.bit_length() > 4 * VALUE_CHARS:
        text = f"an integer of {v.bit_length()} bits"
    else:
        try:
            text = repr(v)
        except Exception as exc:  # repr of what the weights-only unpickler built can still refuse
            text = f"<{type(v).__name__}: repr() failed: {type(exc).__name__}>"
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


# -- loading into a module ---------------------------------------------------------------------

PREFERRED = ("state_dict", "model_state_dict", "model", "module", "net")


def choose_state_dict(report: CheckpointReport, asked: str | None) -> str:
    """The state_dict to load: the one asked for, the file itself, a conventional key, the largest."""
    found = report.state_dicts
    if asked is not None:
        if asked not in found:
            known = ", ".join(repr(s) for s in found) or "none"
            raise CheckpointError(f"no state_dict at {asked!r}; state_dicts in this file: {known}")
        return asked
    if not found:
        raise CheckpointError("the file holds no dict of tensors to load into a module")
    for candidate in ("", *PREFERRED):
        if candidate in found:
            return candidate
    counts = Counter(".".join(t.location[:-1]) for t in report.tensors)
    return max(found, key=lambda s: counts[s])


def _state(path: Path, fmt: str, found: Found, at: str, wanted: set[str]) -> dict[str, torch.Tensor]:
    """The state_dict at ``at``, as torch.load gave it (its ``_metadata``, module versions, kept:
    load_state_dict reads it). From safetensors only the keys the module has are read; the others
    stand in as empty meta tensors, which load_state_dict only counts as unexpected."""
    if fmt != "safetensors":
        return found.dicts[at]
    from safetensors import SafetensorError, safe_open

    keys = [loc[-1] for loc, _ in found.tensors]
    wanted = {key for key in keys if _named_like(key, wanted)}
    state = dict.fromkeys(keys, torch.empty(0, device="meta"))
    by_file: dict[Path, list[str]] = {}
    for key in keys:
        if key in wanted:
            by_file.setdefault(found.sources.get(key, path), []).append(key)
    try:
        for source, names in by_file.items():
            with safe_open(str(source), framework="pt") as f:
                state.update({key: f.get_tensor(key) for key in names})
    except SafetensorError as exc:
        raise CheckpointError(f"the safetensors library refused to read it: {exc}") from exc
    return state


def tensor_of(path: Path, fmt: str, found: Found, name: str) -> torch.Tensor:
    """One tensor's values, by its name in the report (read from disk now, for safetensors)."""
    if fmt != "safetensors":
        return found.objects[name]
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(found.sources.get(name, path)), framework="pt") as f:
            return f.get_tensor(name)
    except SafetensorError as exc:
        raise CheckpointError(f"the safetensors library refused to read {name!r}: {exc}") from exc


def _named_like(key: str, names: set[str]) -> bool:
    """``key`` is one of ``names``, or one of them behind a prefix (module.linear.weight)."""
    return key in names or any(key[i + 1 :] in names for i, c in enumerate(key) if c == ".")


def _attempt(action: object) -> str:
    try:
        action()  # type: ignore[operator]
    except (RecursionError, MemoryError):
        raise
    except Exception as exc:  # torch's refusal is the result
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def load_into(
    path: Path, fmt: str, found: Found, report: CheckpointReport, spec: Target, at: str | None
) -> LoadOutcome:
    with warnings.catch_warnings():
        # A full-size architecture is on meta, where torch warns of each copy that it does nothing.
        warnings.filterwarnings("ignore", message="for .*: copying from a non-meta parameter")
        return _load_into(path, fmt, found, report, spec, at)


def _load_into(
    path: Path, fmt: str, found: Found, report: CheckpointReport, spec: Target, at: str | None
) -> LoadOutcome:
    chosen = choose_state_dict(report, at)
    loose: nn.Module = target_module(spec)
    expected = loose.state_dict()  # keys and shapes, read before anything is loaded
    state = _state(path, fmt, found, chosen, set(expected))
    strict = _attempt(lambda: target_module(spec).load_state_dict(state))
    result: list = []
    non_strict = _attempt(lambda: result.append(loose.load_state_dict(state, strict=False)))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if result:
        missing, unexpected = list(result[0].missing_keys), list(result[0].unexpected_keys)
    mismatches = [
        {"key": k, "checkpoint": _shape(state[k]), "module": list(v.shape)}
        for k, v in expected.items()
        if k in state and _shape(state[k]) != list(v.shape)
    ]
    return LoadOutcome(
        spec=spec if isinstance(spec, LabSpec) else None,
        architecture=None if isinstance(spec, LabSpec) else spec,
        state_dict=chosen,
        strict=strict,
        non_strict=non_strict,
        missing_keys=missing,
        unexpected_keys=unexpected,
        size_mismatches=mismatches,
        diagnosis=diagnose(state, lambda: target_module(spec), strict),
    )


def _shape(t: torch.Tensor) -> list[int]:
    return [len(t.unbind())] if t.is_nested else list(t.shape)


class PageReport(BaseModel):
    """What the page shows of a report: at most a few hundred of each kind of thing, so that a file of
    100,000 tensors costs the server neither a long parse nor a long render; the totals stay exact."""

    report: CheckpointReport = Field(description="Cut short: tree, values, groups and lists.")
    tensors: int = Field(description="Tensors in the file (the report's list is left out).")
    hidden: dict[str, int] = Field(description="What was left out, by part of the report.")


def bounded(report: CheckpointReport, most: int) -> PageReport:
    """``report`` with at most ``most`` tree nodes, values, sharing groups (and names in each), state
    dicts, metadata items and keys of each kind in the load's outcome; the rest counted in hidden."""
    hidden: dict[str, int] = {}

    def cut(part: str, items: list) -> list:
        if len(items) > most:
            hidden[part] = hidden.get(part, 0) + len(items) - most
        return items[:most]

    tensors = len(report.tensors)
    report.tensors = []
    report.values = cut("values", report.values)
    report.shared = [cut("shared_names", group) for group in cut("shared", report.shared)]
    report.state_dicts = cut("state_dicts", report.state_dicts)
    report.metadata = dict(cut("metadata", list(report.metadata.items())))
    if report.load is not None:
        report.load.missing_keys = cut("missing_keys", report.load.missing_keys)
        report.load.unexpected_keys = cut("unexpected_keys", report.load.unexpected_keys)
        report.load.size_mismatches = cut("size_mismatches", report.load.size_mismatches)
    if report.shards is not None:
        report.shards.problems = cut("shard_problems", report.shards.problems)
    if report.load is not None:
        for cause in report.load.diagnosis.causes if report.load.diagnosis else []:
            cause.keys = cut("cause_keys", cause.keys)
            cause.details = cut("cause_details", cause.details)
    left = [most]  # tree nodes still to show, depth first: a node's totals stay exact

    def prune(nodes: list[TreeNode]) -> list[TreeNode]:
        kept = []
        for node in nodes:
            if left[0] <= 0:
                break
            left[0] -= 1
            node.children = prune(node.children)
            kept.append(node)
        return kept

    all_nodes = _count(report.tree)
    report.tree = prune(report.tree)
    if all_nodes > most:
        hidden["tree"] = all_nodes - most
    return PageReport(report=report, tensors=tensors, hidden=hidden)


def _count(nodes: list[TreeNode]) -> int:
    count, pending = 0, list(nodes)
    while pending:
        node = pending.pop()
        count += 1
        pending.extend(node.children)
    return count


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
    from app.lab.shards import inspect_shards, is_index

    if len(paths) == 1 and not is_index(paths[0], names[0] if names else ""):
        return inspect_checkpoint(paths[0], limits, spec, at)

    return inspect_shards(paths, names, limits, spec, at)
