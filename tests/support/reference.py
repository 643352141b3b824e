"""The reference: the tutorials' modules written out directly with torch, independent of app.lab.

Every report the app produces is compared with what these modules say.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def attach(module: nn.Module, name: str, tensor: torch.Tensor, style: str) -> None:
    """Attach ``tensor`` the way ``style`` says, with plain torch calls."""
    match style:
        case "parameter":
            setattr(module, name, nn.Parameter(tensor))
        case "register_parameter":
            module.register_parameter(name, nn.Parameter(tensor))
        case "frozen_parameter":
            setattr(module, name, nn.Parameter(tensor, requires_grad=False))
        case "buffer":
            module.register_buffer(name, tensor)
        case "non_persistent_buffer":
            module.register_buffer(name, tensor, persistent=False)
        case "nn_buffer":
            setattr(module, name, nn.Buffer(tensor))
        case "plain_tensor":
            setattr(module, name, tensor)
        case _:
            raise AssertionError(f"no reference for style {style!r}")


def contain(module: nn.Module, name: str, layers: list[nn.Module], style: str) -> None:
    """Hold ``layers`` the way a container style says."""
    match style:
        case "python_list":
            setattr(module, name, layers)
        case "module_list":
            setattr(module, name, nn.ModuleList(layers))
        case "sequential":
            setattr(module, name, nn.Sequential(*layers))
        case _:
            raise AssertionError(f"no reference for container style {style!r}")


def named(model: nn.Module, members: list[str]) -> dict[str, torch.Tensor]:
    """Every tensor by name: a tied one under each of its names (as state_dict() lists it), plain
    tensor members, and the layers of a plain list as ``blocks[0].weight``."""
    found = dict(model.named_parameters(remove_duplicate=False))
    found.update(model.named_buffers(remove_duplicate=False))
    for m in members:
        value = getattr(model, m)
        if isinstance(value, torch.Tensor):
            found.setdefault(m, value)
        elif isinstance(value, list):
            for i, layer in enumerate(value):
                found.update({f"{m}[{i}].{n}": p for n, p in layer.named_parameters()})
    return found


def own(names: Iterable[str], member: str) -> list[str]:
    """The names that belong to a member: itself, or the tensors of the layers it holds."""
    return [n for n in names if n == member or n.startswith((member + ".", member + "["))]


def untracked(model: nn.Module, member: str) -> torch.Tensor:
    """A member's values as one tensor: the tensor itself, or all its layers' tensors flattened."""
    value = getattr(model, member)
    if isinstance(value, torch.Tensor):
        return value
    return torch.cat([p.detach().flatten() for layer in value for p in layer.parameters()])


def member_device(model: nn.Module, member: str) -> str:
    value = getattr(model, member)
    if isinstance(value, torch.Tensor):
        return str(value.device)
    return str(next(p for layer in value for p in layer.parameters()).device)


class MyModule(nn.Module):
    """Seed 1 (register_parameter / register_buffer tutorial)."""

    def __init__(self, styles: dict[str, str]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels=3, out_channels=6, kernel_size=3, stride=1, padding=1, bias=False)
        self.conv2 = nn.Conv2d(in_channels=6, out_channels=9, kernel_size=3, stride=1, padding=1, bias=False)
        attach(self, "weight", torch.ones(10, 10), styles["weight"])
        attach(self, "bias", torch.zeros(10), styles["bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.conv2(x)
        return x * self.weight + self.bias


class TestModel(nn.Module):
    """Seed 2 (parameters vs buffers tutorial), both of its listings merged."""

    def __init__(self, styles: dict[str, str]) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)
        attach(self, "parameter1", torch.randn(3), styles["parameter1"])
        attach(self, "parameter2", torch.randn(3), styles["parameter2"])
        attach(self, "buffer1", torch.randn(3), styles["buffer1"])
        attach(self, "buffer2", torch.randn(3), styles["buffer2"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.buffer1 += 1
        self.buffer2 += 1
        return self.linear(x) + self.parameter1 + self.parameter2 + self.buffer1 + self.buffer2


class NormModel(nn.Module):
    def __init__(self, styles: dict[str, str]) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3, bias=False)
        self.bn = nn.BatchNorm1d(3)
        attach(self, "scale", torch.ones(3), styles["scale"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(x)) * self.scale


def sinusoidal_table(positions: int, dim: int) -> torch.Tensor:
    """The textbook construction, written independently of the preset's one-line expression."""
    table = torch.zeros(positions, dim)
    position = torch.arange(positions, dtype=torch.float32)[:, None]
    div = 10000 ** (torch.arange(0, dim, 2) / dim)
    table[:, 0::2] = torch.sin(position / div)
    table[:, 1::2] = torch.cos(position / div)
    return table


