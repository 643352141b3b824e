"""The module tree of a live model: per submodule its parameters and buffers, counted and sized,
each shared (tied) parameter counted once, at the name ``named_parameters()`` gives it first.

Also what the model costs in memory per dtype, for inference and for training with AdamW, with the
arithmetic spelled out, and the tensor tables grouped by module prefix for the page.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import torch
from pydantic import BaseModel, Field
from torch import nn

from app.architectures.saving import Saving

# The dtypes a memory estimate is given for: what models are trained and served in.
ESTIMATE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ADAM_STEP_BYTES = 4  # torch.optim.AdamW keeps one float32 `step` tensor per parameter (not fused/capturable)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class TensorRow(BaseModel):
    name: str = Field(description="As named_parameters() / named_buffers() / state_dict() name it.")
    kind: str = Field(examples=["parameter"], description='"parameter" or "buffer".')
    shape: list[int]
    dtype: str
    device: str
    numel: int
    bytes: int
    requires_grad: bool | None = Field(None, description="Parameters only.")
    persistent: bool | None = Field(None, description="Buffers only: in state_dict() or not.")
    tied_names: list[str] = Field(
        default_factory=list, description="Other names of this very Parameter object (counted once)."
    )


class Counts(BaseModel):
    """Element counts and bytes; a tied parameter is counted under its first name only."""

    parameters: int = Field(0, description="Parameter tensors.")
    trainable: int = Field(0, description="Elements of parameters with requires_grad.")
    frozen: int = Field(0, description="Elements of parameters without requires_grad.")
    buffers: int = Field(0, description="Buffer tensors.")
    persistent: int = Field(0, description="Elements of persistent buffers (in state_dict).")
    non_persistent: int = Field(0, description="Elements of non-persistent buffers (not in state_dict).")
    persistent_buffers: int = Field(0, description="Persistent buffer tensors.")
    non_persistent_buffers: int = Field(0, description="Non-persistent buffer tensors.")
    parameter_bytes: int = 0
    buffer_bytes: int = 0
    bytes_by_dtype: dict[str, int] = Field(default_factory=dict)
    devices: list[str] = Field(default_factory=list)

    def add(self, row: TensorRow) -> None:
        if row.kind == "parameter":
            self.parameters += 1
            self.parameter_bytes += row.bytes
            if row.requires_grad:
                self.trainable += row.numel
            else:
                self.frozen += row.numel
        else:
            self.buffers += 1
            self.buffer_bytes += row.bytes
            if row.persistent:
                self.persistent += row.numel
                self.persistent_buffers += 1
            else:
                self.non_persistent += row.numel
                self.non_persistent_buffers += 1
        self.bytes_by_dtype[row.dtype] = self.bytes_by_dtype.get(row.dtype, 0) + row.bytes
        if row.device not in self.devices:
            self.devices.append(row.device)

    @property
    def bytes(self) -> int:
        return self.parameter_bytes + self.buffer_bytes

    @classmethod
    def summed(cls, counts: list[Counts]) -> Counts:
        total = cls()
        for c in counts:
            for name in cls.model_fields:
                value = getattr(c, name)
                if isinstance(value, int):
                    setattr(total, name, getattr(total, name) + value)
            for dtype, n in c.bytes_by_dtype.items():
                total.bytes_by_dtype[dtype] = total.bytes_by_dtype.get(dtype, 0) + n
            total.devices += [d for d in c.devices if d not in total.devices]
        return total

    @property
    def elements(self) -> int:
        return self.trainable + self.frozen


class ModuleNode(BaseModel):
    path: str = Field(description='Its name in named_modules() ("" for the model itself).')
    class_name: str
    own: Counts = Field(description="Tensors registered on this module itself.")
    total: Counts = Field(description="Its whole subtree.")
    tensors: list[str] = Field(description="Full names of the tensors registered on it, in torch's order.")
    tied: dict[str, str] = Field(
        default_factory=dict,
        description="Its parameters that are one named earlier (counted there): name -> that name.",
    )
    children: list[ModuleNode] = Field(default_factory=list)


class MemoryEstimate(BaseModel):
    """The model's own bytes in one dtype, with AdamW kept in that dtype too: no activations. The
    planner (GET /api/architectures/{id}/plan) gives training and inference memory per recipe."""

    dtype: str = Field(description="As model.to(dtype) would cast it: floating tensors only.")
    weights: int = Field(description="Bytes of the unique parameters.")
    buffers: int = Field(description="Bytes of every buffer.")
    gradients: int = Field(description="Bytes of one gradient per trainable parameter.")
    optimizer: int = Field(description="AdamW: exp_avg and exp_avg_sq per trainable parameter, and its step.")
    inference: int = Field(description="weights + buffers (activations not included).")
    training: int = Field(
        description="weights + buffers + gradients + optimizer, all in this dtype; activations not included "
        "(see the plan)."
    )
    arithmetic: list[str]


class TensorGroup(BaseModel):
    prefix: str = Field(examples=["model.layers.0"])
    count: int
    numel: int
    bytes: int
    rows: list[TensorRow]
    repeat: int = Field(
        1, description="Identical blocks it stands for (rows: one block's, named with the span)."
    )
    stem: str = Field("", description='A repeat: the prefix before the index ("model.layers.").')
    span: list[int] = Field(default_factory=list, description="A repeat: the block indices it stands for.")

    def names(self, row: TensorRow) -> list[str]:
        """The tensor names one row stands for: its own, or one per block of a repeat."""
        if self.repeat == 1:
            return [row.name]
        rest = row.name[len(self.prefix) :]
        return [f"{self.stem}{i}{rest}" for i in self.span]


class Totals(BaseModel):
    parameters: int = Field(description="sum(p.numel() for p in model.parameters())")
    trainable: int
    frozen: int
    buffers: int = Field(description="sum(b.numel() for b in model.buffers())")
    state_dict_entries: int
    state_dict_bytes: int = Field(description="Bytes of state_dict(): a tied tensor once per name.")
    unique_bytes: int = Field(description="Bytes of every parameter and buffer, each tensor once.")
    tied_groups: list[list[str]] = Field(description="Names sharing one Parameter object, first name first.")


class ModuleTree(BaseModel):
    class_name: str
    device: str
    totals: Totals
    root: ModuleNode
    named_parameters: list[TensorRow]
    named_buffers: list[TensorRow]
    state_dict: list[TensorRow]
    memory: list[MemoryEstimate]
    saving: Saving | None = Field(None, description="What each way of saving does with tied tensors.")


def _row(name: str, t: torch.Tensor, kind: str, **extra: object) -> TensorRow:
    return TensorRow(
        name=name,
        kind=kind,
        shape=list(t.shape),
        dtype=dtype_name(t.dtype),
        device=str(t.device),
        numel=t.numel(),
        bytes=t.numel() * t.element_size(),
        **extra,
    )


def _owner(name: str) -> str:
    return name.rpartition(".")[0]


def tied_groups(model: nn.Module) -> list[list[str]]:
    """Names that are one Parameter object, as torch's de-duplication sees them (by identity)."""
    names: dict[int, list[str]] = defaultdict(list)
    for name, p in model.named_parameters(remove_duplicate=False):
        names[id(p)].append(name)
    return [group for group in names.values() if len(group) > 1]


