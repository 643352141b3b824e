"""The custom module: the user's names, shapes and styles go to torch as they are."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from app.lab.devices import device_ids
from app.lab.report import inspect
from app.lab.spec import LabSpec, SpecError, resolve
from app.lab.styles import STYLES
from app.main import create_app
from app.settings import Settings, get_settings
from tests.support.cases import CAP
from tests.support.reference import attach, reference, tables

NAMES = ["a.b", "", "training", "class", "w"]


def direct_refusal(name: str, style: str) -> str | None:
    module = nn.Module()
    try:
        attach(module, name, torch.randn(3), style)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.mark.parametrize("style", list(STYLES))
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_names_go_to_torch_unfiltered(style: str, device: str) -> None:
    styles = dict.fromkeys(NAMES, style)
    spec = resolve(
        LabSpec(preset="custom", device=device, styles=styles, shapes={"w": [2, 3]}), device_ids(), CAP
    )
    report = inspect(spec)
    refusals = {m.name: m.refused for m in report.members}
    assert refusals == {name: direct_refusal(name, style) for name in NAMES}
    accepted = {n: s for n, s in styles.items() if refusals[n] is None}
    torch_says = tables("custom", accepted, device, {"w": [2, 3]})
    for table in ("named_parameters", "named_buffers", "state_dict"):  # device, requires_grad, persistent
        assert [row.model_dump() for row in getattr(report, table)] == torch_says[table]
    model = reference("custom", accepted, {"w": [2, 3]})
    params, buffers, state = dict(model.named_parameters()), dict(model.named_buffers()), model.state_dict()
    for row in report.members:
        accepted_here = row.name in accepted
        assert (row.in_parameters, row.in_buffers, row.in_state_dict) == (
            row.name in params,
            row.name in buffers,
            row.name in state,
        )
        assert row.device_before == (torch_says["devices_before"][row.name] if accepted_here else "none")
        assert row.device_after == (torch_says["devices_after"][row.name] if accepted_here else "none")


def test_script_shows_the_same_refusals() -> None:
    styles = {"a.b": "buffer", "": "parameter", "training": "non_persistent_buffer", "ok": "nn_buffer"}
    report = inspect(resolve(LabSpec(preset="custom", device="meta", styles=styles), device_ids(), CAP))
    out = subprocess.run(
        [sys.executable, "-c", report.code], capture_output=True, text=True, check=True
    ).stdout
    refused = [line for line in out.splitlines() if line.startswith("refused ")]
    expected = [f"refused {m.name} {m.refused.replace(': ', ' ', 1)}" for m in report.members if m.refused]
    assert refused == expected
    assert len(refused) == 3


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ({"preset": "custom", "style.x": "bogus"}, ["styles", "x"]),
        ({"preset": "custom", "style.x": "buffer", "shape.x": "100x100"}, ["shapes", "x"]),
        ({"preset": "custom", "style.x": "buffer", "shape.x": "0"}, ["shapes", "x"]),
        ({"preset": "custom", "style.x": "buffer", "shape.x": "1x1x1x1x1"}, ["shapes", "x"]),
        ({"preset": "custom", "shape.y": "3"}, ["shapes", "y"]),
        ({"preset": "custom", "style.x": "buffer", "shape.x": "3by4"}, ["query", "shape.x"]),
        ({"preset": "testmodel", "shape.buffer1": "3"}, ["shapes"]),
    ],
)
def test_bad_custom_specs_are_422(client: TestClient, query: dict, loc: list) -> None:
    response = client.get("/api/lab", params=query)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


def test_custom_over_the_api_and_page(client: TestClient) -> None:
    query = {"preset": "custom", "style.a.b": "buffer", "style.w": "frozen_parameter", "shape.w": "2x2"}
    body = client.get("/api/lab", params=query).json()
    assert body["spec"]["shapes"] == {"a.b": [3], "w": [2, 2]}
    assert body["members"][0]["refused"] == "KeyError: 'buffer name can\\'t contain \".\"'"
    page = client.get("/", params=query)
    assert page.status_code == 200 and 'name="shape.w" value="2x2"' in page.text


@pytest.mark.parametrize(("dims", "extra", "ok"), [(1, 0, True), (2, 0, True), (1, 1, False), (2, 1, False)])
def test_the_element_cap_at_its_boundary(dims: int, extra: int, ok: bool) -> None:
    """Exactly the setting's number of elements (4,096 unless set) is taken; one more is refused."""
    cap = get_settings().custom_max_elements
    shape = [1] * (dims - 1) + [cap + extra]
    spec = LabSpec(preset="custom", styles={"w": "buffer"}, shapes={"w": shape})
    if ok:
        report = inspect(resolve(spec, device_ids(), CAP))
        assert report.named_buffers[0].shape == list(
            reference("custom", {"w": "buffer"}, {"w": shape}).w.shape
        )
        return
    with pytest.raises(SpecError, match=f"^{cap + 1} elements; at most {cap} per tensor$") as refused:
        resolve(spec, device_ids(), CAP)
    assert refused.value.loc == ("shapes", "w")


@pytest.mark.parametrize("route", ["/api/lab", "/api/matrix", "/api/experiments/cast"])
def test_the_apps_own_element_cap_rules(route: str) -> None:
    """create_app(Settings(custom_max_elements=8)): 8 elements are taken, 9 refused, GET and POST."""
    with TestClient(create_app(Settings(custom_max_elements=8))) as small:
        for shape, status in (("2x4", 200), ("8", 200), ("3x3", 422), ("9", 422)):
            query = {"preset": "custom", "style.w": "buffer", "shape.w": shape}
            body = {
                "preset": "custom",
                "styles": {"w": "buffer"},
                "shapes": {"w": list(map(int, shape.split("x")))},
            }
            responses = [small.get(route, params=query)]
            if route != "/api/matrix":  # GET only
                responses.append(small.post(route, json=body))
            for response in responses:
                assert response.status_code == status, (route, shape, response.text[:200])
                if status == 422:
                    assert response.json()["detail"][0] == {
                        "loc": ["shapes", "w"],
                        "msg": "9 elements; at most 8 per tensor",
                        "type": "value_error",
                    }
