"""Crafted inputs for the safety tests: a checkpoint whose unpickling would run code, and files made
to crash, stall or swell whatever reads them (each small on the wire)."""

from __future__ import annotations

import builtins
import io
import zipfile
from pathlib import Path

import torch

PROTO, STOP = b"\x80\x02", b"."
EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, MARK = b"}", b"]", b")", b"("
TUPLE1, SETITEM, APPENDS, BININT1 = b"\x85", b"s", b"e", b"K\x01"


class Payload:
    """Unpickling this writes ``marker``: the side effect a malicious checkpoint would have."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def malicious_checkpoint(marker: Path, legacy: bool = False) -> bytes:
    """A torch file with a real tensor beside the payload, as an attacker would dress it."""
    buffer = io.BytesIO()
    torch.save(
        {"weight": torch.ones(2), "x": Payload(marker)}, buffer, _use_new_zipfile_serialization=not legacy
    )
    return buffer.getvalue()


def torch_zip(pickle: bytes, compress: bool = True) -> bytes:
    """A torch zip checkpoint (as torch.save writes one) whose data.pkl is ``pickle``."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        archive.writestr("archive/data.pkl", pickle)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def deep_key(depth: int) -> bytes:
    """A dict keyed by a tuple nested ``depth`` deep: hashing the key recurses ``depth`` times in C."""
    return PROTO + EMPTY_DICT + EMPTY_TUPLE + TUPLE1 * depth + BININT1 + SETITEM + STOP


def deep_value(depth: int, opener: bytes = EMPTY_LIST) -> bytes:
    """A value nested ``depth`` deep, lists or dicts, with no key to hash."""
    if opener == EMPTY_DICT:  # {1: {1: ... {}}}: each SETITEM puts the top dict into the one below
        return PROTO + (EMPTY_DICT + BININT1) * depth + EMPTY_DICT + SETITEM * depth + STOP
    return PROTO + EMPTY_LIST * depth + b"a" * (depth - 1) + STOP  # each APPEND: top into the one below


def fan_out(branching: int, depth: int) -> bytes:
    """Lists of lists ``depth`` levels deep, each holding the level below ``branching`` times over
    (one object in the pickle's memo): a few hundred bytes, branching**depth lists to walk."""
    out = PROTO + EMPTY_LIST + b"q\x00"  # BINPUT 0: the innermost, empty list
    for level in range(1, depth + 1):
        out += EMPTY_LIST + MARK + (b"h" + bytes([level - 1])) * branching + APPENDS
        out += b"q" + bytes([level])
    return out + STOP


def big_string(size: int) -> bytes:
    """A pickle of one string of ``size`` bytes: deflated in a zip, a few hundred bytes a MiB."""
    return PROTO + b"X" + size.to_bytes(4, "little") + b"a" * size + STOP


def as_saved_on_a_gpu(path: Path) -> None:
    """A torch file rewritten as if saved from cuda:0 (its storages' location), either format: what a
    GPU box's checkpoint is to a machine without one (torch.load refuses it without map_location)."""
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"  # BINUNICODE, protocol 2
    if not zipfile.is_zipfile(path):
        path.write_bytes(path.read_bytes().replace(cpu, cuda))
        return
    with zipfile.ZipFile(path) as source:
        members = [(info.filename, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for name, data in members:
            out.writestr(name, data.replace(cpu, cuda) if name.endswith("/data.pkl") else data)
