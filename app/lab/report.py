"""Build, move, read: a resolved LabSpec becomes a LabReport, every fact read from a live module."""

from __future__ import annotations

from functools import cache, lru_cache
from types import CodeType

import torch
from pydantic import BaseModel, Field
from torch import nn

from app.lab import codegen
from app.lab.presets import lookup
from app.lab.spec import LabSpec, members
from app.lab.styles import ALL_STYLES, attaching
from app.lab.tensors import member_device, member_tensors, tensors

_NAMESPACE = {"torch": torch, "nn": nn}


class ParameterRow(BaseModel):
    name: str
    shape: list[int] = Field(examples=[[3, 3]])
    dtype: str = Field(examples=["float32"])
    device: str = Field(examples=["cpu"])
    requires_grad: bool


class BufferRow(BaseModel):
    name: str
    shape: list[int]
    dtype: str
    device: str
    persistent: bool = Field(description="True when the buffer is saved in state_dict().")


class StateRow(BaseModel):
    name: str
    shape: list[int]
    dtype: str
    device: str


class MemberRow(BaseModel):
    name: str
    style: str
    in_parameters: bool
    in_buffers: bool
    in_state_dict: bool
    device_before: str = Field(description="Device of the member right after construction (always cpu).")
    device_after: str = Field(description="Device of the member after model.to(device).")
    shape: list[int] | None = Field(
        None, description="Shape of the member's tensor; null for a container of layers or a refused member."
    )
    refused: str | None = Field(
        None,
        description="Torch's refusal to attach it (custom names), type: message; also torch's error when "
        "it takes the name but the module then fails its own calls (self.to = t), so it is left out.",
    )


class ParameterCount(BaseModel):
    unique: int = Field(description="Elements in model.parameters(): a shared (tied) tensor counts once.")
    with_duplicates: int = Field(description="Elements over named_parameters(remove_duplicate=False).")
    state_dict: int = Field(
        description="Elements over state_dict() entries, where a tied tensor appears twice."
    )


class LabReport(BaseModel):
    spec: LabSpec
    named_parameters: list[ParameterRow]
    named_buffers: list[BufferRow]
    state_dict: list[StateRow]
    members: list[MemberRow]
    parameter_count: ParameterCount
    code: str = Field(description="A self-contained Python script that reproduces this report.")
    torch_version: str = Field(description="The torch that produced this report.")


# Bounded: a custom member's shape is part of its expression (torch.randn(2, 3)), so the keys come
# from requests; the presets' own few dozen expressions stay in it.
@lru_cache(maxsize=1024)
def _compiled(expr: str, mode: str = "eval") -> CodeType:
    return compile(expr, f"<preset {expr[:40]}>", mode)


def _evaluate(expr: str, model: nn.Module) -> object:
    # Our own preset text, never user input; ``self`` lets a layer refer to another (tied weights).
    return eval(_compiled(expr), {**_NAMESPACE, "self": model})


@cache
def module_class(preset_id: str) -> type[nn.Module]:
    """An nn.Module subclass named like the preset's class, with the preset's forward."""
    preset = lookup(preset_id)
    namespace = dict(_NAMESPACE)
    exec(_compiled(codegen.forward_source(preset), "exec"), namespace)
    return type(preset.class_name, (nn.Module,), {"forward": namespace["forward"]})


@cache
def _renamed(preset_id: str, class_name: str) -> type[nn.Module]:
    return type(class_name, (module_class(preset_id),), {})


