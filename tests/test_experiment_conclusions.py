"""An experiment on the page opens with a conclusion in words, in the user's language, whose
names are what torch itself does to the reference module (written here with plain torch)."""

from __future__ import annotations

import re

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from tests.support.reference import TUTORIAL_DEFAULTS, reference

STYLES = {**TUTORIAL_DEFAULTS["testmodel"], "parameter1": "frozen_parameter"}
QUERY = {"preset": "testmodel", **{f"style.{k}": v for k, v in STYLES.items()}}


def conclusion(client: TestClient, lang: str = "en", **params: str) -> str:
    html = client.get("/", params={**QUERY, "lang": lang, **params}).text
    (text,) = re.findall(r'<p class="conclusion">(.*?)</p>', html, re.S)
    return " ".join(text.split())


def listed(sentence: str, prefix: str, suffix: str = "") -> list[str]:
    """The names a sentence lists between ``prefix`` and ``suffix`` and its full stop."""
    match = re.search(re.escape(prefix) + r" (.*?)" + re.escape(suffix) + r"\.(?: |$)", sentence)
    assert match, (prefix, sentence)
    return match.group(1).split(", ")


def tracked(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers()), "buffer1": model.buffer1}


def test_cast_names_what_half_casts_and_what_it_leaves(client: TestClient) -> None:
    model = reference("testmodel", STYLES)
    model.half()
    cast = sorted(n for n, t in tracked(model).items() if t.dtype == torch.float16)
    kept = sorted(n for n, t in tracked(model).items() if t.dtype == torch.float32)
    text = conclusion(client, experiment="cast", dtype="half")
    assert sorted(listed(text, "The cast changed the dtype of")) == cast
    assert kept == ["buffer1"] and text.endswith("buffer1 kept its dtype.")


def test_save_load_names_what_the_checkpoint_restores(client: TestClient) -> None:
    model = reference("testmodel", STYLES)
    restored = list(model.state_dict())
    text = conclusion(client, experiment="save_load")
    assert sorted(listed(text, "load_state_dict restored", " from the checkpoint")) == sorted(restored)
    assert "buffer1 did not come back" in text


def test_step_names_what_the_optimizer_changed_and_what_it_could_not(client: TestClient) -> None:
    model = reference("testmodel", STYLES)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    text = conclusion(client, experiment="step")
    assert listed(text, "The optimizer changed") == trainable
    assert f"{', '.join(frozen)} got no gradient" in text


@pytest.mark.parametrize("experiment", ["forward", "step", "cast", "save_load", "load_into", "identity"])
def test_the_conclusion_speaks_chinese(client: TestClient, experiment: str) -> None:
    text = conclusion(client, "zh-CN", experiment=experiment)
    assert re.search(r"[\u4e00-\u9fff]", text), text
    words = {w for w in re.findall(r"[A-Za-z_][\w.()]*", text) if not re.search(r"[_.()0-9]", w)}
    assert words <= {"torch", "RuntimeError", "Python"}, words


@pytest.mark.parametrize(
    ("preset", "styles"),
    [("positional_encoding", {"pe": "non_persistent_buffer"}), ("layer_list", {"blocks": "python_list"})],
)
def test_save_load_never_calls_restored_what_the_checkpoint_does_not_carry(
    client: TestClient, preset: str, styles: dict[str, str]
) -> None:
    """A non-persistent buffer, a plain list's layers: equal after the load only because the fresh
    module makes them alike (torch.manual_seed(0), same __init__), not because the checkpoint had them."""
    model, fresh = reference(preset, styles), reference(preset, styles)
    saved = model.state_dict()
    unsaved = {n: t for n, t in model.named_buffers() if n not in saved}
    if preset == "layer_list":
        unsaved = {f"blocks[{i}].{n}": t for i, b in enumerate(model.blocks) for n, t in b.named_parameters()}
        again = {f"blocks[{i}].{n}": t for i, b in enumerate(fresh.blocks) for n, t in b.named_parameters()}
    else:
        again = dict(fresh.named_buffers())
    assert unsaved and all(torch.equal(t, again[n]) for n, t in unsaved.items())
    params = {"preset": preset, **{f"style.{k}": v for k, v in styles.items()}, "experiment": "save_load"}
    html = client.get("/", params={**params, "lang": "en"}).text
    (text,) = re.findall(r'<p class="conclusion">(.*?)</p>', html, re.S)
    text = " ".join(text.split())
    assert sorted(listed(text, "load_state_dict restored", " from the checkpoint")) == sorted(saved)
    alike = listed(text, "Not in the checkpoint:", "; the fresh module made the same values itself")
    assert sorted(alike) == sorted(unsaved), text
    zh = client.get("/", params={**params, "lang": "zh-CN"}).text
    assert "不在检查点里：" + ", ".join(alike) in zh
