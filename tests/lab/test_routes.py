"""The JSON API against DESIGN.md, every report compared with the torch reference modules."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from app.lab.presets import PRESETS
from app.lab.styles import CONTAINERS, STYLES
from tests.support.cases import styles_of
from tests.support.reference import TUTORIAL_DEFAULTS, own, tables

# Every GPU too where one exists, so a GPU box runs the whole matrix on CUDA as well.
DEVICES = ["cpu", "meta"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
# Every style on every member (the others at the tutorial's default), on every device.
CASES = [
    (preset, member, style, device)
    for preset, p in PRESETS.items()
    for member in p.member_names
    for style in styles_of(preset)
    for device in DEVICES
]


def lab(client: TestClient, preset: str, device: str, styles: dict[str, str]) -> dict:
    query = {"preset": preset, "device": device, **{f"style.{k}": v for k, v in styles.items()}}
    response = client.get("/api/lab", params=query)
    assert response.status_code == 200, response.text
    return response.json()


def assert_matches_reference(report: dict, preset: str, styles: dict[str, str], device: str) -> None:
    ref = tables(preset, styles, device)
    for table in ("named_parameters", "named_buffers", "state_dict"):
        assert report[table] == ref[table], table
    members = {m["name"]: m for m in report["members"]}
    assert list(members) == list(styles)
    names = {
        t: {row["name"]: 0 for row in ref[t]} for t in ("named_parameters", "named_buffers", "state_dict")
    }
    for name, style in styles.items():
        # A member is listed when it, or (for a container) a tensor of its layers, is.
        assert members[name] == {
            "name": name,
            "style": style,
            "in_parameters": bool(own(names["named_parameters"], name)),
            "in_buffers": bool(own(names["named_buffers"], name)),
            "in_state_dict": bool(own(names["state_dict"], name)),
            "device_before": ref["devices_before"][name],
            "device_after": ref["devices_after"][name],
            "shape": ref["shapes"][name],
            "refused": None,
        }


@pytest.mark.parametrize(("preset", "member", "style", "device"), CASES)
def test_every_style_on_every_member_matches_torch(
    client: TestClient, preset: str, member: str, style: str, device: str
) -> None:
    styles = {**TUTORIAL_DEFAULTS[preset], member: style}
    report = lab(client, preset, device, {member: style})
    assert report["spec"] == {"preset": preset, "device": device, "styles": styles, "shapes": {}}
    assert_matches_reference(report, preset, styles, device)


@pytest.mark.parametrize("style", list(STYLES))
def test_only_plain_tensors_stay_behind_on_meta(client: TestClient, style: str) -> None:
    report = lab(client, "testmodel", "meta", dict.fromkeys(PRESETS["testmodel"].member_names, style))
    for member in report["members"]:
        assert member["device_before"] == "cpu"
        assert member["device_after"] == ("cpu" if style == "plain_tensor" else "meta")


@pytest.mark.parametrize("preset", [p for p in PRESETS if PRESETS[p].members])
@pytest.mark.parametrize("device", DEVICES)
def test_post_reports_match_torch(client: TestClient, preset: str, device: str) -> None:
    """A JSON body gets the report torch gives (not merely the GET's, which could share a bug)."""
    member = PRESETS[preset].member_names[0]
    body = {"preset": preset, "device": device, "styles": {member: styles_of(preset)[-1]}}
    posted = client.post("/api/lab", json=body)
    assert posted.status_code == 200
    assert_matches_reference(posted.json(), preset, {**TUTORIAL_DEFAULTS[preset], **body["styles"]}, device)
    assert posted.json() == lab(client, preset, device, body["styles"])


def test_default_device_is_cpu(client: TestClient) -> None:
    assert client.get("/api/lab", params={"preset": "testmodel"}).json()["spec"]["device"] == "cpu"


def test_health(client: TestClient) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok"
    assert body["torch_version"] == torch.__version__
    assert body["devices"][:2] == ["cpu", "meta"]


def test_devices(client: TestClient) -> None:
    ids = [d["id"] for d in client.get("/api/devices").json()]
    expected = ["cpu", "meta"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    assert ids[: len(expected)] == expected


def test_styles(client: TestClient) -> None:
    body = client.get("/api/styles").json()
    assert [s["id"] for s in body] == list(STYLES) + list(CONTAINERS)
    assert {s["kind"] for s in body if s["id"] in CONTAINERS} == {"container"}
    assert body[0]["code"] == "self.x = nn.Parameter(t)"
    assert set(body[0]) >= {"id", "title", "code"}


def test_presets(client: TestClient) -> None:
    body = {p["id"]: p for p in client.get("/api/presets").json()}
    # The lab's own, first; then those the composition root registers (the tiny architectures).
    assert list(body)[:7] == [
        "mymodule",
        "testmodel",
        "batchnorm",
        "positional_encoding",
        "tied_weights",
        "layer_list",
        "custom",
    ]
    testmodel = body["testmodel"]
    assert [(m["name"], m["default_style"]) for m in testmodel["members"]] == list(
        TUTORIAL_DEFAULTS["testmodel"].items()
    )
    assert testmodel["members"][0]["styles"] == list(STYLES)
    assert testmodel["translations"]["zh-CN"]["title"]


def test_openapi_is_valid_and_documents_the_lab(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    validate(schema)
    assert {"/api/health", "/api/devices", "/api/styles", "/api/presets", "/api/lab"} <= set(schema["paths"])
    assert set(schema["paths"]["/api/lab"]) == {"get", "post"}
    report = schema["components"]["schemas"]["LabReport"]["properties"]
    assert {"spec", "named_parameters", "named_buffers", "state_dict", "members", "code"} <= set(report)
    assert schema["components"]["schemas"]["LabSpec"]["examples"]
