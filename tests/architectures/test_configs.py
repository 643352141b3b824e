"""Any config.json: read and checked (refusals name the field), carried in the URL and read back the
same, built by transformers as transformers builds it when called directly."""

from __future__ import annotations

import base64
import json
import zlib

import pytest
import torch
import transformers
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from app.architectures import configs
from app.architectures.catalogue import ArchitectureError
from app.architectures.module_tree import module_tree
from tests.support.architectures import LLAMA_CONFIG, check_against_torch


def test_a_config_is_read_canonical_and_round_trips_through_the_url() -> None:
    pasted = {
        **LLAMA_CONFIG,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.0",
        "_name_or_path": "x",
    }
    config = configs.read(json.dumps(pasted))
    assert "torch_dtype" not in config and "_name_or_path" not in config and list(config) == sorted(config)
    assert configs.decode(configs.encode(config)) == config
    labels = configs.read(
        json.dumps({"model_type": "vit", "id2label": {str(i): f"c{i}" for i in range(1000)}})
    )
    assert labels["num_labels"] == 1000 and "id2label" not in labels
    assert len(configs.encode(labels)) < 200  # a thousand label names never reach the URL


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{x", "config.json: not JSON: Expecting property name"),
        ("[1, 2]", "config.json: a JSON object is expected"),
        ('{"hidden_size": 64}', "model_type: missing"),
        ('{"model_type": ""}', "model_type: missing"),
        ('{"model_type": 7}', "model_type: missing"),
        ('{"model_type": ["llama"]}', "model_type: missing"),
        ('{"model_type": "nope"}', "model_type: 'nope' is not a model type this transformers (5.23.0) knows"),
    ],
)
def test_refusals_name_the_field(text: str, says: str) -> None:
    with pytest.raises(ArchitectureError, match=says.replace("(", r"\(").replace(")", r"\)")) as refused:
        configs.read(text)
    assert refused.value.status == 422
    with pytest.raises(ArchitectureError, match="over the cap of 10") as big:
        configs.read(" " * 11, max_bytes=10)
    assert big.value.status == 413
    with pytest.raises(ArchitectureError, match=r"^c: not a config this server wrote"):
        configs.decode("not%20base64")


def test_an_unknown_model_type_is_told_how_many_this_transformers_knows() -> None:
    known = len(list(transformers.models.auto.configuration_auto.CONFIG_MAPPING.keys()))
    with pytest.raises(ArchitectureError) as refused:
        configs.read('{"model_type": "nope"}')
    said = str(refused.value)
    assert f"this transformers ({transformers.__version__}) knows; {known} are, e.g. llama" in said


def test_a_link_cut_short_or_inflating_past_the_cap_is_not_ours() -> None:
    # A c= of 4 KB can inflate to megabytes: it is read up to the cap and refused as not ours, never
    # inflated whole and then measured. A link cut short (a copy that lost its end) is not ours either.
    def link(config: dict) -> str:
        return base64.urlsafe_b64encode(zlib.compress(json.dumps(config).encode(), 9)).decode().rstrip("=")

    at_cap = {**LLAMA_CONFIG, "pad": ""}
    at_cap["pad"] = " " * (configs.MAX_TEXT - len(json.dumps(at_cap).encode()))
    assert len(json.dumps(at_cap).encode()) == configs.MAX_TEXT
    assert configs.decode(link(at_cap)) == configs.read(json.dumps(at_cap))  # at the cap: read
    over = {**at_cap, "pad": at_cap["pad"] + " "}
    whole = configs.encode(configs.read(json.dumps(LLAMA_CONFIG)))
    for param in (link(over), link({**LLAMA_CONFIG, "pad": " " * (30 * configs.MAX_TEXT)}), whole[:-8]):
        assert len(param) <= configs.MAX_PARAM
        with pytest.raises(ArchitectureError, match=r"^c: not a config this server wrote") as refused:
            configs.decode(param)
        assert refused.value.status == 422


