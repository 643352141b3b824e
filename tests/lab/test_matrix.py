"""The matrix against torch directly: the tutorials' three columns where they are right, and more."""

from __future__ import annotations

import io

import pytest
import torch

from app.lab import memo
from app.lab.devices import device_ids
from app.lab.experiments import run_experiment
from app.lab.matrix import COLUMNS, _matrix, matrix
from app.lab.presets import PRESETS
from app.lab.spec import LabSpec, resolve
from tests.support.cases import CAP, PRESET_STYLES, styles_of
from tests.support.reference import loss, named, own, reference, sample


def restored_by_load(preset: str, styles: dict[str, str]) -> dict[str, bool | None]:
    """Per member: after a train-mode forward, saved and loaded into a fresh module, is every one of
    its tensors in the checkpoint and equal to the saved value? None where torch refuses a step."""
    trained = reference(preset, styles)
    try:
        with torch.no_grad():
            trained.train()(sample(preset, "cpu"))
    except RuntimeError:
        return dict.fromkeys(styles)
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = reference(preset, styles)
    fresh.load_state_dict(state)
    saved, loaded = named(trained, list(styles)), named(fresh, list(styles))
    return {m: all(n in state and torch.equal(saved[n], loaded[n]) for n in own(saved, m)) for m in styles}


@pytest.mark.parametrize(("preset", "style"), PRESET_STYLES)
def test_matrix_matches_torch(preset: str, style: str) -> None:
    """A member's cell holds for each of its tensors: itself, or every tensor of the layers it holds."""
    styles = dict.fromkeys(PRESETS[preset].member_names, style)
    result = matrix(resolve(LabSpec(preset=preset, styles=styles), device_ids(), CAP))
    assert list(result.columns) == list(COLUMNS)
    model = reference(preset, styles)
    params, buffers, state = dict(model.named_parameters()), dict(model.named_buffers()), model.state_dict()
    on_meta = named(reference(preset, styles).to("meta"), list(styles))
    half = named(reference(preset, styles).half(), list(styles))
    for row in result.rows:
        mine = own(on_meta, row.member)
        assert mine
        assert row.cells["in_parameters"] == any(n in params for n in mine)
        assert row.cells["in_buffers"] == any(n in buffers for n in mine)
        assert row.cells["in_state_dict"] == any(n in state for n in mine)
        assert row.cells["moves_with_to"] == on_meta[mine[0]].is_meta
        assert row.cells["cast_by_half"] == all(half[n].dtype == torch.float16 for n in mine)
    restored = restored_by_load(preset, styles)
    for row in result.rows:
        assert row.cells["restored_by_load"] == restored[row.member], row.member
    trained = reference(preset, styles)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    try:
        loss(trained(sample(preset, "cpu"))).backward()
    except RuntimeError as exc:
        assert result.refusals["step"] == f"RuntimeError: {exc}"
        assert all(row.cells["gets_grad"] is None for row in result.rows)
        return
    before = {n: t.detach().clone() for n, t in named(trained, list(styles)).items()}
    optimizer.step()
    after = named(trained, list(styles))
    for row in result.rows:
        mine = own(after, row.member)
        assert row.cells["gets_grad"] == all(after[n].grad is not None for n in mine)
        assert row.cells["changed_by_step"] == all(not torch.equal(before[n], after[n]) for n in mine)


def test_layers_in_a_plain_list_get_grads_the_optimizer_never_uses() -> None:
    """The classic bug, as torch shows it: backward reaches the listed layers, SGD does not."""
    rows = {
        style: matrix(
            resolve(LabSpec(preset="layer_list", styles={"blocks": style}), device_ids(), CAP)
        ).rows[0]
        for style in ("python_list", "module_list", "sequential")
    }
    assert rows["python_list"].cells["gets_grad"] and not rows["python_list"].cells["changed_by_step"]
    assert not rows["python_list"].cells["in_state_dict"] and not rows["python_list"].cells["moves_with_to"]
    assert rows["module_list"].cells == rows["sequential"].cells
    assert all(rows["module_list"].cells[c] for c in COLUMNS if c != "in_buffers")


def test_tutorial_table() -> None:
    """Seed 2's summary table: parameters vs buffers, with the plain tensor the tutorial also shows."""
    rows = {r.member: r.cells for r in matrix(resolve(LabSpec(preset="testmodel"), device_ids(), CAP)).rows}
    assert (rows["parameter2"]["in_parameters"], rows["buffer2"]["in_parameters"]) == (True, False)
    assert rows["parameter2"]["in_state_dict"] and rows["buffer2"]["in_state_dict"]
    assert rows["parameter2"]["moves_with_to"] and rows["buffer2"]["moves_with_to"]
    assert not rows["buffer1"]["moves_with_to"] and not rows["buffer1"]["in_state_dict"]
    assert not rows["buffer1"]["restored_by_load"] and rows["buffer2"]["restored_by_load"]


def test_matrix_is_the_same_whatever_the_device_and_keeps_the_spec() -> None:
    on_cpu = matrix(resolve(LabSpec(preset="testmodel"), device_ids(), CAP))
    on_meta = matrix(resolve(LabSpec(preset="testmodel", device="meta"), device_ids(), CAP))
    assert on_meta.spec.device == "meta" and on_cpu.spec.device == "cpu"
    assert on_meta.rows == on_cpu.rows


VALUES = {"values_before", "values_after"}


def _facts_at(threads: int, specs: list[LabSpec], values: list) -> list:
    torch.set_num_threads(threads)
    _matrix.cache_clear()
    memo.clear()
    facts = []
    for spec in specs:
        step = run_experiment("step", spec)
        tensors = [*step.tensors, *run_experiment("save_load", spec).tensors]
        # The values themselves are torch's floats, whose last bits follow the order of its sums:
        # compared apart, to a tolerance; every other fact exactly.
        facts.append((matrix(spec).rows, step.facts, [t.model_dump(exclude=VALUES) for t in tensors]))
        values.append([[getattr(t, v) for v in VALUES] for t in tensors])
    return facts


@pytest.mark.parametrize("preset", list(PRESETS))
def test_facts_do_not_depend_on_the_thread_count(preset: str) -> None:
    """Every cell and step fact is torch's exact answer, not rounding noise a thread count can flip
    (out.sum() after a train-mode BatchNorm made scale and bn.weight change at 1 thread, not at 2)."""
    names = PRESETS[preset].member_names or ("w", "v")  # custom: two members of its own
    specs = [
        resolve(LabSpec(preset=preset, styles=dict.fromkeys(names, style)), device_ids(), CAP)
        for style in styles_of(preset)
    ]
    threads = torch.get_num_threads()
    values_one: list = []
    values_two: list = []
    try:
        one, two = _facts_at(1, specs, values_one), _facts_at(2, specs, values_two)
    finally:
        torch.set_num_threads(threads)
        _matrix.cache_clear()
        memo.clear()
    assert one == two
    pairs = [
        pair
        for spec_one, spec_two in zip(values_one, values_two, strict=True)
        for tensor_one, tensor_two in zip(spec_one, spec_two, strict=True)
        for pair in zip(tensor_one, tensor_two, strict=True)
    ]
    for a, b in pairs:  # before and after of one tensor: None on both sides, or the same numbers
        assert (a is None) == (b is None)
        assert a is None or a == pytest.approx(b, rel=1e-5, abs=1e-6)