def module_tree(model: nn.Module) -> ModuleTree:
    groups = tied_groups(model)
    others = {g[0]: g[1:] for g in groups}
    tied_away = {name: g[0] for g in groups for name in g[1:]}
    state = model.state_dict()
    params = [
        _row(n, p, "parameter", requires_grad=p.requires_grad, tied_names=others.get(n, []))
        for n, p in model.named_parameters()
    ]
    buffers = [_row(n, b, "buffer", persistent=n in state) for n, b in model.named_buffers()]
    state_rows = [_row(n, t, "state") for n, t in state.items()]

    modules = dict(model.named_modules())
    nodes = {
        path: ModuleNode(path=path, class_name=type(m).__name__, own=Counts(), total=Counts(), tensors=[])
        for path, m in modules.items()
    }
    for path, node in nodes.items():
        if path:
            nodes[_owner(path)].children.append(node)
    for row in params + buffers:
        owner = _owner(row.name)
        nodes[owner].own.add(row)
        nodes[owner].tensors.append(row.name)
        parts = owner.split(".") if owner else []
        for i in range(len(parts) + 1):
            nodes[".".join(parts[:i])].total.add(row)
    for name, first in tied_away.items():
        nodes[_owner(name)].tied[name] = first

    unique = params + buffers
    totals = Totals(
        parameters=sum(r.numel for r in params),
        trainable=sum(r.numel for r in params if r.requires_grad),
        frozen=sum(r.numel for r in params if not r.requires_grad),
        buffers=sum(r.numel for r in buffers),
        state_dict_entries=len(state_rows),
        state_dict_bytes=sum(r.bytes for r in state_rows),
        unique_bytes=sum(r.bytes for r in unique),
        tied_groups=groups,
    )
    return ModuleTree(
        class_name=type(model).__name__,
        device=str(next(iter(state.values())).device) if state else "cpu",
        totals=totals,
        root=nodes[""],
        named_parameters=params,
        named_buffers=buffers,
        state_dict=state_rows,
        memory=[memory_estimate(model, d) for d in ESTIMATE_DTYPES],
    )


