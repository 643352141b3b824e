"""Every tensor a module holds, as the explorer lists it, against what torch itself tracks."""

from __future__ import annotations

import torch
from torch import nn

from app.lab.tensors import ATTRIBUTE, member_device, member_tensors, tensors


class Held(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.p = nn.Parameter(torch.zeros(1))
        self.register_buffer("b", torch.zeros(1))
        self.register_buffer("nb", torch.zeros(1), persistent=False)
        self.plain = torch.zeros(1)
        self.listed = [nn.Linear(1, 1)]
        self.tracked = nn.ModuleList([nn.Linear(1, 1)])
        setattr(self, "linear.weight", torch.ones(1))  # an attribute named like the layer's weight


def test_every_tensor_with_its_kind_torchs_first() -> None:
    model = Held()
    found = tensors(model)
    tracked = [*dict(model.named_parameters()), *dict(model.named_buffers())]
    assert all(found[n][0] in ("parameter", "buffer") for n in tracked)
    assert {n for n, (kind, _) in found.items() if kind == "parameter"} == set(dict(model.named_parameters()))
    assert {n for n, (kind, _) in found.items() if kind == "buffer"} == set(dict(model.named_buffers()))
    untracked = {n for n, (kind, _) in found.items() if kind == "tensor"}
    assert untracked == {"plain", "listed[0].weight", "listed[0].bias", "linear.weight" + ATTRIBUTE}
    assert found["plain"][1] is model.plain and found["linear.weight"][1] is model.linear.weight


def test_a_member_is_its_own_name_or_its_containers_layers() -> None:
    names = tensors(Held())
    assert member_tensors(names, "p", False) == ["p"]
    assert member_tensors(names, "linear.weight", False) == ["linear.weight" + ATTRIBUTE]
    assert member_tensors(names, "listed", True) == ["listed[0].weight", "listed[0].bias"]
    assert member_tensors(names, "tracked", True) == ["tracked.0.weight", "tracked.0.bias"]
    assert member_tensors(names, "nobody", False) == []


def test_a_members_device_is_its_tensors_and_none_when_torch_refused_it() -> None:
    model = Held().to("meta")
    held = tensors(model)
    assert member_device(held, "p", False) == "meta"
    assert member_device(held, "plain", False) == "cpu"  # .to() leaves a plain tensor behind
    assert member_device(held, "listed", True) == "cpu"  # and a plain list's layers
    assert member_device(held, "tracked", True) == "meta"
    assert member_device(held, "nobody", False) == "none"
