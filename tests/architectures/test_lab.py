"""The tiny architectures in the lab: their own tensors are the members, restyled in place as torch
does it when called directly, every experiment runs on them, and each generated script prints what
the experiment observed."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from app.architectures import lab
from app.architectures.catalogue import ARCHITECTURES
from app.lab.devices import device_ids
from app.lab.experiments import EXPERIMENTS, run_experiment
from app.lab.presets import PRESETS, register
from app.lab.report import inspect
from app.lab.spec import LabSpec, resolve
from tests.support.architectures import TINY, direct
from tests.support.html import parse
from tests.support.scripts import run_scripts

RESTYLED = {"model.rotary_emb.inv_freq": "buffer", "model.norm.weight": "frozen_parameter"}


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    for preset in lab.presets():
        register(preset)


def spec(arch_id: str, styles: dict[str, str] | None = None, device: str = "cpu") -> LabSpec:
    return resolve(LabSpec(preset=arch_id, device=device, styles=styles or {}), device_ids(), 4096)


@pytest.mark.parametrize("arch_id", TINY)
def test_the_members_are_the_models_own_tensors_in_their_styles(arch_id: str) -> None:
    model = direct(arch_id)
    state = model.state_dict()
    preset = PRESETS[arch_id]
    expected = {n: "parameter" for n, _ in model.named_parameters()}
    expected |= {n: "buffer" if n in state else "non_persistent_buffer" for n, _ in model.named_buffers()}
    assert {m.name: m.default_style for m in preset.members} == expected
    # As built, the lab's report is torch's own reading of the model.
    report = inspect(spec(arch_id))
    real = direct(arch_id, "cpu")
    assert [r.name for r in report.named_parameters] == list(dict(real.named_parameters()))
    assert [(r.name, r.persistent) for r in report.named_buffers] == [
        (n, n in real.state_dict()) for n, _ in real.named_buffers()
    ]
    assert [r.name for r in report.state_dict] == list(real.state_dict())


def test_restyled_members_are_what_torch_makes_of_them() -> None:
    report = inspect(spec("llama_tiny", RESTYLED))
    model = direct("llama_tiny", "cpu")
    rotary, norm = model.get_submodule("model.rotary_emb"), model.get_submodule("model.norm")
    inv_freq, weight = rotary.inv_freq, norm.weight.detach()
    del rotary.inv_freq, norm.weight
    rotary.register_buffer("inv_freq", inv_freq)
    norm.weight = nn.Parameter(weight, requires_grad=False)
    assert [(r.name, r.requires_grad) for r in report.named_parameters] == [
        (n, p.requires_grad) for n, p in model.named_parameters()
    ]
    assert [(r.name, r.persistent) for r in report.named_buffers] == [
        (n, n in model.state_dict()) for n, _ in model.named_buffers()
    ]
    assert [r.name for r in report.state_dict] == list(model.state_dict())
    assert "model.rotary_emb.inv_freq" in [r.name for r in report.state_dict]
    members = {m.name: m for m in report.members}
    assert (
        members["model.norm.weight"].in_parameters and not members["model.rotary_emb.inv_freq"].in_parameters
    )


@pytest.mark.parametrize("arch_id", TINY)
def test_every_experiment_runs_and_its_script_prints_what_it_saw(arch_id: str) -> None:
    styles = RESTYLED if arch_id == "llama_tiny" else {}
    results = [run_experiment(e, spec(arch_id, styles), spec(arch_id)) for e in EXPERIMENTS]
    ran = run_scripts([r.code for r in results], preload=("transformers",))
    for result, done in zip(results, ran, strict=True):
        assert done.returncode == 0, (arch_id, result.experiment, done.stderr[-1500:])
        assert result.error is None or result.experiment == "meta_roundtrip", (
            result.experiment,
            result.error,
        )
        lines = done.stdout.splitlines()
        table = lines[next(i for i, line in enumerate(lines) if line.startswith("*" * 20)) + 1 :]
        expected = [
            f"{t.name} {t.kind} {t.device_after} {t.dtype_after} {t.requires_grad_after} {t.has_grad} "
            f"{t.changed} {t.same_object}"
            for t in result.tensors
        ]
        assert table == expected, (arch_id, result.experiment)
    step = results[list(EXPERIMENTS).index("step")]
    if arch_id == "llama_tiny":  # the frozen LayerNorm weight is left alone by the optimizer
        assert "model.norm.weight" not in step.facts["changed_by_optimizer"]
        assert "model.layers.0.input_layernorm.weight" in step.facts["changed_by_optimizer"]


def test_the_lab_page_and_api_open_them(client: TestClient) -> None:
    listed = {p["id"] for p in client.get("/api/presets").json()}
    assert set(TINY) <= listed and "llama_8b" not in listed
    query = {"preset": "llama_tiny", "device": "meta"} | {f"style.{k}": v for k, v in RESTYLED.items()}
    page = client.get("/", params=query)
    assert page.status_code == 200
    permalink = page.headers["HX-Push-Url"]
    assert "style.model.rotary_emb.inv_freq=buffer" in permalink and "preset=llama_tiny" in permalink
    rows = parse(page.text).find_all("tr")
    assert any("model.rotary_emb.inv_freq" in r.text for r in rows)
    moved = client.get("/api/lab", params=query).json()
    assert {r["device"] for r in moved["named_parameters"]} == {"meta"}
    assert torch.__version__ and ARCHITECTURES["llama_tiny"].tiny
