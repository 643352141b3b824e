"""Experiments and the matrix over HTTP: listed, run by GET and POST alike, refusals as content."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.lab.experiments import EXPERIMENTS
from tests.support.reference import TUTORIAL_DEFAULTS, named, reference


def test_list(client: TestClient) -> None:
    body = client.get("/api/experiments").json()
    assert [e["id"] for e in body] == list(EXPERIMENTS)
    assert {e["id"]: e["params"] for e in body}["cast"] == {"dtype": ["half", "bfloat16", "double"]}


def test_get_and_post_agree(client: TestClient) -> None:
    got = client.get(
        "/api/experiments/cast", params={"preset": "testmodel", "device": "meta", "dtype": "double"}
    )
    posted = client.post(
        "/api/experiments/cast", json={"preset": "testmodel", "device": "meta", "params": {"dtype": "double"}}
    )
    assert got.status_code == posted.status_code == 200
    model = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"]).to("meta").double()
    expected = {n: str(t.dtype).removeprefix("torch.") for n, t in named(model, ["buffer1"]).items()}
    for response in (got, posted):  # each against torch, not only against the other
        assert {t["name"]: t["dtype_after"] for t in response.json()["tensors"]} == expected
    assert expected["buffer1"] == "float32" and expected["buffer2"] == "float64"  # plain tensors are not cast
    assert got.json() == posted.json()


def test_torch_refusal_is_content(client: TestClient) -> None:
    response = client.get(
        "/api/experiments/step", params={"preset": "testmodel", "style.buffer1": "parameter"}
    )
    assert response.status_code == 200
    error = response.json()["error"]
    assert error["type"] == "RuntimeError" and "in-place operation" in error["message"]
    assert error["step"].startswith("out = model(")


def test_load_into_a_non_persistent_buffer(client: TestClient) -> None:
    query = {"preset": "testmodel", "into.buffer2": "non_persistent_buffer"}
    facts = client.get("/api/experiments/load_into", params=query).json()["facts"]
    assert facts["strict"].startswith("RuntimeError: Error(s) in loading state_dict for TestModel")
    assert facts["unexpected_keys"] == ["buffer2"]


def test_bad_experiment_requests(client: TestClient) -> None:
    assert client.get("/api/experiments/nope", params={"preset": "testmodel"}).status_code == 404
    bad_option = client.get("/api/experiments/cast", params={"preset": "testmodel", "dtype": "int8"})
    assert bad_option.status_code == 422 and bad_option.json()["detail"][0]["loc"] == ["params", "dtype"]
    stray = client.get("/api/experiments/cast", params={"preset": "testmodel", "mode": "eval"})
    assert stray.status_code == 422
    wrong_into = client.get(
        "/api/experiments/load_into", params={"preset": "testmodel", "into.nothere": "buffer"}
    )
    assert wrong_into.status_code == 422 and wrong_into.json()["detail"][0]["loc"] == ["into", "nothere"]
    into_elsewhere = client.post(
        "/api/experiments/cast", json={"preset": "testmodel", "into": {"buffer2": "buffer"}}
    )
    assert into_elsewhere.status_code == 422


def test_matrix_route(client: TestClient) -> None:
    body = client.get("/api/matrix", params={"preset": "mymodule", "style.bias": "plain_tensor"}).json()
    cells = {r["member"]: r["cells"] for r in body["rows"]}
    assert cells["bias"]["moves_with_to"] is False and cells["weight"]["gets_grad"] is True
    assert client.get("/api/matrix", params={"preset": "nope"}).status_code == 404


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_custom_shapes_reach_every_experiment(client: TestClient, experiment: str) -> None:
    """GET and POST run the module of the spec as given: w of shape [2, 3], as torch makes it."""
    query = {"preset": "custom", "style.w": "parameter", "style.v": "buffer", "shape.w": "2x3"}
    body = {"preset": "custom", "styles": {"w": "parameter", "v": "buffer"}, "shapes": {"w": [2, 3]}}
    if experiment == "load_into":
        query["into.w"], body["into"] = "buffer", {"w": "buffer"}
    for response in (
        client.get(f"/api/experiments/{experiment}", params=query),
        client.post(f"/api/experiments/{experiment}", json=body),
    ):
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["spec"]["shapes"] == {"w": [2, 3], "v": [3]}
        assert "torch.randn(2, 3)" in result["code"] and "torch.randn(3)" in result["code"]
        styles = {"w": "parameter", "v": "buffer"}
        if experiment == "load_into":  # the module watched is the one loaded into: w a buffer
            styles = {"w": "buffer"}
        model = reference("custom", styles, {"w": [2, 3]})
        assert {t["name"] for t in result["tensors"]} == set(named(model, list(styles)))
