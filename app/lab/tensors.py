"""Every tensor a module holds, the way the explorer lists them. The experiments observe through
this function, and the scripts they generate carry its very source, so both list the same tensors."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

ATTRIBUTE = " (attribute)"  # marks a plain attribute named like one of torch's own tensors


def tensors(model: nn.Module) -> dict[str, tuple[str, torch.Tensor]]:
    """Every tensor reachable in the module, by qualified name, with its kind.

    "tensor" is the kind torch does not track: a plain attribute, or a layer's tensor held in a
    plain Python list (named ``blocks[0].weight``: torch has no name for it). Torch's own tensors
    come first; a plain attribute whose name is already one of theirs (``setattr(model,
    "linear.weight", t)`` beside the layer's weight) is listed as ``linear.weight (attribute)``.
    """
    found: dict[str, tuple[str, torch.Tensor]] = {}
    modules = list(model.named_modules())
    for prefix, module in modules:
        dot = prefix + "." if prefix else ""
        for name, p in module._parameters.items():
            if p is not None:
                found.setdefault(dot + name, ("parameter", p))
        for name, b in module._buffers.items():
            if b is not None:
                found.setdefault(dot + name, ("buffer", b))
    for prefix, module in modules:
        dot = prefix + "." if prefix else ""
        for name, value in vars(module).items():
            if isinstance(value, torch.Tensor):
                key = dot + name
                found.setdefault(key if key not in found else key + ATTRIBUTE, ("tensor", value))
            elif isinstance(value, list):  # layers in a plain list: named_modules() never gets there
                for i, item in enumerate(value):
                    if isinstance(item, nn.Module):
                        for sub, (_, t) in tensors(item).items():
                            found.setdefault(f"{dot}{name}[{i}].{sub}", ("tensor", t))
    return found


def member_tensors(names: Iterable[str], member: str, container: bool) -> list[str]:
    """The names among ``names`` that belong to a member: itself, or a container's layers' tensors."""
    if not container:  # exact: a custom member "a" must not claim a member named "a.b"
        names = list(names)
        if member + ATTRIBUTE in names:  # the member is the attribute, not the layer's tensor
            return [member + ATTRIBUTE]
        return [n for n in names if n == member]
    return [n for n in names if n.startswith((member + ".", member + "["))]


def member_device(held: dict[str, tuple[str, torch.Tensor]], member: str, container: bool) -> str:
    """Where a member is (``held`` from ``tensors``): its tensor's device, a container's first
    tensor's; "none" if it has none (torch refused it)."""
    found = member_tensors(held, member, container)
    return str(held[found[0]][1].device) if found else "none"
