"""Architectures as transformers builds them, written out in the tests rather than through build()."""

from __future__ import annotations

import torch
import transformers
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from app.architectures.catalogue import ARCHITECTURES
from app.architectures.module_tree import ModuleTree


def direct(arch_id: str, device: str = "meta") -> nn.Module:
    """The model as transformers builds it, written out here rather than through build()."""
    arch = ARCHITECTURES[arch_id]
    config = getattr(transformers, arch.config_class)(**arch.config)
    auto = getattr(transformers, arch.auto_class)
    if device == "meta":
        with torch.device("meta"):
            return auto.from_config(config)
    torch.manual_seed(0)
    return auto.from_config(config).to(device)


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def check_against_torch(report: ModuleTree, model: nn.Module) -> None:
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    state = model.state_dict()
    totals = report.totals
    assert totals.parameters == sum(p.numel() for p in model.parameters())
    assert totals.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert totals.buffers == sum(b.numel() for b in model.buffers())
    assert totals.state_dict_entries == len(state)
    assert totals.state_dict_bytes == sum(nbytes(t) for t in state.values())
    assert totals.unique_bytes == sum(nbytes(t) for t in [*params.values(), *buffers.values()])
    # Tied: every state_dict name that is the same Parameter object as an earlier one.
    everyone = dict(model.named_parameters(remove_duplicate=False))
    tied = {}
    for name, p in everyone.items():
        first = next(n for n, q in everyone.items() if q is p)
        if first != name:
            tied.setdefault(first, []).append(name)
    assert {g[0]: g[1:] for g in totals.tied_groups} == tied
    for row in report.named_parameters:
        p = model.get_parameter(row.name)
        assert (row.shape, row.dtype, row.device) == (list(p.shape), str(p.dtype)[6:], str(p.device))
        assert (row.numel, row.bytes, row.requires_grad) == (p.numel(), nbytes(p), p.requires_grad)
        assert row.tied_names == tied.get(row.name, [])
    assert [r.name for r in report.named_parameters] == list(params)
    for row in report.named_buffers:
        owner, _, leaf = row.name.rpartition(".")
        module = model.get_submodule(owner)
        b = model.get_buffer(row.name)
        assert row.persistent == (leaf not in module._non_persistent_buffers_set)
        assert (row.shape, row.dtype, row.device, row.bytes) == (
            list(b.shape),
            str(b.dtype)[6:],
            str(b.device),
            nbytes(b),
        )
    assert [r.name for r in report.named_buffers] == list(buffers)
    assert [(r.name, r.bytes) for r in report.state_dict] == [(n, nbytes(t)) for n, t in state.items()]

    # Every submodule's subtree, each tensor at the first name torch gives it.
    def walk(node):
        yield node
        for child in node.children:
            yield from walk(child)

    nodes = list(walk(report.root))
    assert [n.path for n in nodes] == [n for n, _ in model.named_modules()]
    for node in nodes:
        prefix = node.path + "." if node.path else ""
        mine_p = [p for n, p in params.items() if n.startswith(prefix)]
        mine_b = {n: b for n, b in buffers.items() if n.startswith(prefix)}
        module = model.get_submodule(node.path)
        assert node.class_name == type(module).__name__
        assert node.total.trainable == sum(p.numel() for p in mine_p if p.requires_grad)
        assert node.total.parameter_bytes == sum(nbytes(p) for p in mine_p)
        assert node.total.buffer_bytes == sum(nbytes(b) for b in mine_b.values())
        assert node.total.non_persistent == sum(b.numel() for n, b in mine_b.items() if n not in state)
        assert node.total.persistent == sum(b.numel() for n, b in mine_b.items() if n in state)
        assert (node.total.parameters, node.total.buffers) == (len(mine_p), len(mine_b))
        assert node.total.persistent_buffers == sum(1 for n in mine_b if n in state)
        assert node.total.non_persistent_buffers == sum(1 for n in mine_b if n not in state)
        assert node.total.frozen == sum(p.numel() for p in mine_p if not p.requires_grad)
        assert sorted(node.total.devices) == sorted({str(t.device) for t in [*mine_p, *mine_b.values()]})
        own = [n for n, _ in module.named_parameters(recurse=False)] + [
            n for n, _ in module.named_buffers(recurse=False)
        ]
        assert sorted(t.rpartition(".")[2] for t in [*node.tensors, *node.tied]) == sorted(own)
        for name, first in node.tied.items():
            assert model.get_parameter(name) is model.get_parameter(first) and name in tied[first]
        dtypes: dict[str, int] = {}
        for t in [*mine_p, *mine_b.values()]:
            dtypes[str(t.dtype)[6:]] = dtypes.get(str(t.dtype)[6:], 0) + nbytes(t)
        assert node.total.bytes_by_dtype == dtypes


