"""The matrix against torch directly: the tutorials' three columns where they are right, and more."""

from __future__ import annotations

import pytest
import torch

from app.lab.devices import device_ids
from app.lab.matrix import COLUMNS, matrix
from app.lab.presets import PRESETS
from app.lab.spec import LabSpec, resolve
from app.lab.styles import STYLES
from tests.lab.reference import reference, sample


@pytest.mark.parametrize(("preset", "style"), [(p, s) for p in PRESETS for s in STYLES])
def test_matrix_matches_torch(preset: str, style: str) -> None:
    styles = dict.fromkeys(PRESETS[preset].member_names, style)
    result = matrix(resolve(LabSpec(preset=preset, styles=styles), device_ids()))
    assert list(result.columns) == list(COLUMNS)
    model = reference(preset, styles)
    params, buffers, state = dict(model.named_parameters()), dict(model.named_buffers()), model.state_dict()
    on_meta = reference(preset, styles).to("meta")
    half = reference(preset, styles).half()
    for row in result.rows:
        name = row.member
        assert row.cells["in_parameters"] == (name in params)
        assert row.cells["in_buffers"] == (name in buffers)
        assert row.cells["in_state_dict"] == (name in state)
        assert row.cells["moves_with_to"] == getattr(on_meta, name).is_meta
        assert row.cells["cast_by_half"] == (getattr(half, name).dtype == torch.float16)
    trained = reference(preset, styles)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    try:
        trained(sample(preset, "cpu")).sum().backward()
    except RuntimeError as exc:
        assert result.refusals["step"] == f"RuntimeError: {exc}"
        assert all(row.cells["gets_grad"] is None for row in result.rows)
        return
    before = {name: getattr(trained, name).detach().clone() for name in styles}
    optimizer.step()
    for row in result.rows:
        tensor = getattr(trained, row.member)
        assert row.cells["gets_grad"] == (tensor.grad is not None)
        assert row.cells["changed_by_step"] == (not torch.equal(before[row.member], tensor))


def test_tutorial_table() -> None:
    """Seed 2's summary table: parameters vs buffers, with the plain tensor the tutorial also shows."""
    rows = {r.member: r.cells for r in matrix(resolve(LabSpec(preset="testmodel"), device_ids())).rows}
    assert (rows["parameter2"]["in_parameters"], rows["buffer2"]["in_parameters"]) == (True, False)
    assert rows["parameter2"]["in_state_dict"] and rows["buffer2"]["in_state_dict"]
    assert rows["parameter2"]["moves_with_to"] and rows["buffer2"]["moves_with_to"]
    assert not rows["buffer1"]["moves_with_to"] and not rows["buffer1"]["in_state_dict"]
    assert not rows["buffer1"]["restored_by_load"] and rows["buffer2"]["restored_by_load"]


def test_matrix_is_the_same_whatever_the_device_and_keeps_the_spec() -> None:
    on_cpu = matrix(resolve(LabSpec(preset="testmodel"), device_ids()))
    on_meta = matrix(resolve(LabSpec(preset="testmodel", device="meta"), device_ids()))
    assert on_meta.spec.device == "meta" and on_cpu.spec.device == "cpu"
    assert on_meta.rows == on_cpu.rows
