"""Files at the edges of the formats, each against torch or safetensors read directly: the report is
linear in the file, describes what torch's weights-only load accepts, refuses what the safetensors
library would refuse (with a reason), and a load diagnosis is exactly torch's."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors import safe_open
from safetensors.torch import save_file

from app.doctor.describe import TREE_DEPTH
from app.doctor.examine import inspect_checkpoint
from app.doctor.formats import SAFETENSORS_DTYPES
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
