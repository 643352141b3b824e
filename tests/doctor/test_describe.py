"""A checkpoint described: storage shared between tensors, the tree by module path in numeric order,
and the page's cut of a report whose totals stay exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.doctor.describe import bounded, describe
from app.doctor.examine import inspect_checkpoint
from app.doctor.formats import read
from tests.support.checkpoints import FORMATS, LIMITS, save, spec
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


MOST = 1  # the testmodel has five keys: more than one missing, unexpected and mismatched


def test_the_pages_cut_keeps_at_most_so_many_of_each_kind_and_counts_the_rest(tmp_path: Path) -> None:
    shared = [torch.arange(4.0) for _ in range(3)]
    model = {f"x{i}.weight": torch.zeros(2) for i in range(4)} | {"linear.weight": torch.zeros(5, 5)}
    model |= {"linear.bias": torch.zeros(7), "parameter1": torch.zeros(9, 9)}
    state = {
        "model": model,
        "ema": {f"t{i}": s for i, s in enumerate(shared)}
        | {f"u{i}": s.view(2, 2) for i, s in enumerate(shared)},
        "other": {"w": shared[0][:2], "z": torch.zeros(1)},
        **{f"value{i}": i for i in range(4)},
    }
    path = save(state, tmp_path / "m.pt", "torch_zip")
    full = inspect_checkpoint(path, LIMITS, spec("testmodel"), at="model")
    cut_down = bounded(inspect_checkpoint(path, LIMITS, spec("testmodel"), at="model"), MOST)
    page, hidden = cut_down.report, cut_down.hidden
    load, cut = full.load, page.load
    assert load is not None and cut is not None and load.diagnosis is not None and cut.diagnosis is not None
    parts = {
        "values": (full.values, page.values),
        "shared": (full.shared, page.shared),
        "state_dicts": (full.state_dicts, page.state_dicts),
        "missing_keys": (load.missing_keys, cut.missing_keys),
        "unexpected_keys": (load.unexpected_keys, cut.unexpected_keys),
        "size_mismatches": (load.size_mismatches, cut.size_mismatches),
    }
    for part, (whole, _) in parts.items():
        assert len(whole) > MOST, part  # more of each than the page shows
        assert hidden[part] == len(whole) - MOST, part
    assert page.values == full.values[:MOST] and page.state_dicts == full.state_dicts[:MOST]
    assert page.shared == [group[:MOST] for group in full.shared[:MOST]]
    assert hidden["shared_names"] == sum(len(g) - MOST for g in full.shared[:MOST] if len(g) > MOST)
    assert (cut.missing_keys, cut.unexpected_keys) == (load.missing_keys[:MOST], load.unexpected_keys[:MOST])
    assert cut.size_mismatches == load.size_mismatches[:MOST]
    for whole, shown in zip(load.diagnosis.causes, cut.diagnosis.causes, strict=True):
        assert (shown.keys, shown.details, shown.groups) == (
            whole.keys[:MOST],
            whole.details[:MOST],
            whole.groups[:MOST],
        )
    for part, lists in (("cause_keys", "keys"), ("cause_details", "details"), ("cause_groups", "groups")):
        over = sum(max(len(getattr(c, lists)) - MOST, 0) for c in load.diagnosis.causes)
        assert hidden.get(part, 0) == over, part


def test_a_pages_cut_keeps_so_many_metadata_items_and_shard_problems(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, tmp_path / "m.safetensors", metadata={f"k{i}": str(i) for i in range(5)})
    full = inspect_checkpoint(tmp_path / "m.safetensors", LIMITS)
    page = bounded(inspect_checkpoint(tmp_path / "m.safetensors", LIMITS), 3)
    assert list(page.report.metadata.items()) == list(full.metadata.items())[:3]
    assert page.hidden["metadata"] == 2 and "tree" not in page.hidden

    # A sharded set whose index names five keys no shard holds: five problems, three shown.
    import json

    from app.doctor.examine import inspect_files

    save_file({"a": torch.zeros(1)}, tmp_path / "model-1.safetensors")
    save_file({"b": torch.zeros(1)}, tmp_path / "model-2.safetensors")
    weight_map = {"a": "model-1.safetensors", "b": "model-2.safetensors"}
    weight_map |= {f"ghost{i}": "model-2.safetensors" for i in range(5)}
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 8}, "weight_map": weight_map}))
    files = [tmp_path / "model-1.safetensors", tmp_path / "model-2.safetensors", index]
    full = inspect_files(files, [f.name for f in files], LIMITS)
    assert full.shards is not None and len(full.shards.problems) == 5
    page = bounded(inspect_files(files, [f.name for f in files], LIMITS), 3)
    assert page.report.shards is not None and page.report.shards.problems == full.shards.problems[:3]
    assert page.hidden["shard_problems"] == 2
