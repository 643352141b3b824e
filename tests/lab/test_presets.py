"""Presets are faithful to the tutorials: same layers, members, shapes, initial values, defaults."""

from __future__ import annotations

import pytest
import torch

from app.lab.devices import device_ids
from app.lab.inspect import build
from app.lab.langs import EN, ZH
from app.lab.presets import PRESETS
from app.lab.spec import LabSpec, resolve
from app.lab.styles import STYLES
from tests.lab.reference import TUTORIAL_DEFAULTS, reference


def spec(preset: str, **styles: str) -> LabSpec:
    return resolve(LabSpec(preset=preset, styles=styles), device_ids())


@pytest.mark.parametrize("preset", list(PRESETS))
def test_defaults_are_the_tutorials(preset: str) -> None:
    assert spec(preset).styles == TUTORIAL_DEFAULTS[preset]


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("style", list(STYLES))
def test_values_equal_the_reference(preset: str, style: str) -> None:
    styles = dict.fromkeys(PRESETS[preset].member_names, style)
    built = build(spec(preset, **styles))
    ref = reference(preset, styles)
    assert list(built.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(built.state_dict()[key], value), key
    for name in styles:  # members torch does not track (plain tensors) too
        assert torch.equal(getattr(built, name), getattr(ref, name)), name


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
