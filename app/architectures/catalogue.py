"""Real architectures, built by ``transformers`` from configs written here (no weights, no downloads).

``build(arch_id, device)`` is the one way in: on the meta device by default (an 8B Llama takes a
fraction of a second and no memory there); a tiny config can also be built on the CPU with real,
seeded values and moved to any device of this server. ``transformers`` is imported on the first
build, never at import time, so a server that never shows an architecture never pays for it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cache
from threading import Lock
from types import ModuleType

import torch
from torch import nn

from app.errors import Refusal
from app.lab.devices import device_ids
from app.langs import Text

TRANSFORMERS_PIN = "transformers==5.23.0"  # as pinned in pyproject.toml; named in the refusal below
# A full-size architecture is built on a real device when its float32 weights and buffers fit this
# (MRE_ARCHITECTURE_MAX_BYTES: GPT-2, BERT-base, ResNet-50 and ViT-B/16 do; Llama 3 8B does not).
MAX_BYTES = 2 * 1000**3
OFF = Text("architectures are turned off on this server (MRE_ARCHITECTURES=false)")


class ArchitectureError(Refusal):
    """A request no architecture can answer: ``status`` is the HTTP status a face gives it."""

    def __init__(self, status: int, text: Text) -> None:
        super().__init__(text, status=status)


@dataclass(frozen=True)
class Architecture:
    id: str
    family: str
    config_class: str  # a transformers config class, e.g. "LlamaConfig"
    auto_class: str  # the Auto class whose from_config builds it, e.g. "AutoModelForCausalLM"
    config: dict = field(hash=False)  # the config's keyword arguments, written in code
    tiny: bool  # small enough to build on a real device with real values
    title: Text = field(hash=False)
    description: Text = field(hash=False)
    source: str = ""

    def code(self, device: str) -> str:
        """A script that builds the same model with transformers alone."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        head = f"import torch\nfrom transformers import {self.auto_class}, {self.config_class}\n\n"
        config = f"config = {self.config_class}({args})\n"
        # An Auto class makes the model of a config; a model class itself takes it in _from_config.
        make = "from_config" if self.auto_class.startswith("Auto") else "_from_config"
        if device == "meta":
            body = f'with torch.device("meta"):\n    model = {self.auto_class}.{make}(config)\n'
        else:
            body = f"torch.manual_seed(0)\nmodel = {self.auto_class}.{make}(config).to({device!r})\n"
        return head + config + body


def _arch(
    id: str,
    family: str,
    config_class: str,
    auto_class: str,
    config: dict,
    tiny: bool,
    title: Text,
    about: Text,
) -> Architecture:
    return Architecture(id, family, config_class, auto_class, config, tiny, title, about)


LLAMA_TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "max_position_embeddings": 128,
    "tie_word_embeddings": True,  # as Llama 3.2 1B and 3B do
}
# Llama 3 8B's published shape.
LLAMA_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
}
GPT2_TINY = {"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 256, "n_positions": 128}
# GPT-2's token ids (50256) must lie inside a tiny vocabulary.
GPT2_TINY |= {"bos_token_id": 0, "eos_token_id": 0}
BERT_TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 256,
    "max_position_embeddings": 128,
}
RESNET_TINY = {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "num_labels": 10}
VIT_TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "image_size": 32,
    "patch_size": 8,
    "num_labels": 10,
}