def build(spec: LabSpec, class_name: str = "", refusals: dict[str, str] | None = None) -> nn.Module:
    """The module of a resolved spec, on the CPU, seeded: layers first, then members in order.

    ``class_name`` names a second module of the same preset apart (torch's messages quote it).
    A member torch refuses is left out and, when ``refusals`` is given, noted there.
    """
    preset = lookup(spec.preset)
    if preset.make is not None:
        return _built(spec, refusals)
    cls = _renamed(preset.id, class_name) if class_name else module_class(preset.id)
    with torch.random.fork_rng(devices=[]):
        # The CPU generator only: torch.manual_seed would also queue a lazy CUDA seeding with a
        # captured stack trace on every build, a third of the cost of a cold report.
        torch.default_generator.manual_seed(codegen.SEED)  # the seed the script sets: same values
        model = cls()
        for layer in preset.layers:
            owner, _, attr = layer.name.rpartition(".")  # "head.weight" assigns inside self.head
            setattr(model.get_submodule(owner), attr, _evaluate(layer.expr, model))
        refused: dict[str, Exception] = {}
        for member in members(spec):
            attach = ALL_STYLES[spec.styles[member.name]].attach
            if not preset.custom:  # the preset's own names: torch takes them
                attach(model, member.name, _evaluate(member.init, model))
                continue
            # A name torch refuses ("a.b", "", "training"), or takes and then fails with ("to",
            # "_parameters"): left out, and part of the result. The script does the very same.
            with attaching(model, member.name, refused):
                attach(model, member.name, _evaluate(member.init, model))
    if refused and refusals is None:
        raise next(iter(refused.values()))
    if refusals is not None:
        refusals.update({name: f"{type(exc).__name__}: {exc}" for name, exc in refused.items()})
    return model


def _built(spec: LabSpec, refusals: dict[str, str] | None) -> nn.Module:
    """A real model (a preset's ``make``), seeded, each member whose style is not its default
    restyled in place: taken off its module and attached again, with the same values."""
    preset = lookup(spec.preset)
    assert preset.make is not None
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(codegen.SEED)
        model = preset.make()
    assert isinstance(model, nn.Module)
    refused: dict[str, Exception] = {}
    for member in members(spec):
        style = spec.styles[member.name]
        if style == member.default_style:
            continue
        path, _, leaf = member.name.rpartition(".")
        owner = model.get_submodule(path)
        tensor = getattr(owner, leaf).detach()
        with attaching(owner, member.name, refused):
            delattr(owner, leaf)
            ALL_STYLES[style].attach(owner, leaf, tensor)
    if refused and refusals is None:
        raise next(iter(refused.values()))
    if refusals is not None:
        refusals.update({name: f"{type(exc).__name__}: {exc}" for name, exc in refused.items()})
    return model


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _where(t: torch.Tensor) -> dict:
    return {"shape": list(t.shape), "dtype": dtype_name(t.dtype), "device": str(t.device)}


def inspect(spec: LabSpec) -> LabReport:
    """Build the module, note each member's device, move it, and read every table back."""
    refusals: dict[str, str] = {}
    model = build(spec, refusals=refusals)
    container = {name: ALL_STYLES[style].kind == "container" for name, style in spec.styles.items()}
    held = tensors(model)

    def where(name: str) -> str:  # a member torch refused is nowhere, whatever else has its name
        return "none" if name in refusals else member_device(held, name, container[name])

    before = {name: where(name) for name in spec.styles}
    model.to(spec.device)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    state = model.state_dict(keep_vars=True)
    held = tensors(model)
    own = {
        name: [] if name in refusals else member_tensors(held, name, container[name]) for name in spec.styles
    }
    return LabReport(
        spec=spec,
        named_parameters=[
            ParameterRow(name=n, requires_grad=p.requires_grad, **_where(p)) for n, p in params.items()
        ],
        named_buffers=[BufferRow(name=n, persistent=n in state, **_where(b)) for n, b in buffers.items()],
        state_dict=[StateRow(name=n, **_where(t)) for n, t in state.items()],
        members=[
            MemberRow(
                name=name,
                style=style,
                # Torch's tables by object: a member named like a layer's tensor ("linear.weight")
                # must not take the layer's place in them; a refused member is in none.
                in_parameters=any(n in params and params[n] is held[n][1] for n in own[name]),
                in_buffers=any(n in buffers and buffers[n] is held[n][1] for n in own[name]),
                in_state_dict=any(n in state and state[n] is held[n][1] for n in own[name]),
                device_before=before[name],
                device_after=where(name),
                shape=list(held[own[name][0]][1].shape) if own[name] and not container[name] else None,
                refused=refusals.get(name),
            )
            for name, style in spec.styles.items()
        ],
        parameter_count=ParameterCount(
            unique=sum(p.numel() for p in model.parameters()),
            with_duplicates=sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False)),
            state_dict=sum(t.numel() for t in state.values()),
        ),
        code=codegen.script(spec),
        torch_version=torch.__version__,
    )
