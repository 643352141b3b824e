"""A state_dict loaded into a module as torch loads it: the state_dict chosen, torch's strict and
non-strict outcome word for word."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.doctor.examine import inspect_checkpoint
from app.doctor.load import choose_state_dict
from app.doctor.report import CheckpointError
from tests.support.checkpoints import LIMITS, ref, refusal, save, spec


@pytest.mark.parametrize("fmt", ["torch_zip", "safetensors"])
@pytest.mark.parametrize("into", ["buffer", "non_persistent_buffer", "plain_tensor", "parameter"])
def test_load_into_a_module_is_torchs_outcome(tmp_path: Path, fmt: str, into: str) -> None:
    state = ref("testmodel", buffer2="buffer").state_dict()
    path = tmp_path / "m"
    save_file(state, path) if fmt == "safetensors" else save(state, path, fmt)
    target_styles = {"buffer2": into}
    report = inspect_checkpoint(path, LIMITS, spec("testmodel", **target_styles))
    strict = refusal(lambda: ref("testmodel", **target_styles).load_state_dict(state))
    loose = ref("testmodel", **target_styles).load_state_dict(state, strict=False)
    assert report.load is not None
    assert report.load.strict == strict
    assert (report.load.missing_keys, report.load.unexpected_keys) == (
        loose.missing_keys,
        loose.unexpected_keys,
    )
    if into in ("non_persistent_buffer", "plain_tensor"):
        assert "Unexpected key(s) in state_dict" in report.load.strict


def test_size_mismatch_refuses_even_non_strict(tmp_path: Path) -> None:
    state = {**ref("testmodel").state_dict(), "linear.weight": torch.zeros(4, 3)}
    report = inspect_checkpoint(save(state, tmp_path / "m.pt", "torch_zip"), LIMITS, spec("testmodel"))
    target = ref("testmodel")
    assert report.load is not None
    assert report.load.non_strict == refusal(lambda: target.load_state_dict(state, strict=False))
    assert "size mismatch for linear.weight" in report.load.non_strict
    assert report.load.size_mismatches == [{"key": "linear.weight", "checkpoint": [4, 3], "module": [3, 3]}]


def test_state_dict_location_asked_and_refused(tmp_path: Path) -> None:
    path = save({"ema": {"w": torch.ones(2)}, "model": {"w": torch.zeros(2)}}, tmp_path / "m.pt", "torch_zip")
    assert inspect_checkpoint(path, LIMITS, spec("custom"), at=None).load.state_dict == "model"  # type: ignore[union-attr]
    assert inspect_checkpoint(path, LIMITS, spec("custom"), at="ema").load.state_dict == "ema"  # type: ignore[union-attr]
    with pytest.raises(
        CheckpointError, match="no state_dict at 'opt'; state_dicts in this file: 'ema', 'model'"
    ):
        inspect_checkpoint(path, LIMITS, spec("custom"), at="opt")


def test_without_a_conventional_key_the_largest_dict_is_loaded(tmp_path: Path) -> None:
    checkpoint = {"ema": {"w": torch.ones(2)}, "weights": {"a": torch.ones(1), "b": torch.ones(1)}}
    report = inspect_checkpoint(save(checkpoint, tmp_path / "m.pt", "torch_zip"), LIMITS, spec("custom"))
    assert report.state_dicts == ["ema", "weights"]
    assert report.load is not None and report.load.state_dict == "weights"


def test_the_state_dict_chosen_is_the_one_asked_for_the_top_a_conventional_key_or_the_largest(
    tmp_path: Path,
) -> None:
    small, large = {"w": torch.zeros(1)}, {"a": torch.zeros(1), "b": torch.zeros(1)}
    cases = [
        ({"w": torch.zeros(1)}, None, ""),
        ({"model": small, "other": large}, None, "model"),
        ({"x": small, "y": large}, None, "y"),
        ({"x": small, "y": large}, "x", "x"),
    ]
    for i, (obj, asked, chosen) in enumerate(cases):
        report = inspect_checkpoint(save(obj, tmp_path / f"{i}.pt", "torch_zip"), LIMITS)
        assert choose_state_dict(report, asked) == chosen
