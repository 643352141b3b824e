"""What a checkpoint is loaded into: a lab preset (its spec), built the one way the lab builds it.

Every load the doctor tries goes through ``target_module``: real architectures (built by
transformers, ``app.lab.architectures``) plug in here, by id, without the doctor changing.
"""

from __future__ import annotations

from torch import nn

from app.lab.inspect import build
from app.lab.presets import PRESETS
from app.lab.spec import LabSpec

Target = LabSpec | str  # a preset's spec, or an architecture's id


class UnknownTarget(LookupError):
    pass


def target_module(target: Target) -> nn.Module:
    """A fresh module to load into (each attempt gets its own: a strict load that fails has already
    copied what it could)."""
    if isinstance(target, LabSpec):
        return build(target, refusals={})
    try:
        from app.lab import architectures  # type: ignore[attr-defined]
    except ImportError:
        raise UnknownTarget(f"unknown module {target!r}; presets: {', '.join(PRESETS)}") from None
    # On meta: keys, shapes and dtypes are all a load checks; a 7B model costs no memory.
    return architectures.build(target, "meta")


def target_name(target: Target) -> str:
    return PRESETS[target.preset].class_name if isinstance(target, LabSpec) else target
