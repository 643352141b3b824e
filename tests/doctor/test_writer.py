"""The fixed checkpoint written: the fixes proven, the state loaded with strict=True before and after
writing, tied tensors each a copy of their own; nothing written where some tensors would not come
from the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_model

from app.doctor.report import CheckpointError
from app.doctor.writer import _unshared, write_fixed
from tests.support.checkpoints import LIMITS, ref, spec


def test_a_wrapped_tied_checkpoint_is_written_loadable(tmp_path: Path) -> None:
    model = ref("tied_weights")
    state = {f"module.{k}": v for k, v in model.state_dict().items() if k != "head.weight"}
    torch.save(state, tmp_path / "in.pt")
    out = tmp_path / "out.safetensors"
    written = write_fixed([tmp_path / "in.pt"], ["in.pt"], LIMITS, spec("tied_weights"), None, out)
    assert (written.verdict, len(written.fixes), written.tensors) == ("fixed", 2, 3)
    fixed = load_file(out)
    target = ref("tied_weights")
    target.load_state_dict(fixed, strict=True)
    assert torch.equal(fixed["head.weight"], model.state_dict()["embed.weight"])
    assert target.head.weight is target.embed.weight  # the module's tie holds after the load


def test_nothing_is_written_unless_every_tensor_comes_from_the_file(tmp_path: Path) -> None:
    norm = ref("batchnorm")
    norm.bn = torch.nn.BatchNorm1d(3, track_running_stats=False)
    torch.save(norm.state_dict(), tmp_path / "in.pt")
    out = tmp_path / "out.safetensors"
    with pytest.raises(CheckpointError, match="not written: loads 4 of 7 tensors") as refused:
        write_fixed([tmp_path / "in.pt"], ["in.pt"], LIMITS, spec("batchnorm"), None, out)
    assert refused.value.status == 409 and not out.exists()
    save_model(ref("tied_weights"), str(tmp_path / "t.safetensors"))
    with pytest.raises(CheckpointError, match="nothing to load it into"):
        write_fixed([tmp_path / "t.safetensors"], ["t.safetensors"], LIMITS, None, None, out)


def test_a_dcp_folder_with_a_wrapper_prefix_is_written_fixed(tmp_path: Path) -> None:
    import warnings

    import torch.distributed.checkpoint as dcp

    state = ref("testmodel").state_dict()
    with warnings.catch_warnings():  # one process saves it all
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({f"module.{k}": v for k, v in state.items()}, checkpoint_id=str(tmp_path / "ckpt"))
    files = sorted((tmp_path / "ckpt").iterdir())
    out = tmp_path / "out.safetensors"
    written = write_fixed(files, [f.name for f in files], LIMITS, spec("testmodel"), None, out)
    assert (written.verdict, written.tensors) == ("fixed", len(state))
    fixed = load_file(out)
    assert sorted(fixed) == sorted(state) and all(torch.equal(fixed[k], v) for k, v in state.items())


def test_each_tensor_is_written_on_memory_of_its_own_and_a_whole_one_is_not_copied() -> None:
    base, other = torch.arange(6.0), torch.arange(12.0)
    state = {
        "whole": base,
        "tied": base,  # the same storage again: a copy
        "offset": other[6:],  # a view past the start of its storage
        "part": other[:3],  # a view of a storage larger than it
        "transposed": torch.arange(6.0).reshape(2, 3).t(),  # the whole storage, not contiguous
    }
    out = _unshared(state)
    assert out["whole"] is base
    for key, t in out.items():
        assert torch.equal(t, state[key]) and t.is_contiguous(), key
        if key != "whole":
            assert t.untyped_storage().data_ptr() != state[key].untyped_storage().data_ptr(), key
            assert t.untyped_storage().nbytes() == t.nbytes, key
