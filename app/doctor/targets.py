"""What a checkpoint is loaded into: a lab preset (its spec), built the one way the lab builds it.

Every load the doctor tries goes through ``target_module``: real architectures (built by
transformers, ``app.architectures.catalogue``) plug in here, by id, without the doctor changing.
"""

from __future__ import annotations

from torch import nn

from app.architectures import (
    catalogue as architectures,  # its catalogue: transformers is imported on the first build
)
from app.lab.presets import PRESETS
from app.lab.report import build
from app.lab.spec import LabSpec

Target = LabSpec | str  # a preset's spec, or an architecture's id


def architecture_target(arch_id: str, enabled: bool) -> str:
    """``arch_id`` as a load target, refused (404) where unknown or where architectures are off."""
    if not enabled:
        raise architectures.ArchitectureError(404, architectures.OFF)
    return architectures.get(arch_id).id


def target_module(target: Target) -> nn.Module:
    """A fresh module to load into (each attempt gets its own: a strict load that fails has already
    copied what it could)."""
    if isinstance(target, LabSpec):
        return build(target, refusals={})
    # A tiny config on the CPU, seeded (a few hundred KB); a full size on meta, where keys, shapes
    # and dtypes, all a load checks, cost no memory (an 8B Llama included).
    if architectures.get(target).tiny:
        return architectures.build(target, "cpu")
    return architectures.build(target, "meta")


def target_name(target: Target) -> str:
    return PRESETS[target.preset].class_name if isinstance(target, LabSpec) else target
