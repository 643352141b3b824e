"""Registration styles: the ways a tensor can be attached to an ``nn.Module``.

Each style knows its code line and applies itself to a live module. Adding a style is a change
in this file only: every other part of the app (API, pages, codegen, tests) iterates ``STYLES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

Attach = Callable[[nn.Module, str, torch.Tensor], None]


@dataclass(frozen=True)
class Style:
    id: str
    title: str
    explanation: str
    # Code line with ``{name}`` and ``{value}`` placeholders; the same text codegen writes.
    template: str
    attach: Attach

    def line(self, name: str, value: str) -> str:
        """The Python line that attaches ``value`` (source text) as ``name`` inside ``__init__``."""
        return self.template.format(name=name, value=value)

    @property
    def code(self) -> str:
        return self.line("x", "t")


def _set(module: nn.Module, name: str, value: object) -> None:
    # setattr goes through nn.Module.__setattr__, exactly like ``self.name = value``.
    setattr(module, name, value)


STYLES: dict[str, Style] = {
    s.id: s
    for s in (
        Style(
            "parameter",
            "nn.Parameter attribute",
            "Assigning an nn.Parameter to an attribute registers it as a learnable parameter.",
            "self.{name} = nn.Parameter({value})",
            lambda m, n, t: _set(m, n, nn.Parameter(t)),
        ),
        Style(
            "register_parameter",
            "register_parameter()",
            "The explicit form of the attribute assignment: same result, and the name may be computed.",
            'self.register_parameter("{name}", nn.Parameter({value}))',
            lambda m, n, t: m.register_parameter(n, nn.Parameter(t)),
        ),
        Style(
            "frozen_parameter",
            "Frozen parameter",
            "A parameter with requires_grad=False: still in parameters() and state_dict(), gets no grad.",
            "self.{name} = nn.Parameter({value}, requires_grad=False)",
            lambda m, n, t: _set(m, n, nn.Parameter(t, requires_grad=False)),
        ),
        Style(
            "buffer",
            "register_buffer()",
            "A buffer: saved in state_dict() and moved by .to(), but not a parameter.",
            'self.register_buffer("{name}", {value})',
            lambda m, n, t: m.register_buffer(n, t),
        ),
        Style(
            "non_persistent_buffer",
            "Non-persistent buffer",
            "A buffer moved by .to() but left out of state_dict(), so checkpoints do not carry it.",
            'self.register_buffer("{name}", {value}, persistent=False)',
            lambda m, n, t: m.register_buffer(n, t, persistent=False),
        ),
        Style(
            "nn_buffer",
            "nn.Buffer attribute",
            "Assigning an nn.Buffer to an attribute registers a buffer, like register_buffer().",
            "self.{name} = nn.Buffer({value})",
            lambda m, n, t: _set(m, n, nn.Buffer(t)),
        ),
        Style(
            "plain_tensor",
            "Plain tensor attribute",
            "A bare tensor attribute: torch does not track it, so .to() and state_dict() ignore it.",
            "self.{name} = {value}",
            _set,
        ),
    )
}
