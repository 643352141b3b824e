"""Files at the edges of the formats, each against torch or safetensors read directly: the report is
linear in the file, describes what torch's weights-only load accepts, refuses what the safetensors
library would refuse (with a reason), and a load diagnosis is exactly torch's."""

from __future__ import annotations

import json
import math
import re
import time
import zipfile
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors import safe_open
from safetensors.torch import save_file

from app.doctor.describe import TREE_DEPTH
from app.doctor.examine import inspect_checkpoint
from app.doctor.formats import (
    LEGACY_MAGIC,
    MAX_DEPTH,
    SAFETENSORS_DTYPES,
    VALUE_CHARS,
    _check_zip,
    sniff,
    value_text,
)
from app.doctor.report import SHARED_NAMES, CheckpointError, CheckpointTooLarge, Limits
from app.lab.devices import device_ids
from app.lab.spec import LabSpec, resolve
from app.main import create_app
from app.settings import Settings
from tests.support.cases import CAP
from tests.support.checkpoints import refusal
from tests.support.crafted import big_string, fan_out, torch_zip
from tests.support.reference import TUTORIAL_DEFAULTS, reference

LIMITS = Limits(max_bytes=64 * 1024**2, header_max_bytes=16 * 1024**2, max_entries=100_000)


def save(obj: object, path: Path, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def raw_safetensors(path: Path, header: dict | bytes, data: bytes) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


# -- linear in the input (item 2, 3) ---------------------------------------------------------


@pytest.mark.parametrize("opener", ["lists", "dicts"])
def test_a_small_pickle_that_fans_out_is_refused_after_a_bounded_walk(tmp_path: Path, opener: str) -> None:
    if opener == "lists":
        pickle = fan_out(10, 7)  # 10**7 empty lists from a few hundred bytes
    else:  # the same with dicts: {0: inner, 1: inner, ...} at every level
        pickle = b"\x80\x02}q\x00"
        for level in range(1, 8):
            pickle += b"}(" + b"".join(b"K" + bytes([i]) + b"h" + bytes([level - 1]) for i in range(10))
            pickle += b"uq" + bytes([level])
        pickle += b"."
    path = tmp_path / "f.pt"
    path.write_bytes(torch_zip(pickle))
    started = time.process_time()  # this process's CPU: what other work on the machine leaves alone
    with pytest.raises(CheckpointTooLarge, match="more than 200000 dicts, lists and values"):
        inspect_checkpoint(path, LIMITS)
    assert time.process_time() - started < 5  # 19 s before the walk was counted


def test_twenty_thousand_safetensors_tensors_in_one_pass(tmp_path: Path) -> None:
    state = {f"t{i}": torch.zeros(1) for i in range(20_000)}
    save_file(state, tmp_path / "m.safetensors")
    started = time.process_time()
    report = inspect_checkpoint(tmp_path / "m.safetensors", LIMITS)
    assert time.process_time() - started < 8  # 29-40 s when each node searched its children
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert sorted(node.name for node in report.tree) == sorted(keys)
    assert all(node.tensors == 1 and node.bytes == 4 for node in report.tree)


def test_twelve_thousand_views_of_one_storage_are_one_group(tmp_path: Path) -> None:
    base = torch.zeros(12_000)
    state = {f"v{i}": base[i : i + 1] for i in range(12_000)}
    path = save(state, tmp_path / "views.pt")
    report = inspect_checkpoint(path, LIMITS)
    size = len(report.model_dump_json())
    assert size < 8 * path.stat().st_size  # 1.17 GB for this 985 KB file when each listed its group
    assert report.shared == [list(state)]  # the whole group, once
    assert all(t.shared_group == 0 and len(t.shared_with) == SHARED_NAMES for t in report.tensors)
    assert report.tensors[0].shared_with == [f"v{i}" for i in range(1, SHARED_NAMES + 1)]
    assert report.unique_bytes == base.untyped_storage().nbytes()


def test_a_pickle_declaring_a_huge_string_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pt"
    path.write_bytes(torch_zip(big_string(4 * 1024**2)))  # deflated to a few KB
    small = Limits(LIMITS.max_bytes, LIMITS.header_max_bytes, LIMITS.max_entries, pickle_max_bytes=1024**2)
    with pytest.raises(
        CheckpointTooLarge, match=r"archive/data.pkl declares 4194\d+ bytes .* capped at 1048576"
    ):
        inspect_checkpoint(path, small)
    assert Limits(1, 1, 1).pickle_max_bytes == Settings().checkpoint_pickle_max_bytes == 64 * 1024**2


def test_values_are_never_printed_whole(tmp_path: Path) -> None:
    path = save({"n": 2**2000, "s": "x" * 10_000, "w": torch.ones(1)}, tmp_path / "v.pt")
    values = {v.name: v.value for v in inspect_checkpoint(path, LIMITS).values}
    assert values["n"] == "an integer of 2001 bits"
    assert values["s"].startswith("'xxx") and len(values["s"]) <= 120


def test_a_key_with_many_dots_makes_a_tree_of_bounded_depth(tmp_path: Path) -> None:
    key = ".".join(["a"] * 5000)
    save_file({key: torch.zeros(1)}, tmp_path / "m.safetensors")
    node, depth = inspect_checkpoint(tmp_path / "m.safetensors", LIMITS).tree[0], 1
    while node.children:
        node, depth = node.children[0], depth + 1
    assert depth == TREE_DEPTH and node.path == key


def test_the_report_has_a_size_cap(tmp_path: Path) -> None:
    settings = Settings(checkpoint_tmp_dir=str(tmp_path), checkpoint_report_max_bytes=10_000)
    with TestClient(create_app(settings)) as api:
        body = save({f"t{i}": torch.zeros(1) for i in range(200)}, tmp_path / "m.pt").read_bytes()
        response = api.post("/api/checkpoints", files={"file": ("m.pt", body)})
    assert response.status_code == 413
    assert "over the cap of 10000 bytes (MRE_CHECKPOINT_REPORT_MAX_BYTES)" in response.json()["detail"]


# -- sharing and totals, against torch (item 21) ----------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_a_view_at_an_offset_shares_its_storage(tmp_path: Path, legacy: bool) -> None:
    t = torch.arange(12, dtype=torch.float32)
    state = {"w": t, "v": t[4:], "other": torch.ones(3)}
    loaded = torch.load(save(state, tmp_path / "m.pt", legacy), weights_only=True)
    assert loaded["v"].data_ptr() != loaded["w"].data_ptr()  # the view starts 16 bytes in
    report = inspect_checkpoint(tmp_path / "m.pt", LIMITS)
    storages = {id(x.untyped_storage()): x.untyped_storage().nbytes() for x in loaded.values()}
    assert report.shared == [["w", "v"]]
    assert report.total_bytes == sum(nbytes(x) for x in loaded.values()) == 48 + 32 + 12
    assert report.unique_bytes == sum(storages.values()) == 48 + 12 <= report.total_bytes
    assert {t.name: t.shared_with for t in report.tensors} == {"w": ["v"], "v": ["w"], "other": []}


def test_dtype_totals_are_torchs_counts(tmp_path: Path) -> None:
    state = {
        "a": torch.zeros(3, 5, dtype=torch.float64),
        "b": torch.zeros(7, dtype=torch.int8),
        "c": torch.zeros(2, 2, dtype=torch.float64),
        "d": torch.zeros(4, dtype=torch.bfloat16),
    }
    report = inspect_checkpoint(save(state, tmp_path / "m.pt"), LIMITS)
    expected: dict[str, dict[str, int]] = {}
    for t in state.values():
        total = expected.setdefault(str(t.dtype).removeprefix("torch."), dict(tensors=0, elements=0, bytes=0))
        total["tensors"] += 1
        total["elements"] += t.numel()
        total["bytes"] += nbytes(t)
    assert {k: v.model_dump() for k, v in report.dtypes.items()} == expected
    assert report.total_elements == sum(t.numel() for t in state.values())


# -- what torch's weights-only load accepts is described (item 13) ----------------------------


def sparse_and_nested() -> dict[str, torch.Tensor]:
    dense = torch.tensor([[0.0, 1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 3.0], [0, 0, 0, 0], [0, 4.0, 0, 0]])
    return {
        "coo": dense.to_sparse(),
        "csr": dense.to_sparse_csr(),
        "csc": dense.to_sparse_csc(),
        "bsr": dense.to_sparse_bsr((2, 2)),
        "nested": torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(4, 3)]),
        "jagged": torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(5, 3)], layout=torch.jagged),
        "dense": dense,
    }


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("legacy", [False, True])
def test_sparse_and_nested_tensors_are_described(tmp_path: Path, legacy: bool) -> None:
    state = sparse_and_nested()
    if legacy:  # torch 2.13 reads a strided nested tensor back from its legacy format as garbage
        del state["nested"]
    path = save(state, tmp_path / "s.pt", legacy)
    loaded = torch.load(path, weights_only=True)
    report = {t.name: t for t in inspect_checkpoint(path, LIMITS).tensors}
    for name, t in loaded.items():
        entry = report[name]
        if t.is_nested:
            parts = t.unbind()
            assert entry.layout == ("jagged" if t.layout == torch.jagged else "nested")
            assert entry.nested_shapes == [list(p.shape) for p in parts]
            assert entry.elements == sum(p.numel() for p in parts)
        elif t.is_sparse or t.layout != torch.strided:
            parts = (t._indices(), t._values()) if t.is_sparse else (t.values(),)
            assert entry.layout == str(t.layout).removeprefix("torch.")
            assert entry.shape == list(t.shape) and entry.elements == t.numel()
            assert entry.bytes >= sum(nbytes(p) for p in parts)
        else:
            assert (entry.layout, entry.bytes) == ("strided", nbytes(t))


