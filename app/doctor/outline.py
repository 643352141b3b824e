"""The tensors of a report as a short tree for a terminal: by module path, numbered layers of the same
make folded into one node (``h.{0..11}``, twelve alike), leaves with their shape and dtype, and a
depth past which a node only says what it holds. Pure Python over the report's tensor list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.doctor.patterns import runs
from app.doctor.report import TensorEntry

AUTO_LINES = 24  # without --depth: the deepest tree that fits in this many lines


@dataclass
class _Node:
    name: str
    shape: list[int] | None = None
    dtype: str | None = None
    tensors: int = 0
    elements: int = 0
    children: dict[str, _Node] = field(default_factory=dict)

    def signature(self) -> tuple:
        return (
            tuple(self.shape) if self.shape is not None else None,
            self.dtype,
            tuple((n, c.signature()) for n, c in self.children.items()),
        )


@dataclass(frozen=True)
class Line:
    depth: int
    name: str  # the node's segment(s): "h.{0..11}", "weight"
    detail: str  # "[768] float32", or "12 tensors, 7,087,872 elements" (each, for a folded node)
    times: int = 1  # nodes folded into this one


def _tree(entries: list[TensorEntry]) -> _Node:
    root = _Node("")
    for entry in entries:
        node = root
        parts = [p for segment in entry.location for p in segment.split(".")]
        for part in parts:
            node.tensors += 1
            node.elements += entry.elements
            node = node.children.setdefault(part, _Node(part))
        node.tensors += 1
        node.elements += entry.elements
        node.shape, node.dtype = entry.shape, entry.dtype
    return root


def _folded(node: _Node) -> list[tuple[str, _Node, int]]:
    """The children, numbered ones with one signature folded: (name, representative, how many)."""
    out: list[tuple[str, _Node, int]] = []
    numbered: dict[tuple, list[int]] = {}
    for name, child in node.children.items():
        if name.isdecimal() and name.isascii() and child.children:
            numbered.setdefault(child.signature(), []).append(int(name))
            if len(numbered[child.signature()]) == 1:
                out.append(("#", child, 0))
        else:
            out.append((name, child, 1))
    result = []
    for name, child, times in out:
        if name == "#":
            numbers = numbered[child.signature()]
            label = numbers[0] if len(numbers) == 1 else "{" + ",".join(runs(tuple(numbers))) + "}"
            result.append((str(label), child, len(numbers)))
        else:
            result.append((name, child, times))
    return result


def _leaves(node: _Node, depth: int, out: list[Line], prefix: str, times: int) -> bool:
    """A node whose children are all leaves, as one line per shape and dtype: ln_1.{weight,bias}."""
    if not node.children or any(c.children for c in node.children.values()):
        return False
    by_kind: dict[tuple, list[str]] = {}
    for name, leaf in node.children.items():
        by_kind.setdefault((str(leaf.shape), leaf.dtype), []).append(name)
    for (shape, dtype), names in by_kind.items():
        label = names[0] if len(names) == 1 else "{" + ",".join(names) + "}"
        out.append(Line(depth, f"{prefix}{label}", f"{shape} {dtype}", times))
    return True


def _lines(node: _Node, depth: int, most: int | None, out: list[Line], prefix: str = "") -> None:
    for name, child, times in _folded(node):
        label = f"{prefix}{name}"
        if child.shape is not None:  # a tensor; keys may go on past it (bitsandbytes' weight.absmax)
            out.append(Line(depth, label, f"{child.shape} {child.dtype}", times))
        if not child.children:
            continue
        if _leaves(child, depth, out, f"{label}.", times):
            continue
        folded = _folded(child)
        if len(folded) == 1 and folded[0][1].children and times == 1:  # a chain: a.b.c
            _lines(child, depth, most, out, f"{label}.")
            continue
        each = " each" if times > 1 else ""
        detail = f"{child.tensors:,} tensors, {child.elements:,} elements{each}"
        out.append(Line(depth, label, detail, times))
        if most is None or depth + 1 < most:
            _lines(child, depth + 1, most, out)


def outline(
    entries: list[TensorEntry], depth: int | None = None, most: int = AUTO_LINES
) -> tuple[list[Line], int]:
    """The tree's lines to ``depth`` levels (None: the deepest that fits in ``most`` lines, at
    least one), and the depth used (0 when every node is shown)."""
    root = _tree(entries)
    full: list[Line] = []
    _lines(root, 0, None, full)
    deepest = max((line.depth for line in full), default=0) + 1
    if depth is None:
        if len(full) <= most:
            return full, 0
        depth = 1
        for d in range(1, deepest + 1):
            shown: list[Line] = []
            _lines(root, 0, d, shown)
            if len(shown) > most:
                break
            depth = d
    if depth >= deepest:
        return full, 0
    out: list[Line] = []
    _lines(root, 0, depth, out)
    return out, depth
