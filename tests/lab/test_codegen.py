"""The generated script, run with plain python, prints exactly what the report says."""

from __future__ import annotations

import pytest

from app.lab.devices import device_ids
from app.lab.presets import PRESETS
from app.lab.report import inspect
from app.lab.spec import LabSpec, resolve
from tests.support.cases import CAP, PRESET_STYLES
from tests.support.scripts import Ran, expected, parse, run_scripts

# Every style on every member of both presets (on meta, so devices move), plus the tutorials' defaults.
SPECS = [
    LabSpec(preset=p, device="meta", styles=dict.fromkeys(PRESETS[p].member_names, s))
    for p, s in PRESET_STYLES
] + [LabSpec(preset=p, device="cpu") for p in PRESETS]


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[dict, Ran]]:
    reports = [inspect(resolve(s, device_ids(), CAP)).model_dump() for s in SPECS]
    results = run_scripts([r["code"] for r in reports])
    return {LabSpec(**r["spec"]).query(): (r, out) for r, out in zip(reports, results, strict=True)}


@pytest.mark.parametrize("spec", SPECS, ids=[s.query() for s in SPECS])
def test_script_reproduces_report(runs: dict, spec: LabSpec) -> None:
    report, result = runs[resolve(spec, device_ids(), CAP).query()]
    assert result.returncode == 0, result.stderr
    assert parse(result.stdout) == expected(report)


def test_script_leaves_model_at_top_level() -> None:
    report = inspect(resolve(LabSpec(preset="testmodel"), device_ids(), CAP))
    namespace: dict = {"__name__": "__main__"}
    exec(compile(report.code, "<generated>", "exec"), namespace)
    model = namespace["model"]
    assert [n for n, _ in model.named_parameters()] == [r.name for r in report.named_parameters]


def test_script_reads_like_the_tutorial() -> None:
    code = inspect(resolve(LabSpec(preset="mymodule"), device_ids(), CAP)).code
    assert "class MyModule(nn.Module):" in code
    assert "def forward(self, x):" in code
    assert 'self.register_parameter("weight", nn.Parameter(torch.ones(10, 10)))' in code
    assert "for name, param in model.named_parameters():" in code
