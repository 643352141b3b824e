"""What the lab keeps between requests is bounded by the request's own terms: member names and
shapes come from the client, so caches keyed or sized by them are bounded in entries and bytes."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from app.lab import memo
from app.lab import report as lab_inspect
from app.lab.devices import device_ids
from app.lab.query import Bounds, read
from app.lab.spec import LabSpec, resolve
from tests.support.cases import CAP


def custom(names: list[str], shape: list[int] | None = None) -> LabSpec:
    spec = LabSpec(
        preset="custom",
        styles=dict.fromkeys(names, "buffer"),
        shapes={n: shape for n in names} if shape else {},
    )
    return resolve(spec, device_ids(), CAP)


def test_reports_are_bounded_in_bytes_and_still_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memo, "MAX_BYTES", 200_000)
    memo.clear()
    try:
        specs = [custom([f"{i}_{'n' * 900}_{j}" for j in range(16)]) for i in range(20)]  # ~100 KB each
        first = memo.report_json(specs[0])
        for spec in specs:
            memo.report(spec)
            kept, size = memo.size()
            assert size <= 200_000 and kept >= 1
        assert memo.size()[0] < len(specs)  # the oldest went
        assert memo.report_json(specs[0]) == first  # built again, the same
    finally:
        memo.clear()


def test_compiled_member_expressions_are_bounded() -> None:
    for rows in range(1, 1300):  # every shape a distinct expression: torch.randn(rows, 3)
        lab_inspect.inspect(custom(["w"], [rows % 1300 + 1, 3]))
    info = lab_inspect._compiled.cache_info()
    assert info.maxsize is not None and info.currsize <= info.maxsize


def test_an_experiment_is_run_once_per_canonical_url() -> None:
    """Every student of a class asks for the same step: the same result object, not a run each."""
    memo.clear()
    try:
        query = read(parse_qsl("preset=testmodel&experiment=cast&dtype=half"), Bounds.here(CAP))
        first = memo.experiment(query)
        assert memo.experiment(query) is first
        again = read(parse_qsl("experiment=cast&dtype=half&preset=testmodel"), Bounds.here(CAP))
        assert memo.experiment(again) is first  # the same canonical URL
        other = read(parse_qsl("preset=testmodel&experiment=cast&dtype=double"), Bounds.here(CAP))
        assert memo.experiment(other) is not first
    finally:
        memo.clear()