def _cast_bytes(t: torch.Tensor, dtype: torch.dtype) -> int:
    # model.to(dtype) casts floating tensors only; an int64 counter keeps its size.
    size = torch.empty((), dtype=dtype).element_size() if t.is_floating_point() else t.element_size()
    return t.numel() * size


def _gb(n: int) -> str:
    """Bytes in decimal units, as disks and GPU specs give them."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n} B"


def memory_estimate(model: nn.Module, dtype: torch.dtype) -> MemoryEstimate:
    """Bytes of the model after ``model.to(dtype)``, and of training it with torch.optim.AdamW."""
    size = torch.empty((), dtype=dtype).element_size()
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    weights = sum(_cast_bytes(p, dtype) for p in params)
    buffers = sum(_cast_bytes(b, dtype) for b in model.buffers())
    grads = sum(_cast_bytes(p, dtype) for p in trainable)
    optimizer = 2 * grads + ADAM_STEP_BYTES * len(trainable)
    n_params = sum(p.numel() for p in params)
    n_train = sum(p.numel() for p in trainable)
    arithmetic = [
        f"weights: {n_params:,} parameters x {size} B = {_gb(weights)}",
        f"buffers: {buffers:,} B",
        f"gradients: {n_train:,} trainable x {size} B = {_gb(grads)}",
        f"AdamW: 2 x {n_train:,} x {size} B + {len(trainable)} steps x {ADAM_STEP_BYTES} B"
        f" = {_gb(optimizer)}",
        f"inference = weights + buffers = {_gb(weights + buffers)}",
        f"training = weights + buffers + gradients + AdamW = {_gb(weights + buffers + grads + optimizer)}",
    ]
    return MemoryEstimate(
        dtype=dtype_name(dtype),
        weights=weights,
        buffers=buffers,
        gradients=grads,
        optimizer=optimizer,
        inference=weights + buffers,
        training=weights + buffers + grads + optimizer,
        arithmetic=arithmetic,
    )


_INDEX = re.compile(r"^(.*?\.\d+)\.")


def group_prefix(name: str) -> str:
    """The block a tensor belongs to: up to its first numbered part (model.layers.0), else its module."""
    found = _INDEX.match(name)
    return found.group(1) if found else (_owner(name) or "(top)")


def grouped(rows: list[TensorRow]) -> list[TensorGroup]:
    """Rows by block, in torch's order of first appearance, with counts per group."""
    by: dict[str, list[TensorRow]] = {}
    for row in rows:
        by.setdefault(group_prefix(row.name), []).append(row)
    return [
        TensorGroup(
            prefix=prefix,
            count=len(rs),
            numel=sum(r.numel for r in rs),
            bytes=sum(r.bytes for r in rs),
            rows=rs,
        )
        for prefix, rs in by.items()
    ]


