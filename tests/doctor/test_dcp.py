"""A torch.distributed.checkpoint folder: its tensors listed from .metadata (read by an unpickler
that knows DCP's classes only), their values from the data files, a chunked tensor put together."""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)

from app.doctor.dcp import read_dcp
from app.doctor.report import CheckpointError, CheckpointTooLarge, Limits
from tests.support.checkpoints import LIMITS, ref
from tests.support.crafted import Payload


def data(folder: Path) -> list[tuple[Path, str]]:
    return [(p, p.name) for p in sorted(folder.glob("*.distcp"))]


def test_the_metadata_lists_what_torch_saved_and_the_values_are_torchs(tmp_path: Path) -> None:
    state = ref("batchnorm").state_dict()
    dcp.save(dict(state), checkpoint_id=str(tmp_path))
    found, size = read_dcp(tmp_path / ".metadata", data(tmp_path), LIMITS, load=True)
    assert [(loc, d.shape, d.dtype) for loc, d in found.tensors] == [
        ([k], list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()
    ]
    assert found.state_dicts == [[]] and all(torch.equal(found.dicts[""][k], v) for k, v in state.items())
    assert size == sum(p.stat().st_size for p in tmp_path.iterdir())


def test_a_tensor_in_two_chunks_is_put_together(tmp_path: Path) -> None:
    whole = torch.arange(12.0).reshape(4, 3)
    blob, storage = io.BytesIO(), {}
    for offset in (0, 2):  # rows 0-1 and rows 2-3, as two ranks would write them
        start = blob.tell()
        torch.save(whole[offset : offset + 2].clone(), blob)
        index = MetadataIndex("w", torch.Size([offset, 0]))
        storage[index] = _StorageInfo("__0_0.distcp", start, blob.tell() - start)
    (tmp_path / "__0_0.distcp").write_bytes(blob.getvalue())
    chunks = [ChunkStorageMetadata(torch.Size([o, 0]), torch.Size([2, 3])) for o in (0, 2)]
    listed = {"w": TensorStorageMetadata(TensorProperties(dtype=torch.float32), torch.Size([4, 3]), chunks)}
    (tmp_path / ".metadata").write_bytes(pickle.dumps(Metadata(listed, storage_data=storage)))
    found, _ = read_dcp(tmp_path / ".metadata", data(tmp_path), LIMITS, load=True)
    assert torch.equal(found.objects["w"], whole)


class ViaOs:
    """A payload through a module DCP's metadata never names at all."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [Payload, ViaOs])
def test_a_metadata_naming_any_other_global_is_refused_unrun(tmp_path: Path, payload: type) -> None:
    marker = tmp_path / "ran"
    (tmp_path / ".metadata").write_bytes(pickle.dumps(payload(marker)))
    name = "builtins.exec" if payload is Payload else f"{os.system.__module__}.system"
    with pytest.raises(CheckpointError, match=rf"names the global {re.escape(name)}, which DCP"):
        read_dcp(tmp_path / ".metadata", [], LIMITS, load=False)
    assert not marker.exists()


def test_a_plain_values_bytes_are_read_without_running_them(tmp_path: Path) -> None:
    """A value DCP saved as bytes (a torch.save of it) is loaded with weights_only: a payload there is
    refused with torch's words, and never runs."""
    _saved(tmp_path)
    (path,) = tmp_path.glob("*.distcp")
    marker = tmp_path / "ran"
    evil = io.BytesIO()
    torch.save(Payload(marker), evil)
    offset = path.stat().st_size
    with path.open("ab") as f:
        f.write(evil.getvalue())
    metadata = pickle.loads((tmp_path / ".metadata").read_bytes())
    index = next(index for index in metadata.storage_data if index.fqn == "step")
    metadata.storage_data[index] = _StorageInfo(path.name, offset, len(evil.getvalue()))
    (tmp_path / ".metadata").write_bytes(pickle.dumps(metadata))
    with pytest.raises(CheckpointError) as refused:
        read_dcp(tmp_path / ".metadata", data(tmp_path), LIMITS, load=True)
    assert str(refused.value).startswith(
        "step: torch.load(weights_only=True) refused its bytes in __0_0.distcp: UnpicklingError: "
    )
    assert not marker.exists()


def _saved(folder: Path) -> dict:
    """A training run's DCP checkpoint: a model's state_dict beside plain values, one dict mixing both."""
    model = torch.nn.Linear(2, 3)
    state = {
        "model": model.state_dict(),
        "step": 7,
        "name": "run1",
        "cfg": {"lr": 0.1, "betas": (0.9, 0.99), "half": torch.ones(2, dtype=torch.bfloat16)},
    }
    with warnings.catch_warnings():  # torch.distributed is not initialised: one process saves it all
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(state, checkpoint_id=str(folder))
    return state


@pytest.mark.parametrize("load", [False, True])
def test_a_nested_checkpoint_is_listed_by_its_keys_as_dcp_saved_them(tmp_path: Path, load: bool) -> None:
    state = _saved(tmp_path)
    found, size = read_dcp(tmp_path / ".metadata", data(tmp_path), LIMITS, load=load)
    tensors = [(["model", k], v) for k, v in state["model"].items()] + [
        (["cfg", "half"], state["cfg"]["half"])
    ]
    assert [(loc, d.shape, d.dtype, d.elements, d.bytes) for loc, d in found.tensors] == [
        (loc, list(t.shape), str(t.dtype).removeprefix("torch."), t.numel(), t.numel() * t.element_size())
        for loc, t in tensors
    ]
    values = [(["step"], 7), (["name"], "run1"), (["cfg", "lr"], 0.1), (["cfg", "betas"], "(0.9, 0.99)")]
    assert sorted(found.values) == sorted(
        (loc, value if load else "<saved as bytes>") for loc, value in values
    )
    # Only "model" holds tensors alone: the top and "cfg" hold plain values too.
    assert found.state_dicts == [["model"]] and found.raw == {"model": ("model",)}
    assert size == sum(p.stat().st_size for p in tmp_path.iterdir())
    if not load:
        assert found.objects == {} and found.dicts == {"model": {}}
        return
    assert list(found.objects) == [".".join(loc) for loc, _ in tensors]
    assert all(torch.equal(found.objects[".".join(loc)], t) for loc, t in tensors)
    assert list(found.dicts["model"]) == list(state["model"])
    assert all(torch.equal(found.dicts["model"][k], v) for k, v in state["model"].items())


def test_without_planner_data_each_tensor_is_listed_under_its_dotted_name(tmp_path: Path) -> None:
    state = _saved(tmp_path)
    metadata = pickle.loads((tmp_path / ".metadata").read_bytes())
    metadata.planner_data = None
    (tmp_path / ".metadata").write_bytes(pickle.dumps(metadata))
    found, _ = read_dcp(tmp_path / ".metadata", data(tmp_path), LIMITS, load=True)
    assert [loc for loc, _ in found.tensors] == [["model.weight"], ["model.bias"], ["cfg.half"]]
    assert torch.equal(found.objects["model.weight"], state["model"]["weight"])


def _metadata_of(size: int) -> bytes:
    """A valid .metadata padded (by a long fqn it lists) to exactly ``size`` bytes."""

    def of(name: str) -> bytes:
        listed = {name: TensorStorageMetadata(TensorProperties(dtype=torch.float32), torch.Size([1]), [])}
        return pickle.dumps(Metadata(listed))

    blob = of("w" * 300)  # long enough that its length is written in the same number of bytes
    blob = of("w" * (300 + size - len(blob)))
    assert len(blob) == size
    return blob


@pytest.mark.parametrize(("extra", "refused"), [(0, False), (1, True)])
def test_the_metadata_is_read_up_to_its_cap_and_refused_one_byte_over(
    tmp_path: Path, extra: int, refused: bool
) -> None:
    limits = Limits(max_bytes=LIMITS.max_bytes, header_max_bytes=1024, max_entries=10, pickle_max_bytes=2000)
    (tmp_path / ".metadata").write_bytes(_metadata_of(2000 + extra))
    if not refused:
        found, _ = read_dcp(tmp_path / ".metadata", [], limits, load=False)
        assert [d.shape for _, d in found.tensors] == [[1]]
        return
    with pytest.raises(CheckpointTooLarge) as over:
        read_dcp(tmp_path / ".metadata", [], limits, load=False)
    assert str(over.value) == (
        ".metadata of 2001 bytes, over the cap of 2000 bytes (MRE_CHECKPOINT_PICKLE_MAX_BYTES)"
    )


@pytest.mark.parametrize(("max_entries", "refused"), [(7, False), (6, True)])
def test_the_tensors_and_values_listed_are_capped(tmp_path: Path, max_entries: int, refused: bool) -> None:
    _saved(tmp_path)  # 7 listed: model.weight, model.bias, step, name, cfg.lr, cfg.betas, cfg.half
    limits = Limits(max_bytes=LIMITS.max_bytes, header_max_bytes=1024, max_entries=max_entries)
    if not refused:
        found, _ = read_dcp(tmp_path / ".metadata", data(tmp_path), limits, load=True)
        assert len(found.tensors) + len(found.values) == 7
        return
    with pytest.raises(CheckpointTooLarge) as over:
        read_dcp(tmp_path / ".metadata", data(tmp_path), limits, load=True)
    assert str(over.value) == "7 tensors; at most 6"


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x80\x04not a pickle", "not a DCP .metadata: UnpicklingError: "),
        (b"", "not a DCP .metadata: EOFError: Ran out of input"),
        (pickle.dumps({"state_dict_metadata": {}}), "not a DCP .metadata: it has no state_dict_metadata"),
        (
            pickle.dumps(torch.float16),
            "not a DCP .metadata: it has no state_dict_metadata",
        ),  # a dtype is allowed
        (
            b"\x80\x04ctorch\nload\n.",
            ".metadata names the global torch.load, which DCP's metadata never holds",
        ),
        (b"\x80\x04cos\nsystem\n.", ".metadata names the global os.system, which DCP's metadata never holds"),
    ],
)
def test_a_metadata_that_is_not_dcps_is_refused_by_name(tmp_path: Path, blob: bytes, message: str) -> None:
    (tmp_path / ".metadata").write_bytes(blob)
    with pytest.raises(CheckpointError) as refused:
        read_dcp(tmp_path / ".metadata", [], LIMITS, load=False)
    assert str(refused.value).startswith(message)


