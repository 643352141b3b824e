"""The meta round trip on a real model, proven against the same model built on the CPU.

Build on meta, ``to_empty(device="cpu")`` (every tensor is then uninitialised memory), load the
CPU-built model's ``state_dict()``: what a checkpoint restores is every persistent tensor, never a
non-persistent buffer (Llama's rotary ``inv_freq``, BERT's ``position_ids``). ``to_empty`` also
gives each name of a tied parameter its own tensor. The fix is the model's own: transformers'
per-module initialisation (``model._init_weights(module)``, which recomputes the rotary frequencies
from the config) for each module owning such a buffer, then ``model.tie_weights()``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import BaseModel, Field
from torch import nn

from app.architectures.catalogue import (
    MAX_BYTES,
    Architecture,
    ArchitectureError,
    build,
    devices_for,
    get,
    real_bytes,
)
from app.architectures.module_tree import tied_groups
from app.langs import Text

FIX_CODE = """\
# the model's own initialisation of each module that owns a non-persistent buffer
for name in not_restorable:
    model._init_weights(model.get_submodule(name.rpartition(".")[0]))
model.tie_weights()  # to_empty() gave every tied name its own tensor
"""


def script(arch: Architecture) -> str:
    """The round trip as a script that runs with torch and transformers alone, and checks itself."""
    build_both = arch.code("cpu").replace("model = ", "reference = ").replace(".to('cpu')", "")
    meta = arch.code("meta").split("\n", 4)[4]  # the meta build alone: imports and config are there
    return (
        build_both
        + meta
        + 'model.to_empty(device="cpu")  # every tensor now uninitialised memory\n'
        + "persistent = set(model.state_dict())\n"
        + "not_restorable = [n for n, _ in model.named_buffers() if n not in persistent]\n"
        + 'print("not in state_dict():", not_restorable)\n'
        + "print(model.load_state_dict(reference.state_dict()))\n"
        + "with torch.no_grad():\n"
        + "".join("    " + line + "\n" for line in FIX_CODE.splitlines())
        + "want = dict(reference.named_parameters(remove_duplicate=False))"
        + " | dict(reference.named_buffers())\n"
        + "got = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())\n"
        + "different = [n for n in want if not torch.equal(got[n], want[n])]\n"
        + 'print("different from the CPU-built model after the fix:", different)\n'
        + "assert different == []\n"
    )


class RoundTripRow(BaseModel):
    name: str
    kind: str = Field(description='"parameter" or "buffer".')
    in_state_dict: bool = Field(description="A load_state_dict can restore it.")
    equal_after_load: bool = Field(description="torch.equal to the CPU-built model after load_state_dict.")
    equal_after_fix: bool = Field(description="torch.equal to the CPU-built model after the fix.")


class RoundTrip(BaseModel):
    architecture: str
    code: str = Field(description="The steps, as a script that runs and checks itself.")
    uninitialised: list[str] = Field(description="Every tensor after to_empty(): none is written by it.")
    not_restorable: list[str] = Field(description="Uninitialised, not in state_dict(): no load fixes it.")
    load_result: str = Field(description="What load_state_dict returned (strict).")
    tied_before: list[list[str]]
    tied_after_to_empty: list[list[str]] = Field(description="to_empty() unties them.")
    tied_after_fix: list[list[str]]
    fix_code: str
    fixed_modules: list[str]
    rows: list[RoundTripRow]
    unequal_after_load: list[str]
    unequal_after_fix: list[str]


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())


def _unequal(model: nn.Module, reference: dict[str, torch.Tensor]) -> list[str]:
    return [n for n, t in _tensors(model).items() if not torch.equal(t, reference[n])]


def round_trip(arch_id: str, max_bytes: int = MAX_BYTES) -> RoundTrip:
    arch = get(arch_id)
    if "cpu" not in devices_for(arch, max_bytes):
        raise ArchitectureError(
            422,
            Text(
                "{arch_id} is meta only here: the round trip needs it twice in real memory ({size} each, "
                "over MRE_ARCHITECTURE_MAX_BYTES); try {family}_tiny",
                arch_id=arch_id,
                size=f"{real_bytes(arch_id) / 1e9:,.2f} GB",
                family=arch.family,
            ),
        )
    return trip(arch_id, lambda device: build(arch_id, device, max_bytes=max_bytes), arch)


def trip(name: str, make: Callable[[str], nn.Module], arch: Architecture) -> RoundTrip:
    """The round trip of the model ``make(device)`` builds (seeded on the CPU, or on meta)."""
    arch_id = name
    reference_model = make("cpu")
    reference = _tensors(reference_model)
    model = make("meta")
    tied_before = tied_groups(model)
    model.to_empty(device="cpu")
    uninitialised = list(_tensors(model))
    tied_after = tied_groups(model)
    persistent = set(model.state_dict())
    not_restorable = [n for n in uninitialised if n not in persistent]
    load_result = str(model.load_state_dict(reference_model.state_dict()))
    after_load = _unequal(model, reference)
    owners = list(
        dict.fromkeys(n.rpartition(".")[0] for n, _ in model.named_buffers() if n in not_restorable)
    )
    with torch.no_grad():
        for owner in owners:
            model._init_weights(model.get_submodule(owner))
        model.tie_weights()
    after_fix = _unequal(model, reference)
    parameters = set(dict(model.named_parameters(remove_duplicate=False)))
    return RoundTrip(
        architecture=arch_id,
        code=script(arch),
        uninitialised=uninitialised,
        not_restorable=not_restorable,
        load_result=load_result,
        tied_before=tied_before,
        tied_after_to_empty=tied_after,
        tied_after_fix=tied_groups(model),
        fix_code=FIX_CODE,
        fixed_modules=owners,
        rows=[
            RoundTripRow(
                name=n,
                kind="parameter" if n in parameters else "buffer",
                in_state_dict=n in persistent,
                equal_after_load=n not in after_load,
                equal_after_fix=n not in after_fix,
            )
            for n in uninitialised
        ],
        unequal_after_load=after_load,
        unequal_after_fix=after_fix,
    )
