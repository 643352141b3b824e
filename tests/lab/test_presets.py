"""Presets are faithful to the tutorials: same layers, members, shapes, initial values, defaults."""

from __future__ import annotations

import pytest
import torch

from app.lab.devices import device_ids
from app.lab.experiments import run_experiment
from app.lab.presets import PRESETS
from app.lab.report import build, inspect
from app.lab.spec import LabSpec, resolve
from app.langs import EN, ZH
from tests.support.cases import CAP, PRESET_STYLES
from tests.support.reference import TUTORIAL_DEFAULTS, reference, untracked


def spec(preset: str, **styles: str) -> LabSpec:
    return resolve(LabSpec(preset=preset, styles=styles), device_ids(), CAP)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_defaults_are_the_tutorials(preset: str) -> None:
    assert spec(preset).styles == TUTORIAL_DEFAULTS[preset]


@pytest.mark.parametrize(("preset", "style"), PRESET_STYLES)
def test_values_equal_the_reference(preset: str, style: str) -> None:
    styles = dict.fromkeys(PRESETS[preset].member_names, style)
    built = build(spec(preset, **styles))
    ref = reference(preset, styles)
    assert list(built.state_dict()) == list(ref.state_dict())
    # Same seed, same values; atol only for the sinusoidal table, built by another formula in the reference.
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(built.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    for name in styles:  # members torch does not track (plain tensors, plain lists of layers) too
        torch.testing.assert_close(untracked(built, name), untracked(ref, name), rtol=0, atol=1e-6, msg=name)


def test_mymodule_members_are_ones_and_zeros() -> None:
    model = build(spec("mymodule"))
    assert torch.equal(model.weight, torch.ones(10, 10))
    assert torch.equal(model.bias, torch.zeros(10))


def test_build_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    build(spec("testmodel"))
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_forward_runs_on_the_sample_input(preset: str) -> None:
    p = PRESETS[preset]
    model = build(spec(preset))
    out = model(eval(p.sample_input, {"torch": torch}))
    assert out.dtype == torch.float32


def test_testmodel_forward_adds_all_four_members_and_increments_buffers() -> None:
    model = build(spec("testmodel"))
    x = torch.randn(2, 3)
    b1, b2 = model.buffer1.clone(), model.buffer2.clone()
    expected = model.linear(x) + model.parameter1 + model.parameter2 + (b1 + 1) + (b2 + 1)
    assert torch.allclose(model(x), expected)
    assert torch.equal(model.buffer1, b1 + 1)
    assert torch.equal(model.buffer2, b2 + 1)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_text_in_both_languages(preset: str) -> None:
    p = PRESETS[preset]
    for lang in (EN, ZH):
        assert p.title[lang].strip() and p.description[lang].strip()
    assert p.title[EN] != p.title[ZH]


def test_tied_weights_listed_once_by_parameters_twice_by_state_dict() -> None:
    report = inspect(spec("tied_weights"))
    assert [r.name for r in report.named_parameters] == ["bias", "embed.weight"]
    assert [r.name for r in report.state_dict] == ["bias", "embed.weight", "head.weight"]
    model = reference("tied_weights", {"bias": "parameter"})
    assert report.parameter_count.unique == sum(p.numel() for p in model.parameters()) == 50
    assert report.parameter_count.with_duplicates == 90 == report.parameter_count.state_dict


def test_moving_to_meta_unties_the_weights() -> None:
    # What torch really does: meta tensors are new objects per module, so the tie is lost.
    report = inspect(spec("tied_weights").model_copy(update={"device": "meta"}))
    model = reference("tied_weights", {"bias": "parameter"}).to("meta")
    assert (model.head.weight is model.embed.weight) is False
    assert [r.name for r in report.named_parameters] == [n for n, _ in model.named_parameters()]


def test_batchnorm_counter_stays_int64_under_half() -> None:
    result = run_experiment("cast", spec("batchnorm"), dtype="half")
    dtypes = {t.name: t.dtype_after for t in result.tensors}
    assert dtypes["bn.num_batches_tracked"] == "int64" and dtypes["bn.running_mean"] == "float16"
    model = reference("batchnorm", {"scale": "parameter"}).half()
    assert model.bn.num_batches_tracked.dtype == torch.int64


@pytest.mark.parametrize(("mode", "moves"), [("train", True), ("eval", False)])
def test_batchnorm_running_stats_in_train_not_eval(mode: str, moves: bool) -> None:
    changed = {t.name: t.changed for t in run_experiment("forward", spec("batchnorm"), mode=mode).tensors}
    assert changed["bn.running_mean"] is moves and changed["bn.num_batches_tracked"] is moves


def test_positional_encoding_persistence_breaks_strict_loading() -> None:
    old, new = spec("positional_encoding"), spec("positional_encoding", pe="non_persistent_buffer")
    facts = run_experiment("load_into", old, new).facts
    model = reference("positional_encoding", {"pe": "non_persistent_buffer"}, into=True)
    state = reference("positional_encoding", {"pe": "buffer"}).state_dict()
    with pytest.raises(RuntimeError) as raised:
        model.load_state_dict(state)
    assert facts["strict"] == f"RuntimeError: {raised.value}"
    assert facts["unexpected_keys"] == ["pe"]