@dataclass(frozen=True)
class Repeat:
    """Consecutive numbered siblings that are the same block (``layers.0`` ... ``layers.31``), shown
    once as ``layers.{0..31}``: one of them opened, the counts of all."""

    path: str  # "model.layers.{0..31}"
    name: str  # "layers.{0..31}"
    nodes: list[ModuleNode]
    total: Counts

    @property
    def first(self) -> ModuleNode:
        return self.nodes[0]

    @property
    def stem(self) -> str:
        """The path before the index: "model.layers."."""
        return self.first.path[: len(self.first.path) - len(_leaf(self.first.path))]

    @property
    def indices(self) -> tuple[int, int]:
        return int(_leaf(self.first.path)), int(_leaf(self.nodes[-1].path))


def _leaf(path: str) -> str:
    return path.rpartition(".")[2]


def signature(node: ModuleNode, rows: dict[str, TensorRow]) -> tuple:
    """What makes two blocks the same: class, every tensor's name, shape, dtype and kind, tied
    names, and the same of every child, by their names relative to the block."""
    own = tuple(
        (
            _leaf(t),
            tuple(rows[t].shape),
            rows[t].dtype,
            rows[t].kind,
            rows[t].persistent,
            rows[t].requires_grad,
        )
        for t in node.tensors
    )
    tied = tuple(sorted(_leaf(t) for t in node.tied))
    return (node.class_name, own, tied, tuple((_leaf(c.path), signature(c, rows)) for c in node.children))


def runs(children: list[ModuleNode], rows: dict[str, TensorRow]) -> list[ModuleNode | Repeat]:
    """The children, each run of at least two numbered, consecutive, identical blocks as a Repeat."""
    found: list[ModuleNode | Repeat] = []
    i = 0
    while i < len(children):
        j = i + 1
        start = _leaf(children[i].path)
        if start.isdigit():
            same = signature(children[i], rows)
            while (
                j < len(children)
                and _leaf(children[j].path) == str(int(start) + j - i)
                and signature(children[j], rows) == same
            ):
                j += 1
        if j - i >= 2:
            nodes = children[i:j]
            span = f"{{{start}..{_leaf(nodes[-1].path)}}}"
            parent = nodes[0].path.rpartition(".")[0]
            found.append(
                Repeat(
                    f"{parent}.{span}" if parent else span,
                    span,
                    nodes,
                    Counts.summed([n.total for n in nodes]),
                )
            )
        else:
            found.append(children[i])
            j = i + 1
        i = j
    return found


_BLOCK = re.compile(r"^(.*\.)(\d+)$")


def collapsed(groups: list[TensorGroup]) -> list[TensorGroup]:
    """Table groups of identical numbered blocks (``model.layers.0`` ... ``.31``) as one group,
    ``model.layers.{0..31}``, its rows those of one block named with the span, its counts of all."""
    found: list[TensorGroup] = []
    i = 0
    while i < len(groups):
        head = _BLOCK.match(groups[i].prefix)
        j = i + 1
        if head:

            def shape(g: TensorGroup) -> list:
                return [(r.name[len(g.prefix) :], r.shape, r.dtype, r.kind) for r in g.rows]

            while j < len(groups):
                nxt = _BLOCK.match(groups[j].prefix)
                if not (
                    nxt
                    and nxt.group(1) == head.group(1)
                    and int(nxt.group(2)) == int(head.group(2)) + j - i
                    and shape(groups[j]) == shape(groups[i])
                ):
                    break
                j += 1
        if j - i >= 2:
            span = f"{head.group(1)}{{{head.group(2)}..{int(head.group(2)) + j - i - 1}}}"  # type: ignore[union-attr]
            first = groups[i]
            rows = [r.model_copy(update={"name": span + r.name[len(first.prefix) :]}) for r in first.rows]
            block = groups[i:j]
            found.append(
                TensorGroup(
                    prefix=span,
                    count=sum(g.count for g in block),
                    numel=sum(g.numel for g in block),
                    bytes=sum(g.bytes for g in block),
                    rows=rows,
                    repeat=j - i,
                    stem=head.group(1),  # type: ignore[union-attr]
                    span=list(range(int(head.group(2)), int(head.group(2)) + j - i)),  # type: ignore[union-attr]
                )
            )
        else:
            found.append(groups[i])
            j = i + 1
        i = j
    return found