TINY = [a for a, arch in ARCHITECTURES.items() if arch.tiny]
# Tiny configs whose attention has no dropout: torch's CPU kernel choice is then its fused one.
FUSED_ON_CPU = ["llama_tiny", "vit_tiny", "resnet_tiny"]

# torch 2.13's CPU autocast policy (aten/src/ATen/autocast_mode.cpp): lower precision for these, a
# few promoted, every other op it registers for AutocastCPU in float32. A test checks it names
# exactly the ops torch registers, so the emulation can be checked against real CPU autocast.
_CPU_LOWER = [
    "conv1d",
    "conv1d.padding",
    "conv2d",
    "conv2d.padding",
    "conv3d",
    "conv3d.padding",
    "bmm",
    "mm",
    "linalg_vecdot",
    "baddbmm",
    "addmm",
    "addbmm",
    "linear",
    "_convolution.deprecated",
    "matmul",
    "conv_tbc",
    "mkldnn_rnn_layer",
    "conv_transpose1d",
    "conv_transpose2d.input",
    "conv_transpose3d.input",
    "prelu",
    "scaled_dot_product_attention",
    "_native_multi_head_attention",
    "_addmm_activation",
]
_CPU_PROMOTE = ("stack", "cat", "index_copy")


def cpu_policy() -> dict[str, str]:
    from app.architectures.emulation import FP32, LOWER, PROMOTE

    ops = {
        r.removeprefix("aten::") for r in torch._C._dispatch_get_registrations_for_dispatch_key("AutocastCPU")
    }
    policy = dict.fromkeys(ops, FP32)
    policy |= dict.fromkeys(_CPU_LOWER, LOWER) | dict.fromkeys(_CPU_PROMOTE, PROMOTE)
    return policy


def tiny_inputs(arch_id: str, device: str, batch: int = 2, tokens: int = 16) -> dict[str, torch.Tensor]:
    """A training batch for a tiny config, written out here: token ids and labels, or pixels."""
    family = ARCHITECTURES[arch_id].family
    if family in ("vit", "resnet"):
        torch.manual_seed(1)
        pixels = torch.randn(batch, 3, 32, 32).to(device)
        return {"pixel_values": pixels, "labels": torch.zeros(batch, dtype=torch.long, device=device)}
    torch.manual_seed(1)
    ids = torch.randint(0, 256, (batch, tokens)).to(device)
    return {"input_ids": ids, "labels": ids}


def saved_and_outputs(model: nn.Module, inputs: dict, context: object) -> tuple[int, int]:
    """Bytes autograd saves in one forward of ``model`` on real tensors, counted here by storage
    address (each storage once, the model's own left out), and the bytes of what it returns beside
    them (loss, logits, and the KV cache a causal LM returns)."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}
    held = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        held.append(t)
        if t.untyped_storage().data_ptr() not in own:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), context:
        out = model(**inputs)
    returned = [out.loss, out.logits]
    cache = out.get("past_key_values")  # what a causal LM returns by default, in training too
    if cache is not None:
        returned += [t for layer in cache.layers for t in (layer.keys, layer.values)]
    rest = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
        for t in returned
        if t.untyped_storage().data_ptr() not in saved
    }
    return sum(saved.values()), sum(rest.values())


class CudaStatistics(TorchDispatchMode):
    """torch's CPU layer and batch norms keep a bf16 input's mean and inverse deviation in bf16;
    their CUDA kernels (and the meta ones) keep them in float32. On real CPU tensors, this makes
    them float32, so a CPU count is the GPU's."""

    OPS = (torch.ops.aten.native_layer_norm.default, torch.ops.aten.native_batch_norm.default)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.OPS:
            return (out[0], *(t.float() for t in out[1:]))
        return out


# A small Llama as a config.json would have it (model_type, architectures and all).
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "max_position_embeddings": 128,
}

# A smaller one, pasted to open in the lab: its head tied to the embedding, its rotary inv_freq a
# non-persistent buffer.
PASTED_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
    "max_position_embeddings": 64,
    "tie_word_embeddings": True,
}


def pasted_direct(device: str = "cpu") -> nn.Module:
    """PASTED_CONFIG's model as transformers builds it, written out here."""
    kwargs = {k: v for k, v in PASTED_CONFIG.items() if k not in ("model_type", "architectures")}
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**kwargs)).to(device)
