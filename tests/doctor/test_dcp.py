"""A torch.distributed.checkpoint folder: its tensors listed from .metadata (read by an unpickler
that knows DCP's classes only), their values from the data files, a chunked tensor put together."""

from __future__ import annotations

import io
import pickle
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
from app.doctor.report import CheckpointError
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


def test_a_metadata_naming_any_other_global_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError, match=r"names the global builtins\.exec"):
        read_dcp(tmp_path / ".metadata", [], LIMITS, load=False)
    assert not marker.exists()