@pytest.mark.filterwarnings("ignore")
def test_sparse_tensors_load_into_a_module_as_torch_says(tmp_path: Path) -> None:
    state = {"w": torch.eye(3).to_sparse()}
    path = save(state, tmp_path / "s.pt")
    spec = resolve(LabSpec(preset="custom"), device_ids(), CAP)
    report = inspect_checkpoint(path, LIMITS, spec)
    target = reference("custom", TUTORIAL_DEFAULTS["custom"])
    assert report.load is not None
    assert report.load.strict == refusal(lambda: target.load_state_dict(torch.load(path, weights_only=True)))


@pytest.mark.parametrize(
    ("shape", "offsets", "outcome"),
    [
        ([0, 2**70], [0, 0], "below 2**63"),
        ([2**64], [0, 0], "below 2**63"),
        ([2**40, 2**40], [0, 0], "over 2**63 - 1"),
        ([2**62, 2], [0, 0], f"shape {[2**62, 2]} has {2**63} elements, over 2**63 - 1"),
        ([2**63 - 1], [0, 0], "'a': 0 bytes for shape [9223372036854775807] of F32"),  # at the cap: counted
        ([0, 2**62], [0, 0], None),  # zero elements: described
        ([2**31, 0, 2**31], [0, 0], None),
    ],
)
def test_safetensors_shapes_with_huge_products(
    tmp_path: Path, shape: list[int], offsets: list[int], outcome: str | None
) -> None:
    path = raw_safetensors(
        tmp_path / "m.safetensors", {"a": {"dtype": "F32", "shape": shape, "data_offsets": offsets}}, b""
    )
    if outcome is None:
        report = inspect_checkpoint(path, LIMITS)
        assert (report.tensors[0].shape, report.tensors[0].elements) == (shape, 0)
    else:
        with pytest.raises(CheckpointError, match=re.escape(outcome)):
            inspect_checkpoint(path, LIMITS)


