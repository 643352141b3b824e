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

from app.langs import EN, ZH

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
    ("ﬁ" is read as "fi") and private ones ("__x" becomes "_CustomModule__x" in a class body).
    """
    private = name.startswith("__") and not name.endswith("__")
    return (
        name.isidentifier()
        and not iskeyword(name)
        and name != "__debug__"
        and unicodedata.normalize("NFKC", name) == name
        and not private
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
            {EN: "nn.Parameter attribute", ZH: "nn.Parameter 属性"},
            {
                EN: "Assigning an nn.Parameter to an attribute registers it as a learnable parameter.",
                ZH: "把 nn.Parameter 赋值给属性，就注册了一个可学习参数。",
            },
            "self.{name} = nn.Parameter({value})",
            lambda m, n, t: _set(m, n, nn.Parameter(t)),
        ),
        Style(
            "register_parameter",
            {EN: "register_parameter()", ZH: "register_parameter()"},
            {
                EN: "The explicit form of the attribute assignment: same result; the name may be computed.",
                ZH: "属性赋值的显式写法：结果相同，名字可以在运行时计算。",
            },
            'self.register_parameter("{name}", nn.Parameter({value}))',
            lambda m, n, t: m.register_parameter(n, nn.Parameter(t)),
        ),
        Style(
            "frozen_parameter",
            {EN: "Frozen parameter", ZH: "冻结的参数"},
            {
                EN: "requires_grad=False: still in parameters() and state_dict(), but it gets no grad.",
                ZH: "requires_grad=False 的参数：仍在 parameters() 和 state_dict() 中，但不会得到梯度。",
            },
            "self.{name} = nn.Parameter({value}, requires_grad=False)",
            lambda m, n, t: _set(m, n, nn.Parameter(t, requires_grad=False)),
        ),
        Style(
            "buffer",
            {EN: "register_buffer()", ZH: "register_buffer()"},
            {
                EN: "A buffer: saved in state_dict() and moved by .to(), but not a parameter.",
                ZH: "缓冲区：保存在 state_dict() 中，随 .to() 移动，但不是参数。",
            },
            'self.register_buffer("{name}", {value})',
            lambda m, n, t: m.register_buffer(n, t),
        ),
        Style(
            "non_persistent_buffer",
            {EN: "Non-persistent buffer", ZH: "非持久缓冲区"},
            {
                EN: "A buffer moved by .to() but left out of state_dict(), so checkpoints do not carry it.",
                ZH: "随 .to() 移动，但不进入 state_dict()，因此检查点里没有它。",
            },
            'self.register_buffer("{name}", {value}, persistent=False)',
            lambda m, n, t: m.register_buffer(n, t, persistent=False),
        ),
        Style(
            "nn_buffer",
            {EN: "nn.Buffer attribute", ZH: "nn.Buffer 属性"},
            {
                EN: "Assigning an nn.Buffer to an attribute registers a buffer, like register_buffer().",
                ZH: "把 nn.Buffer 赋值给属性，就注册了一个缓冲区，与 register_buffer() 相同。",
            },
            "self.{name} = nn.Buffer({value})",
            lambda m, n, t: _set(m, n, nn.Buffer(t)),
        ),
        Style(
            "plain_tensor",
            {EN: "Plain tensor attribute", ZH: "普通张量属性"},
            {
                EN: "A bare tensor attribute: torch does not track it, so .to() and state_dict() ignore it.",
                ZH: "普通的张量属性：torch 不跟踪它，.to() 和 state_dict() 都会忽略它。",
            },
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
            {EN: "Python list", ZH: "Python 列表"},
            {
                EN: "A plain list of layers: torch does not look inside it, so their parameters are not "
                "in parameters() or state_dict(), and .to() and optimizers never reach them.",
                ZH: "普通的层列表：torch 不会查看列表内部，所以这些层的参数不在 parameters() 和 "
                "state_dict() 中，.to() 和优化器也碰不到它们。",
            },
            "self.{name} = {value}",
            _set,
            "container",
        ),
        Style(
            "module_list",
            {EN: "nn.ModuleList", ZH: "nn.ModuleList"},
            {
                EN: "Registers every layer as a submodule named by its index: blocks.0.weight, ...",
                ZH: "把每一层注册为以下标命名的子模块：blocks.0.weight, ...",
            },
            "self.{name} = nn.ModuleList({value})",
            lambda m, n, layers: _set(m, n, nn.ModuleList(layers)),
            "container",
        ),
        Style(
            "sequential",
            {EN: "nn.Sequential", ZH: "nn.Sequential"},
            {
                EN: "Registers the layers like nn.ModuleList, and can also be called to run them in order.",
                ZH: "与 nn.ModuleList 一样注册各层，还可以直接调用以按顺序运行它们。",
            },
            "self.{name} = nn.Sequential(*{value})",
            lambda m, n, layers: _set(m, n, nn.Sequential(*layers)),
            "container",
        ),
    )
}
ALL_STYLES: dict[str, Style] = {**STYLES, **CONTAINERS}
