"""The checkpoint inspector against the files torch and safetensors write, and torch's own loads."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from app.doctor.examine import inspect_checkpoint
from app.doctor.formats import MAX_DEPTH, torch_ok
from app.doctor.report import CheckpointError, CheckpointTooLarge, Limits
from tests.support.checkpoints import FORMATS, LIMITS, ref, save, spec
from tests.support.crafted import as_saved_on_a_gpu
from tests.support.reference import reference


@pytest.mark.parametrize("fmt", FORMATS)
def test_torch_file_lists_what_torch_loads(tmp_path: Path, fmt: str) -> None:
    state = reference("batchnorm", {"scale": "buffer"}).state_dict()
    report = inspect_checkpoint(save(state, tmp_path / "m.pt", fmt), LIMITS)
    assert report.format == fmt
    loaded = torch.load(tmp_path / "m.pt", weights_only=True)
    assert [(t.name, t.shape, t.dtype) for t in report.tensors] == [
        (k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in loaded.items()
    ]
    assert report.dtypes["int64"].tensors == 1  # num_batches_tracked
    assert report.total_bytes == sum(v.numel() * v.element_size() for v in loaded.values())
    assert report.state_dicts == [""]
    # The tree by module path: bn holds its weight, bias and three running buffers.
    bn = next(node for node in report.tree if node.name == "bn")
    assert [c.name for c in bn.children] == [k.split(".", 1)[1] for k in loaded if k.startswith("bn.")]
    assert bn.bytes == sum(v.numel() * v.element_size() for k, v in loaded.items() if k.startswith("bn."))


def test_safetensors_from_its_header(tmp_path: Path) -> None:
    state = {
        "a.weight": torch.randn(3, 4),
        "a.steps": torch.arange(5),
        "b": torch.zeros(2, dtype=torch.bfloat16),
    }
    save_file(state, tmp_path / "m.safetensors", metadata={"format": "pt", "epoch": "3"})
    report = inspect_checkpoint(tmp_path / "m.safetensors", LIMITS)
    assert report.format == "safetensors" and report.metadata == {"format": "pt", "epoch": "3"}
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        expected = {k: (f.get_slice(k).get_shape(), f.get_tensor(k).dtype) for k in f.keys()}  # noqa: SIM118
    assert {t.name: (t.shape, t.dtype) for t in report.tensors} == {
        k: (shape, str(dtype).removeprefix("torch.")) for k, (shape, dtype) in expected.items()
    }
    assert report.dtypes["bfloat16"].bytes == 4 and report.unique_bytes == report.total_bytes


def test_training_checkpoint_is_navigated_to_its_tensors(tmp_path: Path) -> None:
    model = ref("testmodel", buffer1="buffer")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 7}
    report = inspect_checkpoint(save(checkpoint, tmp_path / "c.pt", "torch_zip"), LIMITS)
    assert "model" in report.state_dicts
    assert {"name": "epoch", "type": "int", "value": "7"}.items() <= report.values[-1].model_dump().items()
    momentum = [t.name for t in report.tensors if t.name.endswith("momentum_buffer")]
    assert len(momentum) == len(list(model.parameters()))
    assert [n.name for n in report.tree] == ["model", "optimizer"]


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (b"", CheckpointError, "the file is empty"),
        (b"hello, world: not a model", CheckpointError, "not a safetensors or torch checkpoint"),
        ((2**40).to_bytes(8, "little") + b"{}", CheckpointTooLarge, "header of 1099511627776 bytes is over"),
        ((100).to_bytes(8, "little") + b"{}", CheckpointError, "truncated: the header says 100 bytes"),
        ((4).to_bytes(8, "little") + b"{ x]", CheckpointError, "header is not JSON"),
        ((2).to_bytes(8, "little") + b"[]", CheckpointError, "not a safetensors"),
        (b"PK\x03\x04 cut short", CheckpointError, "not a readable zip"),
    ],
)
def test_garbage_is_refused_with_a_reason(tmp_path: Path, content: bytes, error: type, message: str) -> None:
    (tmp_path / "f").write_bytes(content)
    with pytest.raises(error, match=message):
        inspect_checkpoint(tmp_path / "f", LIMITS)


def test_safetensors_offsets_are_checked(tmp_path: Path) -> None:
    save_file({"a": torch.ones(4), "b": torch.ones(4)}, tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut").write_bytes(data[:-8])
    with pytest.raises(CheckpointError, match="fall outside"):
        inspect_checkpoint(tmp_path / "cut", LIMITS)


def test_legacy_format_has_its_own_cap(tmp_path: Path) -> None:
    path = save({"w": torch.zeros(1024)}, tmp_path / "m.pt", "torch_legacy")
    small = Limits(LIMITS.max_bytes, LIMITS.header_max_bytes, LIMITS.max_entries, legacy_max_bytes=1024)
    with pytest.raises(CheckpointTooLarge, match="legacy format, which is read whole"):
        inspect_checkpoint(path, small)


def test_torch_version_floor() -> None:
    assert torch_ok()  # this test run's torch
    assert not torch_ok("2.9.1+cpu") and torch_ok("2.10.0") and torch_ok("3.0.0")


def safetensors_file(path: Path, header: dict, data: bytes) -> Path:
    """A safetensors file written by hand, so its header can say what safetensors would never write."""
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            "tensors 'a' and 'b' overlap",
        ),
        ({"a": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, "'a': unknown dtype 'F99'"),
        (
            {"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}},
            "shape must be a list of non-negative",
        ),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, "8 bytes for shape [3] of F32 (12)"),
        ({"a": {"dtype": "F32", "shape": [2]}}, "data_offsets must be [begin, end]"),
        ({"a": [1, 2]}, "an entry must be an object"),
        ({"__metadata__": {"epoch": 3}}, "__metadata__ must map strings to strings"),
    ],
)
def test_safetensors_header_is_checked_against_the_format(tmp_path: Path, header: dict, message: str) -> None:
    path = safetensors_file(tmp_path / "m.safetensors", header, b"\0" * 16)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        inspect_checkpoint(path, LIMITS)


def test_entry_caps(tmp_path: Path) -> None:
    few = Limits(LIMITS.max_bytes, LIMITS.header_max_bytes, max_entries=3)
    save_file({f"t{i}": torch.zeros(1) for i in range(4)}, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointTooLarge, match="4 tensors; at most 3"):
        inspect_checkpoint(tmp_path / "m.safetensors", few)
    values = save({"a": 1, "b": 2, "c": 3, "d": 4}, tmp_path / "v.pt", "torch_legacy")
    with pytest.raises(CheckpointTooLarge, match="more than 3 entries"):
        inspect_checkpoint(values, few)
    members = save({f"t{i}": torch.zeros(1) for i in range(4)}, tmp_path / "z.pt", "torch_zip")
    with pytest.raises(CheckpointTooLarge, match=r"the zip holds \d+ members; at most 3"):
        inspect_checkpoint(members, few)


def test_nesting_is_capped(tmp_path: Path) -> None:
    deep: dict = {"w": torch.ones(1)}
    for _ in range(MAX_DEPTH + 1):
        deep = {"x": deep}
    with pytest.raises(CheckpointError, match=f"nested deeper than {MAX_DEPTH} levels"):
        inspect_checkpoint(save(deep, tmp_path / "d.pt", "torch_zip"), LIMITS)


A_TENSOR = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}


@pytest.mark.parametrize("metadata", [0, False, "", [], 1, "x", [["a", "b"]]])
def test_metadata_that_is_no_map_is_refused_as_the_library_refuses_it(
    tmp_path: Path, metadata: object
) -> None:
    path = safetensors_file(tmp_path / "m.safetensors", {"__metadata__": metadata, "a": A_TENSOR}, b"\0" * 4)
    with pytest.raises(Exception):  # noqa: B017 - the library's own error type
        safe_open(str(path), "pt")
    with pytest.raises(CheckpointError, match="__metadata__ must map strings to strings"):
        inspect_checkpoint(path, LIMITS)


def test_null_or_no_metadata_is_none(tmp_path: Path) -> None:
    for header in ({"__metadata__": None, "a": A_TENSOR}, {"a": A_TENSOR}):
        path = safetensors_file(tmp_path / "m.safetensors", header, b"\0" * 4)
        safe_open(str(path), "pt")
        assert inspect_checkpoint(path, LIMITS).metadata == {}


def test_a_shape_of_too_many_dimensions_is_refused_at_once(tmp_path: Path) -> None:
    """Before any product: 400,000 dimensions took 7 s of CPU, then a 190,000-digit number to print."""
    entry = {"dtype": "F32", "shape": [3] * 400_000, "data_offsets": [0, 4]}
    path = safetensors_file(tmp_path / "m.safetensors", {"a": entry}, b"\0" * 4)
    limits = Limits(LIMITS.max_bytes, header_max_bytes=16 * 1024**2, max_entries=10)
    started = time.process_time()
    with pytest.raises(CheckpointError, match="shape has 400000 dimensions; torch allows at most 64"):
        inspect_checkpoint(path, limits)
    assert time.process_time() - started < 1


def test_numbers_too_long_to_print_are_refused_plainly(tmp_path: Path) -> None:
    """The largest 64 dimensions multiply to a number that prints (about 1,200 digits); an offset of
    5,000 digits is not JSON Python reads, and says so."""
    entry = {"dtype": "F32", "shape": [2**63 - 1] * 64, "data_offsets": [0, 4]}
    path = safetensors_file(tmp_path / "m.safetensors", {"a": entry}, b"\0" * 4)
    with pytest.raises(CheckpointError, match="elements, over 2\\*\\*63 - 1"):
        inspect_checkpoint(path, LIMITS)
    raw = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,' + b"9" * 5000 + b"]}}"
    path = tmp_path / "n.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 4)
    with pytest.raises(CheckpointError, match="safetensors header is not JSON"):
        inspect_checkpoint(path, LIMITS)


class Config(dict):
    pass


class Hyper(dict):
    pass


def test_an_allow_listed_global_is_said_and_so_is_the_absence_of_a_dict_subclass(tmp_path: Path) -> None:
    import argparse

    torch.save({"w": torch.ones(2), "args": argparse.Namespace(lr=0.1)}, tmp_path / "c.pt")
    notes = [note["en"] for note in inspect_checkpoint(tmp_path / "c.pt", LIMITS).notes]
    assert (
        "read with the allow-list of benign globals: argparse.Namespace (nothing of the file's code runs;"
        " no dict subclass read as OrderedDict)" in notes
    )
    # Each dict subclass torch refuses, one at a time: every one of them is said.
    torch.save({"w": torch.ones(2), "cfg": Config(a=1), "hp": Hyper(b=2)}, tmp_path / "d.pt")
    report = inspect_checkpoint(tmp_path / "d.pt", LIMITS)
    names = f"{__name__}.Config, {__name__}.Hyper"
    assert (
        f"read with the allow-list of benign globals: {names} (nothing of the file's code runs;"
        f" {names} read as OrderedDict)" in [note["en"] for note in report.notes]
    )


def test_the_script_loads_the_file_by_the_name_the_user_gave_it(tmp_path: Path) -> None:
    """The upload lies under a temporary name; the script must open the file the user has."""
    path = save(ref("testmodel").state_dict(), tmp_path / "upload-1f3a", "torch_zip")
    named = inspect_checkpoint(path, LIMITS, spec("testmodel"), name="my model.pt")
    assert named.load is not None and 'torch.load("my model.pt", ' in named.load.script
    assert "upload-1f3a" not in named.load.script
    unnamed = inspect_checkpoint(path, LIMITS, spec("testmodel"))
    assert unnamed.load is not None and f'torch.load("{path}", ' in unnamed.load.script


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_checkpoint_saved_on_a_gpu_is_read_and_loaded_on_a_machine_without_one(
    tmp_path: Path, fmt: str
) -> None:
    state = ref("testmodel").state_dict()
    path = save(state, tmp_path / "gpu.pt", fmt)
    as_saved_on_a_gpu(path)
    if not torch.cuda.is_available():  # the file really is a GPU's: torch refuses it as it is
        with pytest.raises(RuntimeError, match=r"on a CUDA device but torch\.cuda\.is_available"):
            torch.load(path, weights_only=True)
    report = inspect_checkpoint(path, LIMITS, spec("testmodel"))
    assert [t.name for t in report.tensors] == list(state)
    assert report.load is not None and report.load.strict == "ok"
    assert 'map_location="cpu"' in report.load.script