@pytest.mark.parametrize("where", ["top", "entry", "metadata"])
def test_a_safetensors_header_nested_without_end_is_422(tmp_path: Path, where: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    header = {
        "top": b'{"a": ' + deep + b"}",
        "entry": b'{"a": {"dtype": "F32", "shape": ' + deep + b', "data_offsets": [0, 0]}}',
        "metadata": b'{"__metadata__": {"x": ' + deep + b"}}",
    }[where]
    path = raw_safetensors(tmp_path / "m.safetensors", header, b"")
    with pytest.raises(CheckpointError, match="nested too deeply"):
        inspect_checkpoint(path, LIMITS)


@pytest.mark.parametrize(
    ("offsets", "data", "message"),
    [
        ([[0, 8], [12, 20]], 20, "4 bytes between tensors 'a' and 'b' belong to no tensor"),
        ([[4, 12], [12, 20]], 20, "the first 4 data bytes belong to no tensor"),
        ([[0, 8], [8, 16]], 24, "8 bytes after the last tensor belong to no tensor"),
    ],
)
@pytest.mark.parametrize("into", [False, True])
def test_safetensors_holes_and_trailing_bytes_are_refused_before_the_library(
    tmp_path: Path, offsets: list, data: int, message: str, into: bool
) -> None:
    header = {
        name: {"dtype": "F32", "shape": [2], "data_offsets": o} for name, o in zip("ab", offsets, strict=True)
    }
    path = raw_safetensors(tmp_path / "m.safetensors", header, b"\0" * data)
    with pytest.raises(Exception) as library:  # what the library itself says
        safe_open(str(path), framework="pt")
    assert re.search("metadata|offset", str(library.value), re.IGNORECASE)
    spec = resolve(LabSpec(preset="custom"), device_ids(), CAP) if into else None
    with pytest.raises(CheckpointError, match=re.escape(message)):
        inspect_checkpoint(path, LIMITS, spec)


# -- every safetensors dtype (item 18) ---------------------------------------------------------


@pytest.mark.parametrize("code", list(SAFETENSORS_DTYPES))
def test_every_safetensors_dtype_is_described(tmp_path: Path, code: str) -> None:
    bits, dtype = SAFETENSORS_DTYPES[code]
    size = 4 * bits // 8  # four elements
    path = raw_safetensors(
        tmp_path / "m.safetensors",
        {"t": {"dtype": code, "shape": [4], "data_offsets": [0, size]}},
        b"\0" * size,
    )
    with safe_open(str(path), framework="pt") as f:  # the library takes the file as it is
        assert list(f.keys()) == ["t"]
        read = refusal(lambda: f.get_tensor("t"))
    entry = inspect_checkpoint(path, LIMITS).tensors[0]
    assert (entry.shape, entry.elements, entry.bytes) == ([4], 4, size)
    if dtype is not None and dtype.itemsize * 8 == bits:
        with safe_open(str(path), framework="pt") as f:
            assert entry.dtype == str(f.get_tensor("t").dtype).removeprefix("torch.")
    else:  # F4 (torch packs two in one float4_e2m1fn_x2), F6: torch has no such element
        assert entry.dtype == code
        assert read == "ok" or "not understood" in read


@pytest.mark.parametrize(
    "dtype",
    [
        torch.complex64,
        torch.float8_e4m3fnuz,
        torch.float8_e5m2fnuz,
        torch.float8_e8m0fnu,
        torch.float4_e2m1fn_x2,
    ],
)
def test_files_safetensors_writes_are_read(tmp_path: Path, dtype: torch.dtype) -> None:
    t = (
        torch.zeros(2, 4, dtype=torch.uint8).view(dtype)
        if dtype.itemsize == 1
        else torch.zeros(2, 4, dtype=dtype)
    )
    save_file({"t": t}, tmp_path / "m.safetensors")
    report = inspect_checkpoint(tmp_path / "m.safetensors", LIMITS)
    assert report.tensors[0].bytes == nbytes(t) == report.total_bytes


# -- the load diagnosis is torch's, metadata included (item 17) --------------------------------


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("at", ["", "model"])
def test_a_batchnorm_state_without_num_batches_tracked_is_refused_as_torch_refuses(
    tmp_path: Path, legacy: bool, at: str
) -> None:
    styles = TUTORIAL_DEFAULTS["batchnorm"]
    state = reference("batchnorm", styles).state_dict()
    del state["bn.num_batches_tracked"]  # _metadata stays: the module versions torch.save keeps
    path = save({"model": state} if at else state, tmp_path / "bn.pt", legacy)
    loaded = torch.load(path, weights_only=True)
    loaded = loaded["model"] if at else loaded
    strict = refusal(lambda: reference("batchnorm", styles).load_state_dict(loaded))
    loose = reference("batchnorm", styles).load_state_dict(loaded, strict=False)
    assert 'Missing key(s) in state_dict: "bn.num_batches_tracked"' in strict
    report = inspect_checkpoint(path, LIMITS, resolve(LabSpec(preset="batchnorm"), device_ids(), CAP), at)
    assert report.load is not None
    assert report.load.strict == strict
    assert report.load.missing_keys == loose.missing_keys == ["bn.num_batches_tracked"]


# -- through the API: an answer, never a 500 ---------------------------------------------------


def api_cases(tmp_path: Path) -> list[tuple[str, bytes, int, str]]:
    """(query, file, status, words in the answer) for one file of each kind above."""
    sparse = save(sparse_and_nested(), tmp_path / "s.pt").read_bytes()
    huge = {"a": {"dtype": "F32", "shape": [0, 2**70], "data_offsets": [0, 0]}}
    holes = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    f6 = {"w": {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [0, 3]}}
    deep = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return [
        ("", sparse, 200, '"layout":"sparse_csr"'),
        ("", raw_safetensors(tmp_path / "h", huge, b"").read_bytes(), 422, "below 2**63"),
        ("?preset=custom", raw_safetensors(tmp_path / "g", holes, b"\0" * 12).read_bytes(), 422, "no tensor"),
        ("", raw_safetensors(tmp_path / "f", f6, b"\0" * 3).read_bytes(), 200, '"dtype":"F6_E2M3"'),
        ("", raw_safetensors(tmp_path / "d", deep, b"").read_bytes(), 422, "nested too deeply"),
    ]


@pytest.mark.filterwarnings("ignore")
def test_the_api_answers_each_kind_without_a_server_error(client: TestClient, tmp_path: Path) -> None:
    for query, content, status, words in api_cases(tmp_path):
        response = client.post("/api/checkpoints" + query, files={"file": ("m", content)})
        assert (response.status_code, words in response.text) == (status, True), response.text[:300]


# -- what a file is, by its bytes, whatever its name ---------------------------------------------


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 1234\n", "a Git LFS pointer"),
        (b"\n  <!DOCTYPE html><html><body>Sign in</body></html>", "an HTML page, not a checkpoint"),
        (b"GGUF\x03\x00\x00\x00" + bytes(24), "a GGUF file (llama.cpp's format, version 3)"),
        (b"\x93NUMPY\x01\x00v\x00", "a NumPy .npy array"),
    ],
)
def test_what_users_send_instead_is_named_by_its_first_bytes(
    tmp_path: Path, content: bytes, said: str
) -> None:
    (tmp_path / "model.safetensors").write_bytes(content)  # the name is only what the user typed
    with pytest.raises(CheckpointError, match=re.escape(said)):
        inspect_checkpoint(tmp_path / "model.safetensors", LIMITS)


