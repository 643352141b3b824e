"""A state_dict loaded into a module as torch loads it: the state_dict chosen, torch's strict and
non-strict outcome word for word."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.doctor.examine import inspect_checkpoint
from app.doctor.formats import read
from app.doctor.load import _named_like, _state, _tails, choose_state_dict, optimizer_at, tensor_of
from app.doctor.report import CheckpointError
from app.doctor.targets import read_config
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


CONVENTIONAL = ["state_dict", "model_state_dict", "model", "module", "net"]


@pytest.mark.parametrize("first", range(len(CONVENTIONAL)))
def test_conventional_keys_are_preferred_in_their_order_over_a_larger_dict(
    tmp_path: Path, first: int
) -> None:
    larger = {str(i): torch.zeros(1) for i in range(5)}
    checkpoint = {"weights": larger, **{key: {"w": torch.zeros(1)} for key in CONVENTIONAL[first:]}}
    report = inspect_checkpoint(save(checkpoint, tmp_path / "m.pt", "torch_zip"), LIMITS)
    assert choose_state_dict(report, None) == CONVENTIONAL[first]


def test_a_file_of_no_dict_of_tensors_is_refused_asked_or_not(tmp_path: Path) -> None:
    report = inspect_checkpoint(save({"step": 3}, tmp_path / "m.pt", "torch_zip"), LIMITS)
    with pytest.raises(CheckpointError) as refused:
        choose_state_dict(report, None)
    assert str(refused.value) == "the file holds no dict of tensors to load into a module"
    with pytest.raises(CheckpointError) as refused:
        choose_state_dict(report, "model")
    assert str(refused.value) == "no state_dict at 'model'; state_dicts in this file: none"


def _optimizers(momentum: torch.Tensor) -> dict:
    return {"state": {0: {"momentum_buffer": momentum}}, "param_groups": [{"lr": 0.1, "params": [0]}]}


@pytest.mark.parametrize(
    ("checkpoint", "at", "optimizer"),
    [
        (_optimizers(torch.ones(2)), "state.0", True),
        ({"opt": _optimizers(torch.ones(2)), "model": {"w": torch.ones(2)}}, "opt.state.0", True),
        ({"opt": _optimizers(torch.ones(2)), "model": {"w": torch.ones(2)}}, "model", False),
        ({"state": {0: {"m": torch.ones(2)}}}, "state.0", False),  # no param_groups beside it
        ({"state": {0: {"m": torch.ones(2)}}, "other": {"param_groups": [1]}}, "state.0", False),
        ({"stats": {0: {"m": torch.ones(2)}}, "param_groups": [1]}, "stats.0", False),
        ({"state": {"m": torch.ones(2)}, "param_groups": [1]}, "state", False),  # no parameter number
    ],
)
def test_an_optimizers_state_is_told_by_state_beside_param_groups(
    tmp_path: Path, checkpoint: dict, at: str, optimizer: bool
) -> None:
    report = inspect_checkpoint(save(checkpoint, tmp_path / "m.pt", "torch_zip"), LIMITS)
    assert optimizer_at(report, at) is optimizer
    loaded = inspect_checkpoint(tmp_path / "m.pt", LIMITS, spec("custom"), at=at).load
    assert loaded is not None and loaded.state_dict == at
    assert (loaded.diagnosis.file_is == "optimizer_state") is optimizer  # type: ignore[union-attr]


def test_from_safetensors_only_the_keys_a_module_may_take_are_read(tmp_path: Path) -> None:
    module = ref("testmodel").state_dict()
    state = {f"module.{k}": v for k, v in module.items()} | {"head.proj": torch.ones(2, 2)}
    state = dict(sorted(state.items()))  # in the order the file keeps them
    save_file(state, tmp_path / "m.safetensors")
    report = inspect_checkpoint(tmp_path / "m.safetensors", LIMITS, spec("testmodel"))
    expected = ref("testmodel").load_state_dict(state, strict=False)
    assert report.load is not None
    assert (report.load.missing_keys, report.load.unexpected_keys) == (
        expected.missing_keys,
        expected.unexpected_keys,
    )
    fmt, found, _ = read(tmp_path / "m.safetensors", LIMITS)
    read_back = _state(tmp_path / "m.safetensors", fmt, found, "", set(module))
    assert list(read_back) == list(state)
    for key, value in read_back.items():  # prefixed keys read from the file, others stood in on meta
        if key == "head.proj":
            assert value.device.type == "meta" and value.numel() == 0
        else:
            assert torch.equal(value, state[key])


@pytest.mark.parametrize(
    ("key", "like"),
    [
        ("linear.weight", True),
        ("model.module.linear.weight", True),
        ("weight", True),  # a tail of a module's key
        ("linear._orig_mod.weight", True),  # a compiled submodule's
        ("_orig_mod.linear.weight", True),
        ("linear.weights", False),
        ("xweight", False),  # a prefix ends at a dot
        ("linear.weight.x", False),
    ],
)
def test_a_key_is_named_like_the_modules_behind_a_prefix_or_compiled(key: str, like: bool) -> None:
    assert _named_like(key, _tails({"linear.weight"})) is like


def test_a_names_tails_are_every_dotted_end_of_it() -> None:
    assert _tails({"a.b.c", "d"}) == {"a.b.c", "b.c", "c", "d"}


def test_one_tensors_values_are_read_from_its_shard_and_a_broken_file_is_named(tmp_path: Path) -> None:
    save_file({"w": torch.arange(3.0)}, tmp_path / "m.safetensors")
    fmt, found, _ = read(tmp_path / "m.safetensors", LIMITS)
    assert torch.equal(tensor_of(tmp_path / "m.safetensors", fmt, found, "w"), torch.arange(3.0))
    (tmp_path / "m.safetensors").write_bytes((tmp_path / "m.safetensors").read_bytes()[:20])
    with pytest.raises(CheckpointError) as refused:
        tensor_of(tmp_path / "m.safetensors", fmt, found, "w")
    assert str(refused.value).startswith("the safetensors library refused to read 'w': ")
    torch.save({"w": torch.arange(2.0)}, tmp_path / "m.pt")
    fmt, found, _ = read(tmp_path / "m.pt", LIMITS)
    assert torch.equal(tensor_of(tmp_path / "m.pt", fmt, found, "w"), torch.arange(2.0))


def test_a_load_says_what_it_was_loaded_into(tmp_path: Path) -> None:
    path = save(ref("testmodel").state_dict(), tmp_path / "m.pt", "torch_zip")
    by_preset = inspect_checkpoint(path, LIMITS, spec("testmodel")).load
    assert by_preset is not None and (by_preset.spec, by_preset.architecture, by_preset.config) == (
        spec("testmodel"),
        None,
        None,
    )
    assert by_preset.target == "TestModel" and (by_preset.strict, by_preset.non_strict) == ("ok", "ok")
    by_arch = inspect_checkpoint(path, LIMITS, "gpt2_tiny").load
    assert by_arch is not None and (by_arch.spec, by_arch.architecture, by_arch.config) == (
        None,
        "gpt2_tiny",
        None,
    )
    config = read_config(
        b'{"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, '
        b'"num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 10}',
        "c.json",
    )
    by_config = inspect_checkpoint(path, LIMITS, config).load
    assert by_config is not None and (by_config.spec, by_config.architecture, by_config.config) == (
        None,
        None,
        "c.json",
    )
    assert by_config.target == "AutoModel (c.json)"
