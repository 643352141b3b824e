"""Architectures as transformers builds them, written out in the tests rather than through build()."""

from __future__ import annotations

import torch
import transformers
from torch import nn

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
