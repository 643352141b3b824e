"""Registration styles: the ways a tensor can be attached to an ``nn.Module``.

Each style knows its code line and applies itself to a live module. Adding a style is a change
in this file only: every other part of the app (API, pages, codegen, tests) iterates ``STYLES``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from keyword import iskeyword
from typing import Any

from torch import nn

from app.langs import Text

Attach = Callable[[nn.Module, str, Any], None]  # a tensor, or a list of layers for a container


def literal(text: str) -> str:
    """``text`` as a Python string literal (double-quoted where it can be, as the tutorials write).

    Every user string reaches generated code this way, never spliced into source.
    """
    quoted = repr(text)
    if quoted.startswith("'") and '"' not in text:  # then it has no quote of either kind inside
        return '"' + quoted[1:-1] + '"'
    return quoted


def writable_as_attribute(name: str) -> bool:
    """Whether ``self.<name> = ...`` in a class body sets exactly the attribute ``name``.

    Not for "a.b", "" or keywords (syntax), nor for names Python rewrites: NFKC-normalised ones
    ("ﬁ" is read as "fi") and private ones ("__x" becomes "_CustomModule__x" in a class body), nor
    for dunders: ``self.__dict__ = t`` replaces the instance's dictionary, ``self.__debug__`` is a
    syntax error (they are written with setattr and a literal name).
    """
    return (
        name.isidentifier()
        and not iskeyword(name)
        and unicodedata.normalize("NFKC", name) == name
        and not name.startswith("__")  # private or dunder
    )


@contextmanager
def attaching(module: nn.Module, name: str, refused: dict[str, Exception]) -> Iterator[None]:
    """Attach one member in the ``with`` body. If torch refuses it, or takes it but the module then
    fails its own calls (``self.to = t`` hides .to(), ``self._parameters = t`` breaks them all),
    the module is put back as it was and torch's exception is noted under the name."""
    saved = dict(vars(module))
    registries = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set")
    # A registry torch itself dropped (a member named _non_persistent_buffers_set) is not copied.
    copies = {key: type(saved[key])(saved[key]) for key in registries if key in saved}
    try:
        yield
        # The calls made on every module after it is built (on the CPU, so .to("cpu") moves nothing).
        module.to("cpu")
        module.state_dict()
        list(module.named_parameters(remove_duplicate=False))
        list(module.named_buffers())
        list(module.parameters())
    except Exception as error:  # torch's refusal, or its own failure: the result for this name
        vars(module).clear()
        vars(module).update(saved, **copies)
        refused[name] = error


@dataclass(frozen=True)
class Style:
    id: str
    title: dict[str, str]  # per language (EN, ZH)
    explanation: dict[str, str]
    # Code line with ``{name}`` and ``{value}`` placeholders; the same text codegen writes.
    template: str
    attach: Attach
    # "tensor": attaches a tensor; "container": holds a list of sub-layers (the layer_list preset).
    kind: str = "tensor"

    def line(self, name: str, value: str) -> str:
        """The Python line that attaches ``value`` (source text) as ``name`` inside ``__init__``."""
        if self.template.startswith("self.{name} = ") and not writable_as_attribute(name):
            # "a.b" or "" cannot be written as an attribute: setattr is the same call, spelled out.
            rest = self.template.removeprefix("self.{name} = ").format(value=value)
            return f"setattr(self, {literal(name)}, {rest})"
        # The name goes in as a value of format(), so braces or quotes in it are never template text.
        template = self.template.replace('"{name}"', "{quoted}")
        return template.format(name=name, quoted=literal(name), value=value)

    @property
    def code(self) -> str:
        """The code line for a tensor ``t`` (or a list of ``layers``) attached as ``x``."""
        return self.line("x", "layers" if self.kind == "container" else "t")


def _set(module: nn.Module, name: str, value: object) -> None:
    # setattr goes through nn.Module.__setattr__, exactly like ``self.name = value``.
    setattr(module, name, value)


STYLES: dict[str, Style] = {
    s.id: s
    for s in (
        Style(
            "parameter",
            Text("nn.Parameter attribute"),
            Text("Assigning an nn.Parameter to an attribute registers it as a learnable parameter."),
            "self.{name} = nn.Parameter({value})",
            lambda m, n, t: _set(m, n, nn.Parameter(t)),
        ),
        Style(
            "register_parameter",
            Text("register_parameter()"),
            Text("The explicit form of the attribute assignment: same result; the name may be computed."),
            'self.register_parameter("{name}", nn.Parameter({value}))',
            lambda m, n, t: m.register_parameter(n, nn.Parameter(t)),
        ),
        Style(
            "frozen_parameter",
            Text("Frozen parameter"),
            Text("requires_grad=False: still in parameters() and state_dict(), but it gets no grad."),
            "self.{name} = nn.Parameter({value}, requires_grad=False)",
            lambda m, n, t: _set(m, n, nn.Parameter(t, requires_grad=False)),
        ),
        Style(
            "buffer",
            Text("register_buffer()"),
            Text("A buffer: saved in state_dict() and moved by .to(), but not a parameter."),
            'self.register_buffer("{name}", {value})',
            lambda m, n, t: m.register_buffer(n, t),
        ),
        Style(
            "non_persistent_buffer",
            Text("Non-persistent buffer"),
            Text("A buffer moved by .to() but left out of state_dict(), so checkpoints do not carry it."),
            'self.register_buffer("{name}", {value}, persistent=False)',
            lambda m, n, t: m.register_buffer(n, t, persistent=False),
        ),
        Style(
            "nn_buffer",
            Text("nn.Buffer attribute"),
            Text("Assigning an nn.Buffer to an attribute registers a buffer, like register_buffer()."),
            "self.{name} = nn.Buffer({value})",
            lambda m, n, t: _set(m, n, nn.Buffer(t)),
        ),
        Style(
            "plain_tensor",
            Text("Plain tensor attribute"),
            Text("A bare tensor attribute: torch does not track it, so .to() and state_dict() ignore it."),
            "self.{name} = {value}",
            _set,
        ),
    )
}


# Sub-layers held in a list: how the container is written decides whether torch sees them at all.
CONTAINERS: dict[str, Style] = {
    s.id: s
    for s in (
        Style(
            "python_list",
            Text("Python list"),
            Text(
                "A plain list of layers: torch does not look inside it, so their parameters are not in "
                "parameters() or state_dict(), and .to() and optimizers never reach them."
            ),
            "self.{name} = {value}",
            _set,
            "container",
        ),
        Style(
            "module_list",
            Text("nn.ModuleList"),
            Text("Registers every layer as a submodule named by its index: blocks.0.weight, ..."),
            "self.{name} = nn.ModuleList({value})",
            lambda m, n, layers: _set(m, n, nn.ModuleList(layers)),
            "container",
        ),
        Style(
            "sequential",
            Text("nn.Sequential"),
            Text("Registers the layers like nn.ModuleList, and can also be called to run them in order."),
            "self.{name} = nn.Sequential(*{value})",
            lambda m, n, layers: _set(m, n, nn.Sequential(*layers)),
            "container",
        ),
    )
}
ALL_STYLES: dict[str, Style] = {**STYLES, **CONTAINERS}
