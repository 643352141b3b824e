"""Each experiment's generated script, run with plain python, prints what the experiment observed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.lab.devices import device_ids
from app.lab.experiments import EXPERIMENTS, ExperimentResult, run_experiment
from app.lab.spec import LabSpec, resolve
from tests.support.cases import CAP
from tests.support.reference import named, reference

SPECS = [
    LabSpec(preset="testmodel"),
    LabSpec(preset="testmodel", device="meta"),
    LabSpec(preset="testmodel", styles={"buffer1": "parameter"}),  # step: torch refuses
    LabSpec(preset="tied_weights"),
    LabSpec(preset="batchnorm", device="meta"),
    # Values on the CPU: the script runs at the interpreter's thread count, the app at its setting.
    LabSpec(preset="batchnorm"),
    LabSpec(preset="layer_list"),  # layers in a plain list: seen by the script as blocks[0].weight
    LabSpec(preset="layer_list", device="meta", styles={"blocks": "module_list"}),
]
INTO = LabSpec(preset="testmodel", styles={"buffer2": "non_persistent_buffer"})
# One interpreter runs every script (each in a fresh namespace), so torch is imported once.
RUNNER = """
import contextlib, io, json, sys
outputs = []
for code in json.load(sys.stdin):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<generated>", "exec"), {"__name__": "__main__"})
    outputs.append(out.getvalue())
json.dump(outputs, sys.stdout)
"""


def cases() -> list[tuple[str, LabSpec]]:
    return [(e, s) for e in EXPERIMENTS for s in SPECS]


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, str], tuple[ExperimentResult, str]]:
    runs = []
    for experiment, spec in cases():
        resolved = resolve(spec, device_ids(), CAP)
        other = (
            resolve(INTO, device_ids(), CAP)
            if experiment == "load_into" and spec.preset == "testmodel"
            else None
        )
        runs.append(((experiment, resolved.query()), run_experiment(experiment, resolved, other)))
    scripts = json.dumps([r.code for _, r in runs])
    done = subprocess.run(
        [sys.executable, "-c", RUNNER], input=scripts, capture_output=True, text=True, check=True
    )
    outputs = json.loads(done.stdout)
    return {key: (result, out) for (key, result), out in zip(runs, outputs, strict=True)}


@pytest.mark.parametrize(("experiment", "spec"), cases(), ids=[f"{e}-{s.query()}" for e, s in cases()])
def test_script_prints_what_the_experiment_saw(results: dict, experiment: str, spec: LabSpec) -> None:
    result, output = results[(experiment, resolve(spec, device_ids(), CAP).query())]
    lines = output.splitlines()
    refused = [json.loads(line.removeprefix("refused ")) for line in lines if line.startswith("refused ")]
    expected_error = [[result.error.type, result.error.message]] if result.error else []
    assert refused == expected_error
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("*" * 20)) + 1 :]
    expected = [
        f"{t.name} {t.kind} {t.device_after} {t.dtype_after} {t.requires_grad_after} {t.has_grad} "
        f"{t.changed} {t.same_object}"
        for t in result.tensors
    ]
    assert table == expected
    # The names both list (the script carries the app's tensors()) are the tensors torch holds.
    watched = (
        resolve(INTO, device_ids(), CAP) if experiment == "load_into" and spec.preset == "testmodel" else spec
    )
    styles = resolve(watched, device_ids(), CAP).styles
    assert {line.split(" ", 1)[0] for line in table} == set(
        named(reference(spec.preset, styles), list(styles))
    )