def test_a_torch_file_named_safetensors_is_read_as_the_torch_file_it_is(tmp_path: Path) -> None:
    state = reference("batchnorm", TUTORIAL_DEFAULTS["batchnorm"]).state_dict()
    torch.save(state, tmp_path / "model.safetensors")
    report = inspect_checkpoint(tmp_path / "model.safetensors", LIMITS)
    assert report.format == "torch_zip" and [t.name for t in report.tensors] == list(state)


def test_a_dcp_data_file_alone_is_named_with_its_items(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    state = reference("batchnorm", TUTORIAL_DEFAULTS["batchnorm"]).state_dict()
    dcp.save(dict(state), checkpoint_id=str(tmp_path))
    (data,) = tmp_path.glob("*.distcp")
    with pytest.raises(CheckpointError, match=rf"DCP\) checkpoint: {len(state)} items saved back to back"):
        inspect_checkpoint(data, LIMITS)


# -- every cap at its boundary: N read, N + 1 refused, in so many words --------------------------


def limits(**caps: int) -> Limits:
    return Limits(**{"max_bytes": 10**6, "header_max_bytes": 10**4, "max_entries": 100, **caps})


def refused_by(path: Path, caps: Limits) -> str:
    with pytest.raises(CheckpointError) as refused:
        inspect_checkpoint(path, caps)
    return str(refused.value)


def entries(count: int, metadata: dict | None = None) -> dict:
    header: dict = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(count)}
    return header | ({"__metadata__": metadata} if metadata is not None else {})


