"""Reading a checkpoint file safely, by what its bytes are (never its name): safetensors (its JSON
header read directly: no tensor byte is touched), torch's zip format (``torch.load(weights_only=True,
mmap=True)``: tensors stay mapped on disk and only the ones a module takes are ever read) and torch's
legacy format (weights_only, read whole: it cannot be mapped). Pickles only ever go through torch's
weights-only unpickler, which refuses anything but tensors and plain containers, so a checkpoint can
never run code here."""

from __future__ import annotations

import importlib
import json
import math
import pickle
import re
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import torch

from app.doctor.report import NESTED_SHAPES, CheckpointError, CheckpointTooLarge, Limits
from app.lab.report import dtype_name
from app.langs import Text

# torch.load(weights_only=True) got the fixes for CVE-2025-32434 in 2.6 and CVE-2026-24747 in 2.10.
MIN_TORCH = (2, 10)
# The 14 bytes torch's legacy format starts with: a pickled magic number.
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
ZIP_MAGIC = b"PK\x03\x04"
ZIP_END = b"PK\x05\x06"  # a zip's end of central directory: one per torch.save in a DCP data file
# What users send instead of a checkpoint, named by their first bytes.
LFS_MAGIC = b"version https://git-lfs.github.com/spec/"
GGUF_MAGIC = b"GGUF"
NUMPY_MAGIC = b"\x93NUMPY"
HEAD = 512  # bytes read to tell what a file is
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colour codes (torch's weights-only advice has some)
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
VALUE_CHARS = 120  # a non-tensor value is shown this long at most


def torch_ok(version: str = torch.__version__) -> bool:
    major, minor = (int(part) for part in version.split("+")[0].split(".")[:2])
    return (major, minor) >= MIN_TORCH


def sniff(path: Path) -> str:
    """The format, from the first bytes (names and extensions are only what the user typed)."""
    with path.open("rb") as f:
        head = f.read(HEAD)
    if head.startswith(ZIP_MAGIC):
        return "torch_zip"
    if head.startswith(LEGACY_MAGIC):
        return "torch_legacy"
    if head.startswith((GGUF_MAGIC, LFS_MAGIC)):
        raise CheckpointError(_not_a_checkpoint(head))
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if not head:
        raise CheckpointError(Text("the file is empty"))
    raise CheckpointError(_not_a_checkpoint(head))


def _not_a_checkpoint(head: bytes) -> Text:
    """What a file that is no checkpoint is, named by its first bytes, and what to do."""
    text = head.lstrip()
    if head.startswith(LFS_MAGIC):
        size = next(
            (
                line.split()[1]
                for line in head.decode("ascii", "replace").splitlines()
                if line.startswith("size ") and len(line.split()) == 2
            ),
            "?",
        )
        return Text(
            "a Git LFS pointer, not the file: a small text that stands for a file of {size} bytes which "
            "was never downloaded (git clone without git-lfs). Run git lfs install && git lfs pull in "
            "the repository, or download the file itself",
            size=size,
        )
    if text[:15].lower().startswith((b"<!doctype html", b"<html", b"<head", b"<!--")):
        return Text(
            "an HTML page, not a checkpoint: the download saved a web page (a login, an error or the "
            "file's page). Download the raw file (on the Hugging Face hub the /resolve/ URL, not /blob/)"
        )
    if head.startswith(GGUF_MAGIC):
        version = int.from_bytes(head[4:8], "little") if len(head) >= 8 else "?"
        return Text(
            "a GGUF file (llama.cpp's format, version {version}), not a PyTorch checkpoint: read it with "
            "the gguf package or llama.cpp; transformers converts some with from_pretrained(folder, "
            "gguf_file=name)",
            version=version,
        )
    if head.startswith(NUMPY_MAGIC):
        return Text("a NumPy .npy array, not a checkpoint: read it with numpy.load(path)")
    return Text(
        "not a safetensors or torch checkpoint: it starts with {hex} (safetensors starts with an "
        "8-byte header size and '{{', torch files with a zip or pickle header)",
        hex=head[:8].hex(" "),
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
    raw: dict[str, tuple] = field(default_factory=dict)  # each state_dict's keys from the top, as saved
    safe_globals: list[str] = field(default_factory=list)  # the allowed globals the file needed
    absent: dict[str, str] = field(default_factory=dict)  # shards: key -> the shard, not here, holding it
    read_as_dict: list[str] = field(default_factory=list)  # dict subclasses read as OrderedDict


def _safetensors(path: Path, limits: Limits) -> tuple[Found, dict[str, str]]:
    """The header alone, checked as the safetensors library checks it before it reads a byte."""
    size = path.stat().st_size
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > limits.header_max_bytes:
            raise CheckpointTooLarge(
                Text(
                    "safetensors header of {length} bytes is over the cap of {header_max_bytes} bytes",
                    length=length,
                    header_max_bytes=limits.header_max_bytes,
                )
            )
        if 8 + length > size:
            raise CheckpointError(
                Text(
                    "truncated: the header says {length} bytes, the file has {value} after it",
                    length=length,
                    value=size - 8,
                )
            )
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except ValueError as exc:  # not UTF-8, not JSON, an integer of over 4300 digits
        raise CheckpointError(Text("safetensors header is not JSON: {exc}", exc=exc)) from exc
    except RecursionError as exc:  # a header is objects two levels deep; this one nests without end
        raise CheckpointError(
            Text("safetensors header is nested too deeply to be a safetensors header")
        ) from exc
    if not isinstance(header, dict):
        raise CheckpointError(Text("safetensors header is not a JSON object"))
    metadata = header.pop("__metadata__", None)
    metadata = (
        {} if metadata is None else metadata
    )  # but 0, false, "", [] are no map: the library refuses them
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(Text("safetensors __metadata__ must map strings to strings"))
    if len(header) > limits.max_entries:
        raise CheckpointTooLarge(
            Text("{count} tensors; at most {max_entries}", count=len(header), max_entries=limits.max_entries)
        )
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
            raise CheckpointError(
                Text("tensors {key!r} and {other!r} overlap (safetensors forbids it)", key=key, other=other)
            )
        if start > end:
            raise CheckpointError(
                Text(
                    "{value} bytes between tensors {key!r} and {other!r} belong to no tensor "
                    "(safetensors forbids holes; its library refuses the file)",
                    value=start - end,
                    key=key,
                    other=other,
                )
            )
    first = spans[0][0] if spans else 0
    last = spans[-1][1] if spans else 0
    if first > 0:
        raise CheckpointError(
            Text(
                "the first {first} data bytes belong to no tensor (safetensors forbids holes; its "
                "library refuses the file)",
                first=first,
            )
        )
    if last < data:
        raise CheckpointError(
            Text(
                "{value} bytes after the last tensor belong to no tensor (trailing bytes: the "
                "safetensors library refuses the file)",
                value=data - last,
            )
        )


def _described(key: str, info: object, data: int) -> tuple[Described, int, int]:
    """Check one header entry against the format and the bytes that follow the header."""
    if not isinstance(info, dict):
        raise CheckpointError(
            Text("{key!r}: an entry must be an object with dtype, shape, data_offsets", key=key)
        )
    code = info.get("dtype")
    if not isinstance(code, str) or code not in SAFETENSORS_DTYPES:
        raise CheckpointError(
            Text(
                "{key!r}: unknown dtype {code!r}; known: {names}",
                key=key,
                code=code,
                names=", ".join(SAFETENSORS_DTYPES),
            )
        )
    bits, dtype = SAFETENSORS_DTYPES[code]
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if isinstance(shape, list) and len(shape) > MAX_DIMS:  # before math.prod: 400,000 dims take seconds
        raise CheckpointError(
            Text(
                "{key!r}: shape has {count} dimensions; torch allows at most {MAX_DIMS}",
                key=key,
                count=len(shape),
                MAX_DIMS=MAX_DIMS,
            )
        )
    if not (isinstance(shape, list) and all(type(d) is int and 0 <= d <= MAX_DIM for d in shape)):
        raise CheckpointError(
            Text("{key!r}: shape must be a list of non-negative integers below 2**63", key=key)
        )
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise CheckpointError(Text("{key!r}: data_offsets must be [begin, end]", key=key))
    start, end = offsets
    if not 0 <= start <= end <= data:
        raise CheckpointError(
            Text(
                "{key!r}: data_offsets {offsets} fall outside the {data} data bytes (truncated?)",
                key=key,
                offsets=offsets,
                data=data,
            )
        )
    elements = math.prod(shape)
    if elements > MAX_DIM:
        raise CheckpointError(
            Text(
                "{key!r}: shape {shape} has {elements} elements, over 2**63 - 1",
                key=key,
                shape=shape,
                elements=elements,
            )
        )
    expected, rest = divmod(elements * bits, 8)
    if rest:
        raise CheckpointError(
            Text(
                "{key!r}: {elements} elements of {code} ({bits} bits each) are not whole bytes",
                key=key,
                elements=elements,
                code=code,
                bits=bits,
            )
        )
    if end - start != expected:
        raise CheckpointError(
            Text(
                "{key!r}: {value} bytes for shape {shape} of {code} ({expected})",
                key=key,
                value=end - start,
                shape=shape,
                code=code,
                expected=expected,
            )
        )
    name = dtype_name(dtype) if dtype is not None and dtype.itemsize * 8 == bits else code
    return Described(shape=shape, dtype=name, elements=elements, bytes=expected), start, end


def _check_zip(path: Path, limits: Limits) -> None:
    """Refuse a zip bomb from its central directory, before torch unpacks anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(Text("not a readable zip (truncated or corrupt?): {exc}", exc=exc)) from exc
    if members and min(m.header_offset for m in members) > 0:
        raise CheckpointError(_dcp_data(path))
    if len(members) > limits.max_entries:
        raise CheckpointTooLarge(
            Text(
                "the zip holds {count} members; at most {max_entries}",
                count=len(members),
                max_entries=limits.max_entries,
            )
        )
    declared = sum(m.file_size for m in members)
    if declared > limits.max_bytes:
        raise CheckpointTooLarge(
            Text(
                "the zip declares {declared} bytes once unpacked, over the cap of {max_bytes} bytes",
                declared=declared,
                max_bytes=limits.max_bytes,
            )
        )
    pickles = [m for m in members if m.filename.endswith(".pkl")]
    for member in pickles:
        if member.file_size > limits.pickle_max_bytes:
            raise CheckpointTooLarge(
                Text(
                    "{filename} declares {file_size} bytes once unpacked: the pickle holds the "
                    "structure, not the tensors, and is capped at {pickle_max_bytes} bytes "
                    "(MRE_CHECKPOINT_PICKLE_MAX_BYTES)",
                    filename=member.filename,
                    file_size=member.file_size,
                    pickle_max_bytes=limits.pickle_max_bytes,
                )
            )


def _dcp_data(path: Path) -> Text:
    """A zip with bytes before it: torch.save outputs back to back, as torch.distributed.checkpoint
    writes its .distcp data files (torch.load would read the last one alone)."""
    import mmap

    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        items, at = 0, data.find(ZIP_END)
        while at != -1:
            items += 1
            at = data.find(ZIP_END, at + 4)
    return Text(
        "one data file of a torch.distributed.checkpoint (DCP) checkpoint: {items} items saved back to "
        "back (torch.load would read the last one only). Inspect its folder, with the .metadata file "
        "that lists every tensor; torch.distributed.checkpoint.format_utils.dcp_to_torch_save(folder, "
        "'model.pt') makes one torch file of it",
        items=items,
    )


def _torch(path: Path, fmt: str, limits: Limits) -> Found:
    if fmt == "torch_zip":
        _check_zip(path, limits)
    found = Found()
    try:
        # weights_only: torch's restricted unpickler, whatever torch's default. mmap (zip only):
        # tensors stay on disk; nothing below reads their bytes.
        loaded = _load(path, fmt, limits, found)
    except (RecursionError, MemoryError, CheckpointError):
        raise  # the inspector's limits, said by the caller; or the allow-list's refusal
    except Exception as exc:  # torch's refusal is the answer: its type and words
        if "can't allocate memory" in str(exc):  # torch's allocator under the memory limit
            raise MemoryError(str(exc)) from exc
        raise CheckpointError(
            Text(
                "torch.load(weights_only=True) refused it: {error_type}: {exc}",
                error_type=type(exc).__name__,
                exc=ANSI.sub("", str(exc)),
            )
        ) from exc
    for location, value in _walk(loaded, [], limits, found):
        if isinstance(value, torch.Tensor):
            found.tensors.append((location, _of_tensor(value)))
            found.objects[".".join(location)] = value  # mapped (zip): no byte read until compared
        else:
            found.values.append((location, value))
    return found


# torch's words for a global it refuses: when it meets the name, and when it meets an instance's class
UNSAFE_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global by default|but got <class '([^']+)'>")
MAX_GLOBALS = 32  # globals of the allow-list one file may need


def _load(path: Path, fmt: str, limits: Limits, found: Found) -> object:
    """torch.load, weights only, with the allow-list of benign globals (``allowed``) for those this
    file holds, asked of torch one refusal at a time; a global off the list is refused, named with
    where it sits. Whatever the file's name: torch >= 2.13 reads a path ending in .safetensors as
    safetensors, so such a torch file is read through a link of a neutral name."""
    from app.doctor import allowed

    extra: list[object] = []
    for _ in range(MAX_GLOBALS):
        try:
            with torch.serialization.safe_globals(extra):
                return _torch_load(path, fmt)
        except pickle.UnpicklingError as exc:
            if "torch._dynamo" in str(exc) and "torch._dynamo" not in sys.modules:
                importlib.import_module("torch._dynamo")  # nested jagged tensors need it (a second)
                continue
            match = UNSAFE_GLOBAL.search(str(exc))
            if match is None:
                raise
            name = match.group(1) or match.group(2)
            allowance = allowed.allowance(path, [name], limits.pickle_max_bytes)
            if allowance.refused is not None or name in found.safe_globals:
                raise CheckpointError(allowance.refused or Text("torch refuses {name}", name=name)) from exc
            extra += allowance.globals
            found.safe_globals.append(name)
            found.read_as_dict += allowance.as_dict
    raise CheckpointError(Text("the file needs more than {n} globals of the allow-list", n=MAX_GLOBALS))


def _torch_load(path: Path, fmt: str) -> object:
    mmap = fmt == "torch_zip"
    if not path.name.endswith(".safetensors"):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    with tempfile.TemporaryDirectory(prefix="mre-renamed-") as folder:
        link = Path(folder) / "checkpoint"
        link.symlink_to(path.resolve())
        return torch.load(link, map_location="cpu", weights_only=True, mmap=mmap)


def _walk(
    obj: object, location: list[str], limits: Limits, found: Found, raw: tuple = ()
) -> Iterator[tuple[list[str], object]]:
    if len(location) > MAX_DEPTH:
        raise CheckpointError(
            Text(
                "nested deeper than {MAX_DEPTH} levels at {names}",
                MAX_DEPTH=MAX_DEPTH,
                names=".".join(location),
            )
        )
    # Every dict, list and leaf counts: a few bytes of pickle can point at one list from a million
    # places (its memo), and an empty list is no entry but still costs a visit.
    found.nodes += 1
    if found.nodes > 2 * limits.max_entries:
        raise CheckpointTooLarge(
            Text("more than {value} dicts, lists and values", value=2 * limits.max_entries)
        )
    if isinstance(obj, dict):
        if (
            obj
            and all(isinstance(k, str) for k in obj)
            and all(isinstance(v, torch.Tensor) for v in obj.values())
        ):
            found.state_dicts.append(location)
            found.dicts[".".join(location)] = obj
            found.raw[".".join(location)] = raw
        items = ((_key(k), v, k) for k, v in obj.items())
    elif isinstance(obj, list | tuple) and not isinstance(obj, torch.Size):
        items = ((str(i), v, i) for i, v in enumerate(obj))
    else:
        if len(found.tensors) + len(found.values) >= limits.max_entries:
            raise CheckpointTooLarge(Text("more than {max_entries} entries", max_entries=limits.max_entries))
        yield location, obj
        return
    for key, value, saved in items:
        yield from _walk(value, [*location, key], limits, found, (*raw, saved))


def _key(key: object) -> str:
    return key if isinstance(key, str) else value_text(key)


def read(path: Path, limits: Limits) -> tuple[str, Found, dict[str, str]]:
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise CheckpointTooLarge(
            Text("{size} bytes, over the cap of {max_bytes} bytes", size=size, max_bytes=limits.max_bytes)
        )
    fmt = sniff(path)
    if fmt == "torch_legacy" and size > limits.legacy_max_bytes:
        raise CheckpointTooLarge(
            Text(
                "{size} bytes in torch's legacy format, which is read whole into memory: over the cap "
                "of {legacy_max_bytes} bytes; saved again with torch.save (zip format) it is read in "
                "place",
                size=size,
                legacy_max_bytes=limits.legacy_max_bytes,
            )
        )
    if fmt == "safetensors":
        found, metadata = _safetensors(path, limits)
        return fmt, found, metadata
    return fmt, _torch(path, fmt, limits), {}


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


def value_text(v: object) -> str:
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
