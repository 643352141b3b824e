"""What a checkpoint is loaded into: a lab preset built as the lab builds it, or an architecture
built as transformers builds it (a tiny one with real values, a full size on meta)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from app.architectures.catalogue import ARCHITECTURES, ArchitectureError
from app.doctor.targets import (
    CONFIG_MAX_BYTES,
    ConfigError,
    architecture_target,
    listed,
    on_meta,
    read_config,
    target_module,
    target_name,
)
from app.lab.report import build
from app.lab.spec import LabSpec, SpecError
from tests.support.architectures import direct
from tests.support.checkpoints import spec


def test_a_presets_module_is_the_labs() -> None:
    target = spec("testmodel")
    module, lab = target_module(target), build(target, refusals={})
    assert type(module).__name__ == target_name(target) == "TestModel"
    for (name, t), (other, u) in zip(module.state_dict().items(), lab.state_dict().items(), strict=True):
        assert name == other and torch.equal(t, u)
    assert target_module(target) is not module  # a fresh module each attempt


@pytest.mark.parametrize(("arch_id", "device"), [("gpt2_tiny", "cpu"), ("gpt2", "meta")])
def test_an_architecture_is_built_where_a_load_can_check_it(arch_id: str, device: str) -> None:
    module = target_module(arch_id)
    reference = direct(arch_id, device)
    assert {t.device.type for t in module.state_dict().values()} == {device}
    assert [(k, v.shape) for k, v in module.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    assert target_name(arch_id) == arch_id


def test_an_architecture_target_is_refused_where_unknown_or_off() -> None:
    assert architecture_target("llama_tiny", True) == "llama_tiny"
    for arch_id, on in (("nope", True), ("llama_tiny", False)):
        with pytest.raises(ArchitectureError) as refused:
            architecture_target(arch_id, on)
        assert refused.value.status == 404


def test_a_config_json_is_built_on_meta_as_transformers_builds_it(tmp_path: Path) -> None:
    config = transformers.LlamaConfig(
        **ARCHITECTURES["llama_tiny"].config, architectures=["LlamaForCausalLM"]
    )
    config.save_pretrained(tmp_path)
    target = read_config((tmp_path / "config.json").read_bytes(), "config.json")
    module = target_module(target)
    with torch.device("meta"):
        reference = transformers.LlamaForCausalLM(config)
    assert type(module) is transformers.LlamaForCausalLM and on_meta(target)
    assert [(k, v.shape) for k, v in module.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    assert target_name(target) == "LlamaForCausalLM (config.json)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"{not json", "not JSON"),
        (b'{"hidden_size": 3}', 'a JSON object with a "model_type"'),
        (b'{"model_type": "my_own", "auto_map": {"AutoModel": "x.Y"}}', "is not one transformers"),
    ],
)
def test_a_config_that_describes_no_model_here_is_refused(text: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        target_module(read_config(text, "config.json"))


def test_llama_3_2_1b_is_checked_against_its_own_config_offline(tmp_path: Path) -> None:
    """Llama 3.2 1B's published shape, as its config.json gives it: built on meta from the config
    alone (no weights, no download), its tied head one tensor under two names."""
    config = transformers.LlamaConfig(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        architectures=["LlamaForCausalLM"],
    )
    config.save_pretrained(tmp_path)
    module = target_module(read_config((tmp_path / "config.json").read_bytes(), "config.json"))
    assert sum(p.numel() for p in module.parameters()) == 1_235_814_400  # tied: the embedding counted once
    assert module.lm_head.weight is module.model.embed_tokens.weight
    assert len(module.state_dict()) == 147 and {p.device.type for p in module.parameters()} == {"meta"}


def test_only_the_labs_listed_modules_are_loaded_into() -> None:
    # A pasted config kept for the lab (config:<digest>) is a preset of the server's process only; the
    # inspection's child would not know it.
    assert listed(None) is None and listed(spec("testmodel")) == spec("testmodel")
    with pytest.raises(SpecError, match="not a pasted config kept for the lab") as refused:
        listed(LabSpec(preset="config:" + "a" * 52, device="cpu"))
    assert refused.value.status == 422 and refused.value.loc == ("preset",)


def _config(**changes: object) -> bytes:
    return json.dumps({**ARCHITECTURES["llama_tiny"].config, "model_type": "llama", **changes}).encode()


@pytest.mark.parametrize(
    ("names", "built"),
    [
        (None, transformers.LlamaModel),  # no "architectures": the bare model, as AutoModel builds it
        (["LlamaForCausalLM"], transformers.LlamaForCausalLM),
        (["NotAClass", 3, "LlamaForCausalLM"], transformers.LlamaForCausalLM),  # the first transformers has
        (["NotAClass"], transformers.LlamaModel),
    ],
)
def test_the_model_built_is_the_first_listed_class_transformers_has(names: list | None, built: type) -> None:
    target = read_config(_config(**({"architectures": names} if names is not None else {})), "c.json")
    module = target_module(target)
    assert type(module) is built and on_meta(target)
    assert {t.device.type for t in module.state_dict().values()} == {"meta"}
    chosen = built.__name__ if names and built is not transformers.LlamaModel else "AutoModel"
    assert target_name(target) == f"{chosen} (c.json)"


def test_a_config_transformers_refuses_to_build_is_refused_in_its_words() -> None:
    target = read_config(_config(num_attention_heads=0, architectures=["LlamaForCausalLM"]), "c.json")
    with pytest.raises(Exception) as torchs, torch.device("meta"):  # transformers' own refusal
        transformers.LlamaForCausalLM(
            transformers.LlamaConfig.from_dict(json.loads(_config(num_attention_heads=0)))
        )
    with pytest.raises(ConfigError) as refused:
        target_module(target)
    assert str(refused.value) == (
        "c.json: transformers could not build LlamaForCausalLM from it: "
        f"{torchs.type.__name__}: {str(torchs.value)[:1000]}"
    )


@pytest.mark.parametrize("extra", [0, 1])
def test_a_config_json_is_read_up_to_its_cap(extra: int) -> None:
    body = _config()
    text = body[:-1] + b" " * (CONFIG_MAX_BYTES + extra - len(body)) + b"}"
    assert len(text) == CONFIG_MAX_BYTES + extra
    if not extra:
        assert read_config(text, "c.json").data()["model_type"] == "llama"
        return
    with pytest.raises(ConfigError) as refused:
        read_config(text, "c.json")
    assert (
        str(refused.value)
        == f"c.json: {CONFIG_MAX_BYTES + 1} bytes, over the {CONFIG_MAX_BYTES} bytes a config.json may have"
    )


@pytest.mark.parametrize(
    "text",
    [b"[1, 2]", b'"llama"', b'{"model_type": 3}', b'{"model_type": null}'],
)
def test_json_that_is_no_config_object_is_refused_at_reading(text: bytes) -> None:
    with pytest.raises(ConfigError) as refused:
        read_config(text, "c.json")
    assert str(refused.value) == 'c.json: a transformers config is a JSON object with a "model_type"'


def test_json_refused_is_named_with_the_parsers_words() -> None:
    with pytest.raises(ValueError) as parsers:
        json.loads("{not json")
    with pytest.raises(ConfigError) as refused:
        read_config(b"{not json", "c.json")
    assert str(refused.value) == f"c.json: not JSON: {parsers.value}"


def test_an_unknown_model_type_names_the_transformers_version() -> None:
    with pytest.raises(ConfigError) as refused:
        target_module(read_config(b'{"model_type": "my_own"}', "c.json"))
    assert str(refused.value) == (
        f"c.json: model_type 'my_own' is not one transformers {transformers.__version__} knows (a model "
        "with its own code, auto_map, is never run here)"
    )


def test_bytes_that_are_not_utf8_are_read_with_replacement() -> None:
    target = read_config(_config(name_or_path="x")[:-1] + b', "note": "\xff"}', "c.json")
    assert target.data()["note"] == "\ufffd"


@pytest.mark.parametrize(("target", "meta"), [("gpt2_tiny", False), ("llama_tiny", False), ("gpt2", True)])
def test_a_tiny_architecture_is_built_with_real_values_and_a_full_one_on_meta(
    target: str, meta: bool
) -> None:
    assert on_meta(target) is meta and on_meta(spec("testmodel")) is False
    module = target_module(target)
    if meta:
        return
    reference = direct(target, "cpu")
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in module.state_dict().items())
