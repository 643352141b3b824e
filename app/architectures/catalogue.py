"""Real architectures, built by ``transformers`` from configs written here (no weights, no downloads).

``build(arch_id, device)`` is the one way in: on the meta device by default (an 8B Llama takes a
fraction of a second and no memory there); a tiny config can also be built on the CPU with real,
seeded values and moved to any device of this server. ``transformers`` is imported on the first
build, never at import time, so a server that never shows an architecture never pays for it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from threading import Lock
from types import ModuleType

import torch
from torch import nn

from app.lab.devices import device_ids
from app.langs import EN, ZH

TRANSFORMERS_PIN = "transformers==5.23.0"  # as pinned in pyproject.toml; named in the refusal below
OFF = "architectures are turned off on this server (MRE_ARCHITECTURES=false)"


class ArchitectureError(Exception):
    """A request no architecture can answer: ``status`` is the HTTP status a face gives it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Architecture:
    id: str
    family: str
    config_class: str  # a transformers config class, e.g. "LlamaConfig"
    auto_class: str  # the Auto class whose from_config builds it, e.g. "AutoModelForCausalLM"
    config: dict = field(hash=False)  # the config's keyword arguments, written in code
    tiny: bool  # small enough to build on a real device with real values
    title: dict[str, str] = field(hash=False)
    description: dict[str, str] = field(hash=False)
    source: str = ""

    def code(self, device: str = "meta") -> str:
        """A script that builds the same model with transformers alone."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        head = f"import torch\nfrom transformers import {self.auto_class}, {self.config_class}\n\n"
        config = f"config = {self.config_class}({args})\n"
        if device == "meta":
            body = f'with torch.device("meta"):\n    model = {self.auto_class}.from_config(config)\n'
        else:
            body = f"torch.manual_seed(0)\nmodel = {self.auto_class}.from_config(config).to({device!r})\n"
        return head + config + body


def _arch(
    id: str, family: str, config_class: str, auto_class: str, config: dict, tiny: bool, en: tuple, zh: tuple
) -> Architecture:
    return Architecture(
        id, family, config_class, auto_class, config, tiny, {EN: en[0], ZH: zh[0]}, {EN: en[1], ZH: zh[1]}
    )


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
            (
                "Llama, tiny (2 layers, tied head)",
                "Llama's layout at toy size: its rotary embedding keeps inv_freq as a non-persistent "
                "buffer, which no checkpoint carries, and its output layer is tied to the embedding.",
            ),
            (
                "Llama，微型（2 层，输出层共享权重）",
                "玩具尺寸的 Llama 结构：旋转位置编码把 inv_freq 存为非持久缓冲区，任何检查点都不包含它；"
                "输出层与词嵌入共享权重。",
            ),
        ),
        _arch(
            "llama_8b",
            "llama",
            "LlamaConfig",
            "AutoModelForCausalLM",
            LLAMA_8B,
            False,
            (
                "Llama 3 8B shape (meta only)",
                "The 8B shape: 32 layers, grouped-query attention, a 128k vocabulary. On the meta device "
                "it is built in well under a second and holds no memory; 8 billion real values would.",
            ),
            (
                "Llama 3 8B 结构（仅 meta）",
                "8B 的结构：32 层、分组查询注意力、12.8 万词表。在 meta 设备上不到一秒即可构建，"
                "且不占内存；80 亿个真实数值则要占。",
            ),
        ),
        _arch(
            "gpt2_tiny",
            "gpt2",
            "GPT2Config",
            "AutoModelForCausalLM",
            GPT2_TINY,
            True,
            (
                "GPT-2, tiny (2 layers)",
                "GPT-2 at toy size: the language-model head is tied to the token embedding, so "
                "named_parameters() lists it once and state_dict() twice.",
            ),
            (
                "GPT-2，微型（2 层）",
                "玩具尺寸的 GPT-2：语言模型输出层与词嵌入共享权重，"
                "所以 named_parameters() 只列一次，state_dict() 列两次。",
            ),
        ),
        _arch(
            "gpt2",
            "gpt2",
            "GPT2Config",
            "AutoModelForCausalLM",
            {},
            False,
            ("GPT-2 (124M, meta only)", "GPT-2's default config: 12 layers, 768 wide, a tied head."),
            ("GPT-2（124M，仅 meta）", "GPT-2 的默认配置：12 层，宽 768，输出层共享权重。"),
        ),
        _arch(
            "bert_tiny",
            "bert",
            "BertConfig",
            "AutoModelForMaskedLM",
            BERT_TINY,
            True,
            (
                "BERT masked LM, tiny (2 layers)",
                "BERT at toy size: position_ids and token_type_ids are non-persistent buffers, and the "
                "prediction decoder shares its weight and bias with other parameters.",
            ),
            (
                "BERT 掩码语言模型，微型（2 层）",
                "玩具尺寸的 BERT：position_ids 和 token_type_ids 是非持久缓冲区，"
                "预测解码器的权重和偏置与其他参数共享。",
            ),
        ),
        _arch(
            "bert_base",
            "bert",
            "BertConfig",
            "AutoModelForMaskedLM",
            {},
            False,
            ("BERT-base masked LM (meta only)", "BERT-base's default config: 12 layers, 768 wide."),
            ("BERT-base 掩码语言模型（仅 meta）", "BERT-base 的默认配置：12 层，宽 768。"),
        ),
        _arch(
            "resnet_tiny",
            "resnet",
            "ResNetConfig",
            "AutoModelForImageClassification",
            RESNET_TINY,
            True,
            (
                "ResNet, tiny (2 stages)",
                "ResNet at toy size: every BatchNorm carries running_mean, running_var and an int64 "
                "num_batches_tracked as persistent buffers.",
            ),
            (
                "ResNet，微型（2 个阶段）",
                "玩具尺寸的 ResNet：每个 BatchNorm 都带有持久缓冲区 running_mean、running_var "
                "和 int64 的 num_batches_tracked。",
            ),
        ),
        _arch(
            "resnet50",
            "resnet",
            "ResNetConfig",
            "AutoModelForImageClassification",
            {"num_labels": 1000},
            False,
            (
                "ResNet-50 (meta only)",
                "ResNet-50 with an ImageNet head: 53 BatchNorms, so 159 buffers beside its parameters.",
            ),
            (
                "ResNet-50（仅 meta）",
                "带 ImageNet 分类头的 ResNet-50：53 个 BatchNorm，所以参数之外还有 159 个缓冲区。",
            ),
        ),
        _arch(
            "vit_tiny",
            "vit",
            "ViTConfig",
            "AutoModelForImageClassification",
            VIT_TINY,
            True,
            (
                "ViT, tiny (2 layers, 32x32 images)",
                "A vision transformer at toy size: the class token and position embeddings are "
                "parameters registered directly on the embeddings module.",
            ),
            (
                "ViT，微型（2 层，32x32 图像）",
                "玩具尺寸的视觉 Transformer：类别标记和位置嵌入是直接注册在嵌入模块上的参数。",
            ),
        ),
        _arch(
            "vit_base",
            "vit",
            "ViTConfig",
            "AutoModelForImageClassification",
            {"num_labels": 1000},
            False,
            ("ViT-B/16 (meta only)", "ViT-Base, 16x16 patches of 224x224 images, an ImageNet head."),
            ("ViT-B/16（仅 meta）", "ViT-Base，224x224 图像切成 16x16 的块，ImageNet 分类头。"),
        ),
    )
}

_seeded = Lock()  # building on a real device reseeds torch's global generator


def transformers_module() -> ModuleType:
    """``transformers``, imported on first use (a few seconds, once per process)."""
    try:
        return importlib.import_module("transformers")
    except ImportError as exc:
        message = f"transformers is not installed here ({exc}); pip install {TRANSFORMERS_PIN}"
        raise ArchitectureError(503, message) from exc


def get(arch_id: str) -> Architecture:
    arch = ARCHITECTURES.get(arch_id)
    if arch is None:
        raise ArchitectureError(404, f"unknown architecture {arch_id!r}; known: {', '.join(ARCHITECTURES)}")
    return arch


def devices_for(arch: Architecture) -> tuple[str, ...]:
    """Where it can be built here: a full-size shape only on meta, a tiny one anywhere."""
    return device_ids() if arch.tiny else ("meta",)


def check_device(arch: Architecture, device: str) -> None:
    allowed = devices_for(arch)
    if device in allowed:
        return
    if device in device_ids():
        raise ArchitectureError(
            422,
            f"device: {arch.id} is built on meta only (real values would take gigabytes); "
            f"its tiny config ({arch.family}_tiny) builds on {', '.join(device_ids())}",
        )
    raise ArchitectureError(422, f"device: {device!r} is not a device here; devices: {', '.join(allowed)}")


def build(arch_id: str, device: str = "meta", seed: int = 0, dtype: torch.dtype | None = None) -> nn.Module:
    """The architecture as ``transformers`` builds it: on meta, or (tiny configs) on the CPU from
    ``seed`` and then moved to ``device``; cast by ``model.to(dtype)`` when a dtype is given.
    Raises ArchitectureError for an unknown id or device."""
    arch = get(arch_id)
    check_device(arch, device)
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


# The lab's experiments vary member styles of a toy preset; an architecture has no member styles,
# so what applies to it runs on its own routes, and this says which and why.
EXPERIMENT_FIT = (
    Fit(
        "module_tree",
        "all",
        {
            EN: "Counts, bytes and devices are read from shapes and dtypes, which meta tensors have.",
            ZH: "数量、字节数和设备都从形状和 dtype 读出，meta 张量也有这些信息。",
        },
    ),
    Fit(
        "memory",
        "all",
        {
            EN: "The estimate is arithmetic on element counts and dtype sizes, read from the live model.",
            ZH: "估算只是对元素数和 dtype 大小做算术，数据从实时模型读出。",
        },
    ),
    Fit(
        "meta_roundtrip",
        "tiny",
        {
            EN: "to_empty() needs real memory and the proof a model built on the CPU: tiny configs only.",
            ZH: "to_empty() 需要真实内存，证明还需要一个在 CPU 上构建的模型：仅限微型配置。",
        },
    ),
    Fit(
        "step",
        "no",
        {
            EN: "No optimizer step on meta: there are no values to update. The memory estimate gives what "
            "gradients and AdamW states would cost instead.",
            ZH: "meta 上没有优化器步骤：没有可更新的数值。内存估算给出梯度和 AdamW 状态的开销。",
        },
    ),
    Fit(
        "load_into",
        "no",
        {
            EN: "It loads a state_dict into the same preset with other member styles; an architecture's "
            "registrations are fixed by its code. Loading a real checkpoint is the checkpoint inspector's.",
            ZH: "它把 state_dict 加载到换了成员注册方式的同一预设中；架构的注册方式由其代码固定。"
            "加载真实检查点属于检查点检查器。",
        },
    ),
)
