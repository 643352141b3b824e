"""A checkpoint described: storage shared between tensors, the tree by module path in numeric order,
and the page's cut of a report whose totals stay exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.doctor.describe import bounded, describe
from app.doctor.examine import inspect_checkpoint
from app.doctor.formats import read
from tests.support.checkpoints import FORMATS, LIMITS, save
from tests.support.reference import reference


@pytest.mark.parametrize("fmt", FORMATS)
def test_tied_weights_share_storage(tmp_path: Path, fmt: str) -> None:
    model = reference("tied_weights", {"bias": "parameter"})
    state = model.state_dict()
    report = inspect_checkpoint(save(state, tmp_path / "m.pt", fmt), LIMITS)
    assert report.shared == [["embed.weight", "head.weight"]]
    tied = state["embed.weight"]
    assert report.total_bytes - report.unique_bytes == tied.numel() * tied.element_size()
    head = next(t for t in report.tensors if t.name == "head.weight")
    assert head.shared_with == ["embed.weight"]


def test_numbered_layers_are_in_numeric_order(tmp_path: Path) -> None:
    """layers.10 after layers.9, not after layers.1; the file's own order elsewhere."""
    model = torch.nn.Sequential(*[torch.nn.Linear(1, 1) for _ in range(12)])
    state = dict(reversed(list(model.state_dict().items())))  # written 11, 10, ..., 0
    report = inspect_checkpoint(save(state, tmp_path / "m.pt", "torch_zip"), LIMITS)
    assert [node.name for node in report.tree] == [str(i) for i in range(12)]
    assert [child.name for child in report.tree[0].children] == ["bias", "weight"]  # as in the file


def test_describe_counts_every_tensor_and_each_storage_once(tmp_path: Path) -> None:
    shared = torch.arange(12.0)
    state = {"a": shared, "b": shared.view(3, 4), "c": torch.zeros(2, dtype=torch.float16), "n": 3}
    path = save(state, tmp_path / "m.pt", "torch_zip")
    fmt, found, metadata = read(path, LIMITS)
    report = describe(fmt, found, metadata, path.stat().st_size)
    assert [t.name for t in report.tensors] == ["a", "b", "c"]
    assert report.total_bytes == 48 + 48 + 4 and report.unique_bytes == 48 + 4
    assert report.shared == [["a", "b"]] and report.values[0].name == "n"
    assert {k: v.bytes for k, v in report.dtypes.items()} == {"float32": 96, "float16": 4}


def test_the_pages_cut_keeps_the_totals_exact(tmp_path: Path) -> None:
    state = {f"layer{i}.weight": torch.zeros(2) for i in range(30)}
    path = save(state, tmp_path / "m.pt", "torch_zip")
    full = inspect_checkpoint(path, LIMITS)
    page = bounded(inspect_checkpoint(path, LIMITS), 5)
    assert page.tensors == 30 and page.report.tensors == []
    assert page.report.total_bytes == full.total_bytes and page.report.dtypes == full.dtypes
    nodes = 2 * len(full.tree)  # layerN and its weight
    assert page.hidden["tree"] == nodes - 5 and sum(1 + len(n.children) for n in page.report.tree) == 5