def _rewritten(folder: Path, change) -> None:
    metadata = pickle.loads((folder / ".metadata").read_bytes())
    change(metadata)
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))


def test_a_data_file_that_is_not_here_is_named(tmp_path: Path) -> None:
    _saved(tmp_path)
    found, _ = read_dcp(tmp_path / ".metadata", [], LIMITS, load=False)  # listing needs no data file
    assert len(found.tensors) == 3
    with pytest.raises(CheckpointError) as refused:
        read_dcp(tmp_path / ".metadata", [], LIMITS, load=True)
    assert str(refused.value) == "the .metadata puts step in __0_0.distcp, which is not here"


def test_a_chunk_torch_refuses_is_named_with_torchs_words(tmp_path: Path) -> None:
    _saved(tmp_path)
    (path,) = tmp_path.glob("*.distcp")
    path.write_bytes(b"\0" * path.stat().st_size)
    metadata = pickle.loads((tmp_path / ".metadata").read_bytes())
    first = next(info for index, info in metadata.storage_data.items() if index.fqn == "step")
    with pytest.raises(CheckpointError) as refused:
        read_dcp(tmp_path / ".metadata", data(tmp_path), LIMITS, load=True)
    with pytest.raises(Exception) as torchs:  # torch's own refusal of the same bytes
        torch.load(io.BytesIO(b"\0" * first.length), weights_only=True)
    words = f"{torchs.type.__name__}: {torchs.value}"[:1000]
    assert (
        str(refused.value)
        == f"step: torch.load(weights_only=True) refused its bytes in __0_0.distcp: {words}"
    )


