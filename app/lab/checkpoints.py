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
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from torch import nn

from app.lab.inspect import build, dtype_name
from app.lab.spec import LabSpec

# torch.load(weights_only=True) got the fixes for CVE-2025-32434 in 2.6 and CVE-2026-24747 in 2.10.
MIN_TORCH = (2, 10)
# The 14 bytes torch's legacy format starts with: a pickled magic number.
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
ZIP_MAGIC = b"PK\x03\x04"
# safetensors dtype codes -> torch dtypes (its format specification's list).
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "U16": torch.uint16,
    "I32": torch.int32,
    "U32": torch.uint32,
    "I64": torch.int64,
    "U64": torch.uint64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
MAX_DEPTH = 32  # nesting of dicts and lists in a torch checkpoint
VALUE_CHARS = 120  # a non-tensor value is shown this long at most


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
    max_entries: int  # tensors and values listed, zip members
    legacy_max_bytes: int = 1024**3  # the legacy format is read whole into memory


class TensorEntry(BaseModel):
    location: list[str] = Field(description="Keys from the top of the file down to the tensor.")
    name: str = Field(description="The location joined with dots, e.g. model.linear.weight.")
    shape: list[int]
    dtype: str
    elements: int
    bytes: int
    shared_with: list[str] = Field(
        default_factory=list, description="Other tensors on the same storage (tied weights, views)."
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
    spec: LabSpec
    state_dict: str = Field(description="Where in the file the loaded state_dict is ('' for the top).")
    strict: str = Field(description='"ok", or torch\'s refusal of load_state_dict(state), type: message.')
    non_strict: str = Field(description="The same with strict=False: size mismatches still refuse.")
    missing_keys: list[str] = Field(description="The module's keys the file lacks (strict=False).")
    unexpected_keys: list[str] = Field(description="The file's keys the module lacks (strict=False).")
    size_mismatches: list[dict[str, str | list[int]]] = Field(
        description="Keys in both with other shapes: key, checkpoint, module."
    )


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


@dataclass
class Found:
    """Tensors (live or described) and plain values, by location, in file order."""

    tensors: list[tuple[list[str], torch.Tensor]]
    values: list[tuple[list[str], object]]
    state_dicts: list[list[str]]


def _safetensors(path: Path, limits: Limits) -> tuple[Found, dict[str, str]]:
    """The header alone: tensors as meta tensors of the declared shape and dtype."""
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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"safetensors header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointError("safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError("safetensors __metadata__ must map strings to strings")
    if len(header) > limits.max_entries:
        raise CheckpointTooLarge(f"{len(header)} tensors; at most {limits.max_entries}")
    data = size - 8 - length
    spans = []
    found = Found([], [], [[]] if header else [])
    for key, info in header.items():
        dtype, shape, start, end = _described(key, info, data)
        spans.append((start, end, key))
        found.tensors.append(([key], torch.empty(shape, dtype=dtype, device="meta")))
    spans.sort()
    for (_, end, key), (start, _, other) in pairwise(spans):
        if start < end:
            raise CheckpointError(f"tensors {key!r} and {other!r} overlap (safetensors forbids it)")
    return found, {str(k): v for k, v in metadata.items()}


def _described(key: str, info: object, data: int) -> tuple[torch.dtype, list[int], int, int]:
    """Check one header entry against the format and the bytes that follow the header."""
    if not isinstance(info, dict):
        raise CheckpointError(f"{key!r}: an entry must be an object with dtype, shape, data_offsets")
    dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise CheckpointError(
            f"{key!r}: unknown dtype {info.get('dtype')!r}; known: {', '.join(SAFETENSORS_DTYPES)}"
        )
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise CheckpointError(f"{key!r}: shape must be a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise CheckpointError(f"{key!r}: data_offsets must be [begin, end]")
    start, end = offsets
    if not 0 <= start <= end <= data:
        raise CheckpointError(
            f"{key!r}: data_offsets {offsets} fall outside the {data} data bytes (truncated?)"
        )
    expected = math.prod(shape) * dtype.itemsize
    if end - start != expected:
        raise CheckpointError(
            f"{key!r}: {end - start} bytes for shape {shape} of {info['dtype']} ({expected})"
        )
    return dtype, shape, start, end


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


def _torch(path: Path, fmt: str, limits: Limits) -> Found:
    if fmt == "torch_zip":
        _check_zip(path, limits)
    try:
        # weights_only: torch's restricted unpickler, whatever torch's default. mmap (zip only):
        # tensors stay on disk; nothing below reads their bytes.
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=fmt == "torch_zip")
    except Exception as exc:  # torch's refusal is the answer: its type and words
        raise CheckpointError(
            f"torch.load(weights_only=True) refused it: {type(exc).__name__}: {exc}"
        ) from exc
    found = Found([], [], [])
    for location, value in _walk(loaded, [], limits, found):
        (found.tensors if isinstance(value, torch.Tensor) else found.values).append((location, value))
    return found


def _walk(
    obj: object, location: list[str], limits: Limits, found: Found
) -> Iterator[tuple[list[str], object]]:
    if len(location) > MAX_DEPTH:
        raise CheckpointError(f"nested deeper than {MAX_DEPTH} levels at {'.'.join(location)}")
    if isinstance(obj, dict):
        if (
            obj
            and all(isinstance(k, str) for k in obj)
            and all(isinstance(v, torch.Tensor) for v in obj.values())
        ):
            found.state_dicts.append(location)
        items = ((str(k), v) for k, v in obj.items())
    elif isinstance(obj, list | tuple) and not isinstance(obj, torch.Size):
        items = ((str(i), v) for i, v in enumerate(obj))
    else:
        if len(found.tensors) + len(found.values) >= limits.max_entries:
            raise CheckpointTooLarge(f"more than {limits.max_entries} entries")
        yield location, obj
        return
    for key, value in items:
        yield from _walk(value, [*location, key], limits, found)


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


def _storage_key(t: torch.Tensor) -> tuple[int, int] | None:
    if t.is_meta or t.untyped_storage().nbytes() == 0:
        return None  # safetensors tensors never share; empty storages all sit at address 0
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def _tree(entries: list[TensorEntry]) -> list[TreeNode]:
    """Nodes by module path: the location's segments, state_dict keys split on their dots."""
    root = TreeNode(name="", path="", tensors=0, elements=0, bytes=0)
    for entry in entries:
        node = root
        parts = [p for segment in entry.location for p in segment.split(".")]
        for depth, part in enumerate(parts):
            node.tensors += 1
            node.elements += entry.elements
            node.bytes += entry.bytes
            child = next((c for c in reversed(node.children) if c.name == part), None)
            if child is None or depth == len(parts) - 1:
                child = TreeNode(name=part, path=".".join(parts[: depth + 1]), tensors=0, elements=0, bytes=0)
                node.children.append(child)
            node = child
        node.tensors, node.elements, node.bytes = 1, entry.elements, entry.bytes
        node.dtype, node.shape = entry.dtype, entry.shape
    return root.children


def describe(fmt: str, found: Found, metadata: dict[str, str], file_bytes: int) -> CheckpointReport:
    groups: dict[tuple[int, int], list[str]] = {}
    entries = []
    unplaced = 0  # bytes of tensors with no storage to share (described only, or empty)
    for location, t in found.tensors:
        name = ".".join(location)
        key = _storage_key(t)
        if key is not None:
            groups.setdefault(key, []).append(name)
        else:
            unplaced += t.numel() * t.element_size()
        entries.append(
            TensorEntry(
                location=location,
                name=name,
                shape=list(t.shape),
                dtype=dtype_name(t.dtype),
                elements=t.numel(),
                bytes=t.numel() * t.element_size(),
            )
        )
    shared = [names for names in groups.values() if len(names) > 1]
    partners = {name: group for group in shared for name in group}
    for entry in entries:
        entry.shared_with = [n for n in partners.get(entry.name, ()) if n != entry.name]
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
            ValueEntry(location=loc, name=".".join(loc), type=type(v).__name__, value=_short(repr(v)))
            for loc, v in found.values
        ],
        tree=_tree(entries),
        dtypes=dtypes,
        total_elements=sum(e.elements for e in entries),
        total_bytes=sum(e.bytes for e in entries),
        unique_bytes=distinct + unplaced,
        shared=shared,
        state_dicts=[".".join(loc) for loc in found.state_dicts],
        metadata=metadata,
        torch_version=torch.__version__,
    )