@pytest.mark.parametrize("over", [0, 1])
def test_the_file_cap(tmp_path: Path, over: int) -> None:
    path = save({"w": torch.zeros(4)}, tmp_path / "m.pt")
    caps = limits(max_bytes=path.stat().st_size - over)
    if not over:
        assert [t.name for t in inspect_checkpoint(path, caps).tensors] == ["w"]
        return
    size = path.stat().st_size
    assert refused_by(path, caps) == f"{size} bytes, over the cap of {size - 1} bytes"


@pytest.mark.parametrize("over", [0, 1])
def test_the_legacy_cap(tmp_path: Path, over: int) -> None:
    path = save({"w": torch.zeros(4)}, tmp_path / "m.pt", legacy=True)
    size = path.stat().st_size
    caps = limits(legacy_max_bytes=size - over)
    if not over:
        assert inspect_checkpoint(path, caps).format == "torch_legacy"
        return
    assert refused_by(path, caps).startswith(
        f"{size} bytes in torch's legacy format, which is read whole into memory: over the cap of "
        f"{size - 1} bytes"
    )


@pytest.mark.parametrize("over", [0, 1])
def test_the_safetensors_header_cap(tmp_path: Path, over: int) -> None:
    path = raw_safetensors(tmp_path / "m.safetensors", entries(2), b"\0\0")
    length = int.from_bytes(path.read_bytes()[:8], "little")
    caps = limits(header_max_bytes=length - over)
    if not over:
        assert len(inspect_checkpoint(path, caps).tensors) == 2
        return
    assert (
        refused_by(path, caps)
        == f"safetensors header of {length} bytes is over the cap of {length - 1} bytes"
    )


@pytest.mark.parametrize("cut", [0, 1])
def test_a_header_longer_than_the_file_is_truncated(tmp_path: Path, cut: int) -> None:
    raw = json.dumps(entries(0, {"a": "b"})).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw[: len(raw) - cut])
    if not cut:
        assert inspect_checkpoint(path, LIMITS).metadata == {"a": "b"}
        return
    assert (
        refused_by(path, LIMITS)
        == f"truncated: the header says {len(raw)} bytes, the file has {len(raw) - 1} after it"
    )


