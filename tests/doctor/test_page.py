"""The checkpoint page without a browser: the form, a result as a page and as an htmx block, refusals."""

from __future__ import annotations

import io
import re

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


def test_one_element_is_not_elements_and_the_labs_styles_are_named(client: TestClient) -> None:
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(1)}, buffer)
    query = {"preset": "testmodel", "style.buffer1": "buffer"}
    response = client.post("/checkpoints", files={"file": ("m.pt", buffer.getvalue())}, data=query)
    assert "(1 element)" in response.text and "1 elements" not in response.text
    form = client.get("/checkpoints", params=query).text
    (hint,) = re.findall(r"With the styles of the lab you came from:(.*?)</p>", form, re.S)
    assert "style." not in hint and "preset=" not in hint  # no raw query string for people
    assert "<code>buffer1</code> register_buffer()" in hint


def test_a_compare_input_left_empty_is_no_second_file(client: TestClient) -> None:
    """Browsers send an empty part (no name, no bytes) for a file input left empty: it is not a
    checkpoint to compare with, and the file is inspected and loaded as if the input were absent."""
    response = client.post(
        "/checkpoints",
        files=[("file", ("m.pt", checkpoint())), ("other", ("", b"", "application/octet-stream"))],
        data={"preset": "testmodel", "state_dict": "model"},
    )
    assert response.status_code == 200, response.text[-500:]
    assert "Missing key(s) in state_dict" in response.text


def test_a_tiny_architecture_is_loaded_into_as_the_architecture_though_it_is_a_lab_preset_too() -> None:
    """At start-up the tiny architectures become lab presets; the doctor's form still offers each
    once, and loads into the architecture (as ``mre --into gpt2_tiny`` does)."""
    import transformers

    from app.architectures.catalogue import ARCHITECTURES
    from app.main import create_app

    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**ARCHITECTURES["gpt2_tiny"].config))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    with TestClient(create_app()) as started:  # the lifespan registers the presets
        form = started.get("/checkpoints?preset=gpt2_tiny").text
        assert form.count('<option value="gpt2_tiny"') == 1 and '<option value="gpt2_tiny" selected>' in form
        files = {"file": ("gpt2.pt", buffer.getvalue(), "application/octet-stream")}
        page = started.post("/checkpoints", data={"preset": "gpt2_tiny"}, files=files).text
    assert re.search(r"<h3>[^<]*<code>gpt2_tiny</code>", page), page[:2000]