def _short(text: str) -> str:
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
    counts = {s: sum(1 for t in report.tensors if ".".join(t.location[:-1]) == s) for s in found}
    return max(found, key=lambda s: counts[s])


def _state(path: Path, fmt: str, found: Found, at: str, wanted: set[str]) -> dict[str, torch.Tensor]:
    """The state_dict at ``at``; only the keys the module has are read (the rest stay described)."""
    depth = len(at.split(".")) if at else 0
    state = {loc[-1]: t for loc, t in found.tensors if ".".join(loc[:-1]) == at and len(loc) == depth + 1}
    if fmt == "safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            state.update({key: f.get_tensor(key) for key in state if key in wanted})
    return state


def _attempt(action: object) -> str:
    try:
        action()  # type: ignore[operator]
    except Exception as exc:  # torch's refusal is the result
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def load_into(
    path: Path, fmt: str, found: Found, report: CheckpointReport, spec: LabSpec, at: str | None
) -> LoadOutcome:
    chosen = choose_state_dict(report, at)
    loose: nn.Module = build(spec, refusals={})
    expected = loose.state_dict()  # keys and shapes, read before anything is loaded
    state = _state(path, fmt, found, chosen, set(expected))
    strict = _attempt(lambda: build(spec, refusals={}).load_state_dict(state))
    result: list = []
    non_strict = _attempt(lambda: result.append(loose.load_state_dict(state, strict=False)))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if result:
        missing, unexpected = list(result[0].missing_keys), list(result[0].unexpected_keys)
    mismatches = [
        {"key": k, "checkpoint": list(state[k].shape), "module": list(v.shape)}
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    return LoadOutcome(
        spec=spec,
        state_dict=chosen,
        strict=strict,
        non_strict=non_strict,
        missing_keys=missing,
        unexpected_keys=unexpected,
        size_mismatches=mismatches,
    )


def inspect_checkpoint(
    path: Path, limits: Limits, spec: LabSpec | None = None, at: str | None = None
) -> CheckpointReport:
    """Everything the explorer says about a checkpoint file, and its load into ``spec``'s module."""
    fmt, found, metadata = read(path, limits)
    report = describe(fmt, found, metadata, path.stat().st_size)
    if spec is not None:
        report.load = load_into(path, fmt, found, report, spec, at)
    return report
