"""The inspector a request runs: the child's report is the one examined in this process, the page
gets its cut, a comparison needs both sides, and each run takes one of the app's slots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from app.doctor.describe import bounded
from app.doctor.examine import inspect_files
from app.doctor.report import UploadError
from app.doctor.runs import PAGE_MOST, Inspector
from app.doctor.uploads import FILE_FIELD, OTHER_FIELD, Received
from app.settings import Settings
from tests.support.aio import run
from tests.support.checkpoints import LIMITS, spec


@pytest.fixture
def files(tmp_path: Path) -> list[Received]:
    state = {f"layer{i}.weight": torch.full((2,), float(i)) for i in range(PAGE_MOST + 5)}
    torch.save(state, tmp_path / "0")
    return [Received(FILE_FIELD, "m.pt", tmp_path / "0")]


def test_the_childs_report_is_the_one_examined_here(files: list[Received]) -> None:
    inspector = Inspector.of(Settings())
    body = run(inspector.inspect_json(files, spec("testmodel")))
    here = inspect_files([files[0].path], ["m.pt"], LIMITS, spec("testmodel"))
    child = json.loads(body)
    assert [t["name"] for t in child["tensors"]] == [t.name for t in here.tensors]
    assert (
        child["load"]["strict"] == here.load.strict
        and child["load"]["missing_keys"] == here.load.missing_keys
    )
    assert inspector.slots.active == 0


def test_the_page_gets_its_cut_from_the_child(files: list[Received]) -> None:
    page = run(Inspector.of(Settings()).inspect_page(files))
    here = bounded(inspect_files([files[0].path], ["m.pt"], LIMITS), PAGE_MOST)
    assert page.tensors == here.tensors == PAGE_MOST + 5
    assert page.hidden == here.hidden and page.report.total_bytes == here.report.total_bytes


@pytest.mark.parametrize("side", [FILE_FIELD, OTHER_FIELD])
def test_a_comparison_without_one_side_names_the_part_to_send(files: list[Received], side: str) -> None:
    a, b = ([], files) if side == FILE_FIELD else (files, [])
    with pytest.raises(UploadError) as refused:
        run(Inspector.of(Settings()).compare_json(a, b))
    assert refused.value.status == 422 and repr(side) in refused.value.message


def test_the_inspector_is_made_of_the_apps_settings() -> None:
    inspector = Inspector.of(Settings(checkpoint_slots=3, checkpoint_wait_seconds=7, checkpoint_uploads=5))
    assert (inspector.slots.n, inspector.slots.wait, inspector.uploads.n) == (3, 7, 5)
