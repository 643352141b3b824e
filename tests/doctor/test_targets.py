"""What a checkpoint is loaded into: a lab preset built as the lab builds it, or an architecture
built as transformers builds it (a tiny one with real values, a full size on meta)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from app.architectures.catalogue import ARCHITECTURES, ArchitectureError
from app.doctor.targets import (
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