@pytest.mark.parametrize("over", [0, 1])
def test_the_safetensors_tensor_cap_counts_tensors_not_metadata(tmp_path: Path, over: int) -> None:
    path = raw_safetensors(tmp_path / "m.safetensors", entries(5, {"format": "pt"}), bytes(5))
    caps = limits(max_entries=5 - over)
    if not over:
        assert len(inspect_checkpoint(path, caps).tensors) == 5
        return
    assert refused_by(path, caps) == "5 tensors; at most 4"


@pytest.mark.parametrize(
    ("metadata", "accepted"),
    [
        (None, True),
        ({}, True),
        ({"format": "pt"}, True),
        ({"n": 1}, False),
        (0, False),
        ("", False),
        ([], False),
    ],
)
def test_safetensors_metadata_is_a_map_of_strings_or_absent(
    tmp_path: Path, metadata: object, accepted: bool
) -> None:
    header = entries(1) | {"__metadata__": metadata}
    path = raw_safetensors(tmp_path / "m.safetensors", header, b"\0")
    if accepted:
        assert inspect_checkpoint(path, LIMITS).metadata == (metadata or {})
        return
    assert refused_by(path, LIMITS) == "safetensors __metadata__ must map strings to strings"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ([1, 2], "'a': an entry must be an object with dtype, shape, data_offsets"),
        (
            {"dtype": 5, "shape": [1], "data_offsets": [0, 1]},
            "'a': unknown dtype 5; known: " + ", ".join(SAFETENSORS_DTYPES),
        ),
        (
            {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]},
            "'a': shape must be a list of non-negative integers below 2**63",
        ),
        (
            {"dtype": "U8", "shape": [1.0], "data_offsets": [0, 1]},
            "'a': shape must be a list of non-negative integers below 2**63",
        ),
        (
            {"dtype": "U8", "shape": [2**63], "data_offsets": [0, 1]},
            "'a': shape must be a list of non-negative integers below 2**63",
        ),
        (
            {"dtype": "U8", "shape": 1, "data_offsets": [0, 1]},
            "'a': shape must be a list of non-negative integers below 2**63",
        ),
        (
            {"dtype": "U8", "shape": [1] * 65, "data_offsets": [0, 1]},
            "'a': shape has 65 dimensions; torch allows at most 64",
        ),
        ({"dtype": "U8", "shape": [1], "data_offsets": [0]}, "'a': data_offsets must be [begin, end]"),
        ({"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}, "'a': data_offsets must be [begin, end]"),
        ({"dtype": "U8", "shape": [1], "data_offsets": [0, 1.0]}, "'a': data_offsets must be [begin, end]"),
        (
            {"dtype": "U8", "shape": [0], "data_offsets": [1, 0]},
            "'a': data_offsets [1, 0] fall outside the 1 data bytes (truncated?)",
        ),
        (
            {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]},
            "'a': data_offsets [-1, 0] fall outside the 1 data bytes (truncated?)",
        ),
        (
            {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
            "'a': data_offsets [0, 2] fall outside the 1 data bytes (truncated?)",
        ),
        (
            {"dtype": "F4", "shape": [1], "data_offsets": [0, 1]},
            "'a': 1 elements of F4 (4 bits each) are not whole bytes",
        ),
        (
            {"dtype": "F6_E2M3", "shape": [2], "data_offsets": [0, 1]},
            "'a': 2 elements of F6_E2M3 (6 bits each) are not whole bytes",
        ),
        ({"dtype": "F16", "shape": [1], "data_offsets": [0, 1]}, "'a': 1 bytes for shape [1] of F16 (2)"),
        (  # the most elements a shape may have: checked against its bytes, not refused as too many
            {"dtype": "U8", "shape": [2**63 - 1], "data_offsets": [0, 1]},
            f"'a': 1 bytes for shape [{2**63 - 1}] of U8 ({2**63 - 1})",
        ),
        (
            {"dtype": "U8", "shape": [], "data_offsets": [0, 0]},
            "'a': 0 bytes for shape [] of U8 (1)",
        ),  # a scalar is one
    ],
)
def test_each_malformed_safetensors_entry_is_refused_in_so_many_words(
    tmp_path: Path, entry: object, message: str
) -> None:
    path = raw_safetensors(tmp_path / "m.safetensors", {"a": entry}, b"\0")
    assert refused_by(path, LIMITS) == message


