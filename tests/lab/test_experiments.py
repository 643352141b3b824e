"""Every experiment, preset and style against the same torch steps written out directly here."""

from __future__ import annotations

import io

import pytest
import torch

from app.lab.devices import device_ids
from app.lab.experiments import EXPERIMENTS, run_experiment
from app.lab.presets import PRESETS
from app.lab.spec import LabSpec, resolve
from tests.support.cases import CAP, PRESET_STYLES, styles_of
from tests.support.reference import loss, named, reference, sample

CASES = [(p, s, d) for p, s in PRESET_STYLES for d in ("cpu", "meta")]


def changed(before: torch.Tensor, after: torch.Tensor) -> bool | None:
    if before.is_meta or after.is_meta:
        return None
    return not torch.equal(before.double().cpu(), after.detach().double().cpu())


def refusal(fn) -> str | None:
    try:
        fn()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def spec_of(preset: str, style: str, device: str) -> tuple[LabSpec, dict[str, str]]:
    styles = dict.fromkeys(PRESETS[preset].member_names, style)
    return resolve(LabSpec(preset=preset, device=device, styles=styles), device_ids(), CAP), styles


def result_error(result) -> str | None:
    return f"{result.error.type}: {result.error.message}" if result.error else None


@pytest.mark.parametrize(("preset", "style", "device"), CASES)
def test_forward(preset: str, style: str, device: str) -> None:
    spec, styles = spec_of(preset, style, device)
    model = reference(preset, styles).to(device)
    before = {n: t.detach().clone() for n, t in named(model, list(styles)).items()}
    with torch.no_grad():
        error = refusal(lambda: model.train()(sample(preset, device)))
    result = run_experiment("forward", spec)
    assert result_error(result) == error
    after = named(model, list(styles))
    assert {t.name: t.changed for t in result.tensors} == {n: changed(before[n], after[n]) for n in before}


def small(t: torch.Tensor) -> list[float] | None:
    """A tensor's values as the result carries them: flattened, 6 digits, at most 16 elements, not on meta."""
    if t.is_meta or t.numel() > 16:
        return None
    return [float(f"{x:.6g}") for x in t.detach().cpu().double().flatten().tolist()]


def values(result) -> dict[str, tuple]:
    return {t.name: (t.values_before, t.values_after) for t in result.tensors}


