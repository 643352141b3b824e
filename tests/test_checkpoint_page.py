"""The checkpoint page without a browser: the form, a result as a page and as an htmx block, refusals."""

from __future__ import annotations

import io

import pytest
import torch
from fastapi.testclient import TestClient


def checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": {"linear.weight": torch.ones(3, 3)}, "epoch": 4}, buffer)
    return buffer.getvalue()


def test_form_preselects_the_labs_module(client: TestClient) -> None:
    page = client.get("/checkpoints?preset=testmodel&style.buffer2=non_persistent_buffer")
    assert page.status_code == 200
    assert '<option value="testmodel" selected>' in page.text
    assert '<input type="hidden" name="style.buffer2" value="non_persistent_buffer">' in page.text
    assert 'enctype="multipart/form-data"' in page.text


@pytest.mark.parametrize("htmx", [False, True])
def test_result_as_a_page_and_as_a_block(client: TestClient, htmx: bool) -> None:
    response = client.post(
        "/checkpoints",
        files={"file": ("m.pt", checkpoint())},
        data={"preset": "testmodel", "style.buffer2": "non_persistent_buffer", "state_dict": "model"},
        headers={"HX-Request": "true"} if htmx else {},
    )
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="results"') == htmx
    assert "Missing key(s) in state_dict" in response.text  # torch's own message
    assert 'data-dtype="float32"' in response.text and "<code>epoch</code>" in response.text


@pytest.mark.parametrize(("htmx", "status"), [(False, 422), (True, 200)])
def test_refusal_as_a_page_and_as_a_block(client: TestClient, htmx: bool, status: int) -> None:
    headers = {"HX-Request": "true"} if htmx else {}
    response = client.post("/checkpoints", files={"file": ("m.pt", b"junk")}, headers=headers)
    assert response.status_code == status
    assert "This file cannot be inspected" in response.text and "not a safetensors or torch" in response.text


def test_a_module_that_does_not_exist_is_said(client: TestClient) -> None:
    response = client.post("/checkpoints", files={"file": ("m.pt", checkpoint())}, data={"preset": "nope"})
    assert response.status_code == 422 and "unknown preset" in response.text