@pytest.mark.parametrize(("dims", "shape"), [(64, [1] * 64), (2, [2, 3])])
def test_shapes_up_to_torchs_dimensions_are_described(tmp_path: Path, dims: int, shape: list[int]) -> None:
    size = math.prod(shape)
    path = raw_safetensors(
        tmp_path / "m.safetensors",
        {"a": {"dtype": "F8_E4M3", "shape": shape, "data_offsets": [0, size]}},
        bytes(size),
    )
    (entry,) = inspect_checkpoint(path, LIMITS).tensors
    assert (len(entry.shape), entry.elements, entry.bytes, entry.dtype) == (dims, size, size, "float8_e4m3fn")


def test_overlapping_tensors_are_named_in_the_order_of_their_bytes(tmp_path: Path) -> None:
    header = {
        "z": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
        "y": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
    }
    path = raw_safetensors(tmp_path / "m.safetensors", header, bytes(3))
    assert refused_by(path, LIMITS) == "tensors 'z' and 'y' overlap (safetensors forbids it)"


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        (b"\x01" * 8 + b"{", "safetensors"),  # the shortest head a safetensors file can have
        (b"\x01" * 8 + b"[", None),
        (b"\x01" * 8, None),
        (b"PK\x03\x04", "torch_zip"),
        (LEGACY_MAGIC, "torch_legacy"),
    ],
)
def test_a_format_is_told_by_its_first_bytes(tmp_path: Path, content: bytes, fmt: str | None) -> None:
    (tmp_path / "f").write_bytes(content)
    if fmt is not None:
        assert sniff(tmp_path / "f") == fmt
        return
    with pytest.raises(CheckpointError) as refused:
        sniff(tmp_path / "f")
    assert str(refused.value) == (
        f"not a safetensors or torch checkpoint: it starts with {content[:8].hex(' ')} (safetensors starts "
        "with an 8-byte header size and '{', torch files with a zip or pickle header)"
    )


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"version https://git-lfs.github.com/spec/v1\nsize 1234\n", "stands for a file of 1234 bytes which"),
        (b"version https://git-lfs.github.com/spec/v1\nsize 12 34\n", "stands for a file of ? bytes which"),
        (b"version https://git-lfs.github.com/spec/v1\n", "stands for a file of ? bytes which"),
        (b"<html><body>", "an HTML page, not a checkpoint"),
        (b"  <HEAD>", "an HTML page, not a checkpoint"),
        (b"<!-- saved -->", "an HTML page, not a checkpoint"),
        (b"GGUF\x02\x00\x00", "a GGUF file (llama.cpp's format, version ?)"),
        (b"GGUF\x02\x00\x00\x00", "a GGUF file (llama.cpp's format, version 2)"),
    ],
)
def test_what_is_sent_instead_is_said_with_what_its_head_holds(
    tmp_path: Path, content: bytes, said: str
) -> None:
    (tmp_path / "f").write_bytes(content)
    with pytest.raises(CheckpointError) as refused:
        sniff(tmp_path / "f")
    assert said in str(refused.value)


def _zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("over", [0, 1])
def test_the_zip_caps_members_declared_bytes_and_pickles(tmp_path: Path, over: int) -> None:
    path = _zip_of(tmp_path / "m.pt", {"a/data.pkl": b"x" * 10, "a/data/0": b"y" * 20, "a/version": b"3"})
    checks = [
        (limits(max_entries=3 - over), "the zip holds 3 members; at most 2"),
        (limits(max_bytes=path.stat().st_size, pickle_max_bytes=10), None),
        (
            limits(pickle_max_bytes=10 - over),
            "a/data.pkl declares 10 bytes once unpacked: the pickle holds the "
            "structure, not the tensors, and is capped at 9 bytes (MRE_CHECKPOINT_PICKLE_MAX_BYTES)",
        ),
    ]
    for caps, message in checks:
        if not over or message is None:
            _check_zip(path, caps)  # passes the zip's own checks (torch would then refuse these bytes)
        else:
            with pytest.raises(CheckpointTooLarge) as refused:
                _check_zip(path, caps)
            assert str(refused.value) == message


@pytest.mark.parametrize("over", [0, 1])
def test_the_zip_cap_on_declared_bytes(tmp_path: Path, over: int) -> None:
    path = _zip_of(tmp_path / "m.pt", {"a/data.pkl": b"x" * 10, "a/data/0": bytes(5000)})  # 5010 declared
    caps = limits(max_bytes=5010 - over)
    if not over:
        _check_zip(path, caps)
        return
    with pytest.raises(CheckpointTooLarge) as refused:
        _check_zip(path, caps)
    assert str(refused.value) == "the zip declares 5010 bytes once unpacked, over the cap of 5009 bytes"