ARCHITECTURES: dict[str, Architecture] = {
    a.id: a
    for a in (
        _arch(
            "llama_tiny",
            "llama",
            "LlamaConfig",
            "AutoModelForCausalLM",
            LLAMA_TINY,
            True,
            Text("Llama, tiny (2 layers, tied head)"),
            Text(
                "Llama's layout at toy size: its rotary embedding keeps inv_freq as a non-persistent "
                "buffer, which no checkpoint carries, and its output layer is tied to the embedding."
            ),
        ),
        _arch(
            "llama_8b",
            "llama",
            "LlamaConfig",
            "AutoModelForCausalLM",
            LLAMA_8B,
            False,
            Text("Llama 3 8B shape (meta only)"),
            Text(
                "The 8B shape: 32 layers, grouped-query attention, a 128k vocabulary. On the meta "
                "device it is built in well under a second and holds no memory; 8 billion real values "
                "would."
            ),
        ),
        _arch(
            "gpt2_tiny",
            "gpt2",
            "GPT2Config",
            "AutoModelForCausalLM",
            GPT2_TINY,
            True,
            Text("GPT-2, tiny (2 layers)"),
            Text(
                "GPT-2 at toy size: the language-model head is tied to the token embedding, so "
                "named_parameters() lists it once and state_dict() twice."
            ),
        ),
        _arch(
            "gpt2",
            "gpt2",
            "GPT2Config",
            "AutoModelForCausalLM",
            {},
            False,
            Text("GPT-2 (124M, meta only)"),
            Text("GPT-2's default config: 12 layers, 768 wide, a tied head."),
        ),
        _arch(
            "bert_tiny",
            "bert",
            "BertConfig",
            "AutoModelForMaskedLM",
            BERT_TINY,
            True,
            Text("BERT masked LM, tiny (2 layers)"),
            Text(
                "BERT at toy size: position_ids and token_type_ids are non-persistent buffers, and "
                "the prediction decoder shares its weight and bias with other parameters."
            ),
        ),
        _arch(
            "bert_base",
            "bert",
            "BertConfig",
            "AutoModelForMaskedLM",
            {},
            False,
            Text("BERT-base masked LM (meta only)"),
            Text("BERT-base's default config: 12 layers, 768 wide."),
        ),
        _arch(
            "resnet_tiny",
            "resnet",
            "ResNetConfig",
            "AutoModelForImageClassification",
            RESNET_TINY,
            True,
            Text("ResNet, tiny (2 stages)"),
            Text(
                "ResNet at toy size: every BatchNorm carries running_mean, running_var and an int64 "
                "num_batches_tracked as persistent buffers."
            ),
        ),
        _arch(
            "resnet50",
            "resnet",
            "ResNetConfig",
            "AutoModelForImageClassification",
            {"num_labels": 1000},
            False,
            Text("ResNet-50 (meta only)"),
            Text("ResNet-50 with an ImageNet head: 53 BatchNorms, so 159 buffers beside its parameters."),
        ),
        _arch(
            "vit_tiny",
            "vit",
            "ViTConfig",
            "AutoModelForImageClassification",
            VIT_TINY,
            True,
            Text("ViT, tiny (2 layers, 32x32 images)"),
            Text(
                "A vision transformer at toy size: the class token and position embeddings are "
                "parameters registered directly on the embeddings module."
            ),
        ),
        _arch(
            "vit_base",
            "vit",
            "ViTConfig",
            "AutoModelForImageClassification",
            {"num_labels": 1000},
            False,
            Text("ViT-B/16 (meta only)"),
            Text("ViT-Base, 16x16 patches of 224x224 images, an ImageNet head."),
        ),
    )
}

_seeded = Lock()  # building on a real device reseeds torch's global generator


def transformers_module() -> ModuleType:
    """``transformers``, imported on first use (a few seconds, once per process)."""
    try:
        return importlib.import_module("transformers")
    except ImportError as exc:
        text = Text(
            "transformers is not installed here ({error}); pip install {pin}", error=exc, pin=TRANSFORMERS_PIN
        )
        raise ArchitectureError(503, text) from exc


def get(arch_id: str) -> Architecture:
    arch = ARCHITECTURES.get(arch_id)
    if arch is None:
        raise ArchitectureError(
            404,
            Text(
                "unknown architecture {arch_id!r}; known: {names}",
                arch_id=arch_id,
                names=", ".join(ARCHITECTURES),
            ),
        )
    return arch


@cache
def real_bytes(arch_id: str) -> int:
    """Bytes of its weights and buffers with real values, in float32 (read from a meta build)."""
    model = build(arch_id, "meta")
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def _size(n: int) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB"


def devices_for(arch: Architecture, max_bytes: int = MAX_BYTES) -> tuple[str, ...]:
    """Where it can be built here: every device when its real values fit ``max_bytes``
    (MRE_ARCHITECTURE_MAX_BYTES), else meta only."""
    return device_ids() if arch.tiny or real_bytes(arch.id) <= max_bytes else ("meta",)