@pytest.mark.parametrize(("preset", "style", "device"), CASES)
def test_step(preset: str, style: str, device: str) -> None:
    spec, styles = spec_of(preset, style, device)
    model = reference(preset, styles).to(device)
    before = {n: t.detach().clone() for n, t in named(model, list(styles)).items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = {id(p): n for n, p in model.named_parameters()}

    moved_by_optimizer: list[str] = []

    def train() -> None:
        loss(model.train()(sample(preset, device))).backward()
        mid = {n: t.detach().clone() for n, t in named(model, list(styles)).items()}
        optimizer.step()
        now = named(model, list(styles))
        moved_by_optimizer.extend(n for n in mid if changed(mid[n], now[n]))

    error = refusal(train)
    result = run_experiment("step", spec)
    assert result_error(result) == error
    assert result.facts["in_optimizer"] == [ids[id(p)] for g in optimizer.param_groups for p in g["params"]]
    if not error:
        assert result.facts["changed_by_optimizer"] == moved_by_optimizer
    after = named(model, list(styles))
    observed = {t.name: (t.changed, t.has_grad) for t in result.tensors}
    assert observed == {n: (changed(before[n], after[n]), after[n].grad is not None) for n in before}
    if not error:  # the values SGD left, read from torch's own step on the reference
        assert values(result) == {n: (small(before[n]), small(after[n])) for n in before}


@pytest.mark.parametrize(("preset", "style", "device"), CASES)
@pytest.mark.parametrize("dtype", ["half", "bfloat16", "double"])
def test_cast(preset: str, style: str, device: str, dtype: str) -> None:
    spec, styles = spec_of(preset, style, device)
    model = reference(preset, styles).to(device)
    before = {n: t.detach().clone() for n, t in named(model, list(styles)).items()}
    getattr(model, dtype)()
    result = run_experiment("cast", spec, dtype=dtype)
    after = named(model, list(styles))
    expected = {n: str(t.dtype).removeprefix("torch.") for n, t in after.items()}
    assert {t.name: t.dtype_after for t in result.tensors} == expected
    # The values: half and bfloat16 round most of them, double none.
    assert {t.name: t.changed for t in result.tensors} == {n: changed(before[n], after[n]) for n in before}
    assert values(result) == {n: (small(before[n]), small(after[n])) for n in before}


@pytest.mark.parametrize(("preset", "style", "device"), CASES)
def test_save_load(preset: str, style: str, device: str) -> None:
    spec, styles = spec_of(preset, style, device)
    trained = reference(preset, styles).to(device)
    with torch.no_grad():
        error = refusal(lambda: trained.train()(sample(preset, device)))
    result = run_experiment("save_load", spec)
    assert result_error(result) == error
    if error:
        return
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    fresh = reference(preset, styles).to(device)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    saved, loaded = named(trained, list(styles)), named(fresh, list(styles))
    assert {t.name: t.changed for t in result.tensors} == {n: changed(saved[n], loaded[n]) for n in saved}


# custom: see test_custom; layer_list holds layers, not tensors: see the next test
@pytest.mark.parametrize("preset", [p for p in PRESETS if PRESETS[p].members and "buffer" in styles_of(p)])
@pytest.mark.parametrize("into", ["non_persistent_buffer", "plain_tensor", "parameter", "buffer"])
def test_load_into_another_spec(preset: str, into: str) -> None:
    spec, styles = spec_of(preset, "buffer", "cpu")
    other, other_styles = spec_of(preset, into, "cpu")
    state = reference(preset, styles).state_dict()
    target = reference(preset, other_styles, into=True)
    strict = refusal(lambda: target.load_state_dict(state))
    loose = target.load_state_dict(state, strict=False)
    result = run_experiment("load_into", spec, other)
    assert result.facts["strict"] == (strict or "ok")
    assert result.facts["missing_keys"] == loose.missing_keys
    assert result.facts["unexpected_keys"] == loose.unexpected_keys
    if into in ("non_persistent_buffer", "plain_tensor"):
        assert "Unexpected key(s) in state_dict" in str(strict)  # the real-world persistence break


@pytest.mark.parametrize("style", styles_of("layer_list"))
@pytest.mark.parametrize("into", styles_of("layer_list"))
def test_load_layers_into_another_container(style: str, into: str) -> None:
    """ModuleList and Sequential name the layers alike (blocks.0.weight); a plain list has no names."""
    spec, styles = spec_of("layer_list", style, "cpu")
    other, other_styles = spec_of("layer_list", into, "cpu")
    state = reference("layer_list", styles).state_dict()
    target = reference("layer_list", other_styles, into=True)
    strict = refusal(lambda: target.load_state_dict(state))
    loose = target.load_state_dict(state, strict=False)
    result = run_experiment("load_into", spec, other)
    assert result.facts["strict"] == (strict or "ok")
    assert (result.facts["missing_keys"], result.facts["unexpected_keys"]) == (
        loose.missing_keys,
        loose.unexpected_keys,
    )
    assert (strict is None) == (
        (style == "python_list") == (into == "python_list")
        or {style, into}
        == {
            "module_list",
            "sequential",
        }
    )


@pytest.mark.parametrize(("preset", "style", "device"), CASES)
def test_identity(preset: str, style: str, device: str) -> None:
    spec, styles = spec_of(preset, style, device)
    model = reference(preset, styles)
    before = named(model, list(styles))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.to(device).to(torch.float64)
    after = named(model, list(styles))
    result = run_experiment("identity", spec)
    assert {t.name: t.same_object for t in result.tensors} == {n: after[n] is before[n] for n in before}
    current = {id(p) for p in model.parameters()}
    held = [p for g in optimizer.param_groups for p in g["params"]]
    assert result.facts["optimizer_holds_model_parameters"] == all(id(p) in current for p in held)
    assert result.facts["optimizer_param_dtypes"] == sorted(
        {str(p.dtype).removeprefix("torch.") for p in held}
    )


@pytest.mark.parametrize(("preset", "style"), PRESET_STYLES)
def test_meta_roundtrip(preset: str, style: str) -> None:
    spec, styles = spec_of(preset, style, "cpu")
    model = reference(preset, styles).to("meta")
    message = refusal(lambda: model.to("cpu"))
    model.to_empty(device="cpu")
    result = run_experiment("meta_roundtrip", spec)
    assert result.facts["to_cpu"] == (message or "ok")
    registered = set(dict(model.named_parameters())) | set(dict(model.named_buffers()))
    assert set(result.facts["needs_reinit"]) == registered
    devices = {t.name: t.device_after for t in result.tensors}
    assert devices == {n: str(t.device) for n, t in named(model, list(styles)).items()}


def test_every_experiment_is_tested() -> None:
    tested = {"forward", "step", "cast", "save_load", "load_into", "identity", "meta_roundtrip"}
    assert set(EXPERIMENTS) == tested