def _nested(depth: int) -> dict:
    obj: dict = {"w": torch.zeros(1)}
    for i in range(depth - 1):
        obj = {f"k{i}": obj}
    return obj


@pytest.mark.parametrize("depth", [MAX_DEPTH, MAX_DEPTH + 1])
def test_nesting_is_read_to_its_depth_and_refused_one_deeper(tmp_path: Path, depth: int) -> None:
    path = save(_nested(depth), tmp_path / "m.pt")  # depth keys down to the tensor
    if depth == MAX_DEPTH:
        (tensor,) = inspect_checkpoint(path, LIMITS).tensors
        assert len(tensor.location) == MAX_DEPTH
        return
    names = ".".join([*(f"k{i}" for i in reversed(range(depth - 1))), "w"])
    assert refused_by(path, LIMITS) == f"nested deeper than {MAX_DEPTH} levels at {names}"


@pytest.mark.parametrize("over", [0, 1])
def test_values_and_tensors_are_capped_together(tmp_path: Path, over: int) -> None:
    path = save({"a": torch.zeros(1), "b": 1, "c": "x"}, tmp_path / "m.pt", legacy=True)  # no zip members
    caps = limits(max_entries=3 - over)
    if not over:
        report = inspect_checkpoint(path, caps)
        assert len(report.tensors) + len(report.values) == 3
        return
    with pytest.raises(CheckpointTooLarge) as refused:
        inspect_checkpoint(path, caps)
    assert str(refused.value) == "more than 2 entries"


@pytest.mark.parametrize("over", [0, 1])
def test_dicts_lists_and_leaves_walked_are_capped_at_twice_the_entries(tmp_path: Path, over: int) -> None:
    # the top, "a", its empty lists, "b" and its tensor: 8 walked, then 9; the cap is 2 * 4
    path = save({"a": [[] for _ in range(4 + over)], "b": [torch.zeros(1)]}, tmp_path / "m.pt", legacy=True)
    caps = limits(max_entries=4)
    if not over:
        assert len(inspect_checkpoint(path, caps).tensors) == 1
        return
    with pytest.raises(CheckpointTooLarge) as refused:
        inspect_checkpoint(path, caps)
    assert str(refused.value) == "more than 8 dicts, lists and values"


def test_keys_that_are_not_strings_are_named_as_python_writes_them(tmp_path: Path) -> None:
    path = save({0: {"w": torch.zeros(1)}, (1, "a"): torch.zeros(1), None: 2}, tmp_path / "m.pt")
    report = inspect_checkpoint(path, LIMITS)
    assert [t.location for t in report.tensors] == [["0", "w"], ["(1, 'a')"]]
    assert report.state_dicts == ["0"]  # a dict of tensors under a key that is no string


class Unprintable:
    def __repr__(self) -> str:
        raise ValueError("no")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("x" * VALUE_CHARS, repr("x" * VALUE_CHARS)[: VALUE_CHARS - 1] + "…"),  # quotes make it 122 long
        ("x" * (VALUE_CHARS - 2), repr("x" * (VALUE_CHARS - 2))),  # 120 with its quotes: whole
        (b"ab", "b'ab'"),
        (2 ** (4 * VALUE_CHARS) - 1, None),  # 480 bits: written out (145 digits, then cut)
        (2 ** (4 * VALUE_CHARS), f"an integer of {4 * VALUE_CHARS + 1} bits"),
        (list(range(100)), repr(list(range(100)))[: VALUE_CHARS - 1] + "…"),
        (Unprintable(), "<Unprintable: repr() failed: ValueError>"),
    ],
)
def test_a_value_is_shown_as_python_writes_it_cut_to_its_length(value: object, text: str | None) -> None:
    if text is None:
        text = repr(value)[: VALUE_CHARS - 1] + "…"
    assert value_text(value) == text and len(value_text(value)) <= VALUE_CHARS


def test_a_long_string_is_cut_before_it_is_written_and_its_length_said() -> None:
    said = value_text("y" * 10_000)
    assert said.startswith(repr("y" * VALUE_CHARS)[: VALUE_CHARS - 1]) and said.endswith("…")
    assert value_text("y" * 100 + "z" * 30).count("z") == 18  # repr of the first 120, then cut at 119
    assert value_text(b"q" * 121) == (repr(b"q" * VALUE_CHARS) + " ... (121 in all)")[: VALUE_CHARS - 1] + "…"