class PositionalEncoding(nn.Module):
    def __init__(self, styles: dict[str, str]) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        attach(self, "pe", sinusoidal_table(8, 4), styles["pe"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x) + self.pe[: x.shape[1]]


class TiedLM(nn.Module):
    def __init__(self, styles: dict[str, str]) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        attach(self, "bias", torch.zeros(10), styles["bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x)) + self.bias


class LayerStack(nn.Module):
    def __init__(self, styles: dict[str, str]) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2)
        contain(self, "blocks", [nn.Linear(4, 4) for _ in range(2)], styles["blocks"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = torch.relu(block(x))
        return self.head(x)


class CustomModule(nn.Module):
    def __init__(self, styles: dict[str, str], shapes: dict[str, list[int]] | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)
        for name, style in styles.items():
            attach(self, name, torch.randn(*(shapes or {}).get(name, [3])), style)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


REFERENCES: dict[str, type[nn.Module]] = {
    "mymodule": MyModule,
    "testmodel": TestModel,
    "batchnorm": NormModel,
    "positional_encoding": PositionalEncoding,
    "tied_weights": TiedLM,
    "layer_list": LayerStack,
    "custom": CustomModule,
}
INPUTS = {
    "mymodule": lambda: torch.randn(1, 3, 10, 10),
    "testmodel": lambda: torch.randn(2, 3),
    "batchnorm": lambda: torch.randn(8, 4),
    "positional_encoding": lambda: torch.randint(0, 10, (2, 8)),
    "tied_weights": lambda: torch.randint(0, 10, (2, 5)),
    "layer_list": lambda: torch.randn(2, 4),
    "custom": lambda: torch.randn(2, 3),
}
TUTORIAL_DEFAULTS = {
    "mymodule": {"weight": "register_parameter", "bias": "register_parameter"},
    "testmodel": {
        "parameter1": "parameter",
        "parameter2": "register_parameter",
        "buffer1": "plain_tensor",
        "buffer2": "buffer",
    },
    "batchnorm": {"scale": "parameter"},
    "positional_encoding": {"pe": "buffer"},
    "tied_weights": {"bias": "parameter"},
    "layer_list": {"blocks": "python_list"},
    "custom": {},
}


def reference(
    preset: str, styles: dict[str, str], shapes: dict[str, list[int]] | None = None, into: bool = False
) -> nn.Module:
    """The reference module; ``into`` names it like the module a state_dict is loaded into."""
    torch.manual_seed(0)
    cls = REFERENCES[preset]
    if into:
        cls = type(cls.__name__ + "Into", (cls,), {})
    return cls(styles, shapes) if preset == "custom" else cls(styles)


def loss(out: torch.Tensor) -> torch.Tensor:
    """The step's loss: out weighted by a ramp. out.sum() would give every tensor before a train-mode
    BatchNorm (and its weight) a gradient of exactly zero, leaving only rounding noise to compare."""
    return (out * torch.linspace(0, 1, out.numel(), device=out.device).view(out.shape)).sum()


def _row(t: torch.Tensor) -> dict:
    return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "device": str(t.device)}


def sample(preset: str, device: str) -> torch.Tensor:
    torch.manual_seed(1)
    return INPUTS[preset]().to(device)


def _persistent(model: nn.Module, qualified: str) -> bool:
    # Read from the owning module's registry, a different route than the app's state_dict check.
    owner, _, leaf = qualified.rpartition(".")
    return leaf not in model.get_submodule(owner)._non_persistent_buffers_set


def tables(
    preset: str, styles: dict[str, str], device: str, shapes: dict[str, list[int]] | None = None
) -> dict:
    """What torch says about the reference module moved to ``device``: the report's tables."""
    model = reference(preset, styles, shapes)
    before = {name: member_device(model, name) for name in styles}
    model.to(device)
    return {
        "named_parameters": [
            {"name": n, "requires_grad": p.requires_grad, **_row(p)} for n, p in model.named_parameters()
        ],
        "named_buffers": [
            {"name": n, "persistent": _persistent(model, n), **_row(b)} for n, b in model.named_buffers()
        ],
        "state_dict": [{"name": n, **_row(t)} for n, t in model.state_dict().items()],
        "devices_before": before,
        "devices_after": {name: member_device(model, name) for name in styles},
        # A member's own tensor's shape; a container of layers has none.
        "shapes": {
            name: list(value.shape) if isinstance(value := getattr(model, name), torch.Tensor) else None
            for name in styles
        },
    }