def test_a_chunk_saved_with_transforms_is_refused(tmp_path: Path) -> None:
    _saved(tmp_path)

    def compressed(metadata: Metadata) -> None:
        index = next(i for i in metadata.storage_data if i.fqn == "model.bias")
        metadata.storage_data[index].transform_descriptors = ["zstd"]

    _rewritten(tmp_path, compressed)
    with pytest.raises(CheckpointError) as refused:
        read_dcp(tmp_path / ".metadata", data(tmp_path), LIMITS, load=True)
    assert str(refused.value) == "model.bias: saved with transforms (compression) the inspector does not read"


def test_a_tensor_no_data_file_holds_is_named(tmp_path: Path) -> None:
    _saved(tmp_path)
    _rewritten(tmp_path, lambda m: m.storage_data.pop(next(i for i in m.storage_data if i.fqn == "cfg.half")))
    with pytest.raises(CheckpointError) as refused:
        read_dcp(tmp_path / ".metadata", data(tmp_path), LIMITS, load=True)
    assert str(refused.value) == "the .metadata lists cfg.half, and no data file holds it"


def test_a_tensor_whose_chunks_leave_a_hole_is_refused_not_filled_with_garbage(tmp_path: Path) -> None:
    whole = torch.arange(12.0).reshape(4, 3)
    blob = io.BytesIO()
    torch.save(whole[:2].clone(), blob)  # rows 0-1 only: the rank that wrote rows 2-3 is missing
    storage = {MetadataIndex("w", torch.Size([0, 0])): _StorageInfo("__0_0.distcp", 0, blob.tell())}
    (tmp_path / "__0_0.distcp").write_bytes(blob.getvalue())
    chunks = [ChunkStorageMetadata(torch.Size([o, 0]), torch.Size([2, 3])) for o in (0, 2)]
    listed = {"w": TensorStorageMetadata(TensorProperties(dtype=torch.float32), torch.Size([4, 3]), chunks)}
    (tmp_path / ".metadata").write_bytes(pickle.dumps(Metadata(listed, storage_data=storage)))
    with pytest.raises(CheckpointError) as refused:
        read_dcp(tmp_path / ".metadata", data(tmp_path), LIMITS, load=True)
    assert str(refused.value) == "w: the data files hold 6 of its 12 elements (a chunk is missing)"
    found, _ = read_dcp(tmp_path / ".metadata", data(tmp_path), LIMITS, load=False)  # listed still
    assert [d.shape for _, d in found.tensors] == [[4, 3]]