def check_device(arch: Architecture, device: str, max_bytes: int = MAX_BYTES) -> None:
    allowed = devices_for(arch, max_bytes)
    if device in allowed:
        return
    if device in device_ids():
        raise ArchitectureError(
            422,
            Text(
                "device: {id} is built on meta only here: its weights and buffers take {size} in float32, "
                "over the {budget} of MRE_ARCHITECTURE_MAX_BYTES; its tiny config ({family}_tiny) builds "
                "on {names}",
                id=arch.id,
                size=_size(real_bytes(arch.id)),
                budget=_size(max_bytes),
                family=arch.family,
                names=", ".join(device_ids()),
            ),
        )
    raise ArchitectureError(
        422,
        Text(
            "device: {device!r} is not a device here; devices: {names}",
            device=device,
            names=", ".join(allowed),
        ),
    )


def build(
    arch_id: str,
    device: str = "meta",
    seed: int = 0,
    dtype: torch.dtype | None = None,
    max_bytes: int = MAX_BYTES,
) -> nn.Module:
    """The architecture as ``transformers`` builds it: on meta, or (within ``max_bytes``) on the
    CPU from ``seed`` and then moved to ``device``; cast by ``model.to(dtype)`` when a dtype is
    given. Raises ArchitectureError for an unknown id or device."""
    arch = get(arch_id)
    if device != "meta":  # (a meta build is how real_bytes learns the size)
        check_device(arch, device, max_bytes)
    transformers = transformers_module()
    config = getattr(transformers, arch.config_class)(**arch.config)
    auto = getattr(transformers, arch.auto_class)
    if device == "meta":
        with torch.device("meta"):
            model = auto.from_config(config)
    else:
        with _seeded, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = auto.from_config(config)
        model = model.to(device)
    return model if dtype is None else model.to(dtype)


@dataclass(frozen=True)
class Fit:
    """How one of the lab's experiments treats an architecture, and why."""

    experiment: str
    applies: str  # "all", "tiny" or "no"
    reason: dict[str, str] = field(hash=False)


# What applies where, and why: the full sizes have their own routes (tree, plan, saving, round trip
# within the budget); the tiny configs also open in the lab, where every experiment runs on them.
EXPERIMENT_FIT = (
    Fit(
        "module_tree",
        "all",
        Text("Counts, bytes and devices are read from shapes and dtypes, which meta tensors have."),
    ),
    Fit(
        "memory",
        "all",
        Text(
            "The plan measures activations with a forward on meta, as a GPU runs it, and adds weights, "
            "gradients and AdamW states per precision recipe."
        ),
    ),
    Fit(
        "meta_roundtrip",
        "tiny",
        Text(
            "to_empty() and the proof need the model twice with real values: tiny configs, and full "
            "sizes within MRE_ARCHITECTURE_MAX_BYTES through the API."
        ),
    ),
    Fit(
        "step",
        "tiny",
        Text(
            "Tiny configs open in the lab (/?preset=llama_tiny), where an optimizer step updates their "
            "real values. A full size is planned on meta instead: no values there to update, so the "
            "plan says what gradients and AdamW states cost."
        ),
    ),
    Fit(
        "load_into",
        "tiny",
        Text(
            "In the lab a tiny config's tensors can be restyled (a buffer made persistent, a weight "
            "frozen) and its state_dict loaded into another styling. Loading a real checkpoint is the "
            "checkpoint inspector's."
        ),
    ),
)


@cache
def count_note(arch_id: str) -> Text | None:
    """Why a count differs from the one usually quoted, from the models themselves: BERT's masked-LM
    model is BertModel (the published 109,482,240, pooler included) without the pooler and with the
    masked-LM head, whose output weight is the word embedding (tied, counted once)."""
    arch = get(arch_id)
    if arch.family != "bert":
        return None
    transformers = transformers_module()
    config = transformers.BertConfig(**arch.config)
    with torch.device("meta"):
        base = transformers.BertModel(config)  # add_pooling_layer=True, as the published count
        model = build(arch_id, "meta")

    def count(m: nn.Module, prefix: str = "") -> int:
        return sum(p.numel() for n, p in m.named_parameters() if n.startswith(prefix))

    return Text(
        "{cls} counts {total}: BertModel's {base} (the figure usually quoted, its pooler included) "
        "without the pooler ({pooler}) and with the masked-LM head ({head}: cls.predictions' transform "
        "and output bias; its output weight is the word embedding, tied and counted once).",
        cls=type(model).__name__,
        total=f"{count(model):,}",
        base=f"{count(base):,}",
        pooler=f"{count(base, 'pooler.'):,}",
        head=f"{count(model, 'cls.'):,}",
    )