class Devices(TorchDispatchMode):
    """The devices of the tensors (more than one element) that ops make."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.seen |= {
            t.device.type for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.numel() > 1
        }
        return out


def test_a_config_is_built_on_the_device_asked_and_on_meta_never_with_values() -> None:
    config = configs.read(json.dumps(LLAMA_CONFIG))
    for device in ("meta", "cpu"):
        with Devices() as made:
            model = configs.build(config, device)
        assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {device}
        assert made.seen == {device}  # on meta, no tensor with memory behind it, even for a moment


def test_a_config_classs_long_refusal_is_cut_to_600_characters() -> None:
    # transformers' own words quote the value: a long one makes them long.
    long = {**LLAMA_CONFIG, "hidden_size": "y" * 2000}
    with pytest.raises(ArchitectureError) as refused:
        configs.made_config(configs.read(json.dumps(long)))
    said = refused.value.message
    assert refused.value.status == 422 and said.startswith("hidden_size: StrictDataclassFieldValidationError")
    assert len(said) == len("hidden_size: ") + 600, said


def test_the_config_class_refusal_names_its_field() -> None:
    with pytest.raises(ArchitectureError, match=r"(?s)^hidden_size: .*expected int"):
        configs.made_config(configs.read(json.dumps({**LLAMA_CONFIG, "hidden_size": "wide"})))
    # What transformers has but builds no model: a config class, a head's Auto class, a function, a
    # module, a string; and what it does not have.
    for name in (
        "NoSuchModel",
        "LlamaConfig",
        "AutoModelForCausalLM",
        "is_torch_available",
        "logging",
        "__version__",
    ):
        with pytest.raises(
            ArchitectureError, match=rf"^architectures: '{name}' is no model class"
        ) as refused:
            configs.architecture(configs.read(json.dumps({**LLAMA_CONFIG, "architectures": [name]})))
        assert refused.value.status == 422
    for name, made in (
        ("LlamaModel", "LlamaModel"),
        ("AutoModel", "LlamaModel"),
        ("LlamaForCausalLM", "LlamaForCausalLM"),
    ):
        config = configs.read(json.dumps({**LLAMA_CONFIG, "architectures": [name]}))
        assert configs.architecture(config).auto_class == name
        assert configs.model_class(config) is getattr(transformers, made)


@pytest.mark.parametrize(
    ("config", "says"),
    [
        # The model's own refusal names the key in words ("hidden size"): the field is that key.
        (
            {"model_type": "bert", "hidden_size": 64, "num_attention_heads": 5, "num_hidden_layers": 1},
            r"^hidden_size: ValueError: The hidden size \(64\) is not a multiple",
        ),
        # It names no key of the config (embed_dim is GPT-2's word for n_embd): the whole config.
        (
            {"model_type": "gpt2", "n_embd": 64, "n_head": 5, "n_layer": 1},
            r"^config\.json: ValueError: `embed_dim` must be divisible by num_heads",
        ),
    ],
)
def test_a_models_own_refusal_names_the_key_it_speaks_of(config: dict, says: str) -> None:
    with pytest.raises(ArchitectureError, match=says) as refused:
        configs.build(configs.read(json.dumps(config)), "meta")
    assert refused.value.status == 422


def test_it_builds_what_transformers_builds() -> None:
    config = configs.read(json.dumps(LLAMA_CONFIG))
    direct = {k: v for k, v in LLAMA_CONFIG.items() if k not in ("model_type", "architectures")}
    with torch.device("meta"):
        reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**direct))
    check_against_torch(module_tree(configs.build(config, "meta")), reference)
    arch = configs.architecture(config)
    assert (arch.config_class, arch.auto_class, arch.family) == ("LlamaConfig", "LlamaForCausalLM", "llama")
    real = configs.build(config, "cpu")
    assert not any(p.is_meta for p in real.parameters())
    base = configs.architecture(configs.read(json.dumps({"model_type": "bert", "num_hidden_layers": 1})))
    assert base.auto_class == "AutoModel"  # no architectures named: transformers' base model


def test_a_build_torch_cannot_allocate_is_a_memory_error_in_torchs_words() -> None:
    """2**36 tokens of 64 floats: 16 TiB, which torch's CPU allocator refuses (not a config error)."""
    config = configs.read(json.dumps({**LLAMA_CONFIG, "vocab_size": 2**36}))
    with pytest.raises(MemoryError, match="can't allocate memory"):
        configs.build(config, "cpu")


def test_label_names_never_change_the_config_their_count_does() -> None:
    """id2label and label2id name the classes: transformers builds the same tensors whatever the
    names, so the canonical config (and its digest) keeps only their count."""
    named = {**LLAMA_CONFIG, "id2label": {"0": "neg", "1": "pos"}, "label2id": {"neg": 0, "pos": 1}}
    renamed = {**LLAMA_CONFIG, "id2label": {"0": "a", "1": "b"}}
    read = configs.read(json.dumps(named))
    assert "id2label" not in read and "label2id" not in read and read["num_labels"] == 2
    assert read == configs.read(json.dumps(renamed))
