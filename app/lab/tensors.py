"""Every tensor a module holds, the way the explorer lists them. The experiments observe through
this function, and the scripts they generate carry its very source, so both list the same tensors."""

from __future__ import annotations

import torch
from torch import nn


def tensors(model: nn.Module) -> dict[str, tuple[str, torch.Tensor]]:
    """Every tensor reachable in the module, by qualified name, with its kind."""
    found: dict[str, tuple[str, torch.Tensor]] = {}
    for prefix, module in model.named_modules():
        dot = prefix + "." if prefix else ""
        for name, p in module._parameters.items():
            if p is not None:
                found.setdefault(dot + name, ("parameter", p))
        for name, b in module._buffers.items():
            if b is not None:
                found.setdefault(dot + name, ("buffer", b))
        for name, value in vars(module).items():
            if isinstance(value, torch.Tensor):
                found.setdefault(dot + name, ("tensor", value))
    return found
