"""Where a model's bytes are, as rectangles: the tree is opened largest-first until it shows enough
blocks, then laid out as a squarified treemap (Bruls, Huizing, van Wijk 2000). Pure geometry: the
page draws the rectangles as SVG on the server."""

from __future__ import annotations

from dataclasses import dataclass

from app.architectures.module_tree import Counts, ModuleNode

BLOCKS = 16  # open the tree until at least this many blocks show (or nothing is left to open)


@dataclass(frozen=True)
class Tile:
    path: str
    class_name: str
    x: float
    y: float
    w: float
    h: float
    parameter_bytes: int
    buffer_bytes: int
    buffer_h: float  # the height of the buffers' band at the tile's bottom
    label: str = ""  # the end of its path that no other tile shares (layers.31, stages.0.layers.2)
    parent: str = ""  # the rest of its path, drawn under it when there is room


def blocks(root: ModuleNode, wanted: int = BLOCKS) -> list[tuple[ModuleNode, Counts]]:
    """Modules that together hold every byte, each once, opened from the largest until ``wanted``
    show; an opened module that holds tensors itself stays as a block of those alone."""
    shown = [(root, root.total)]
    while len(shown) < wanted:
        openable = [
            i for i, (n, c) in enumerate(shown) if c is n.total and any(k.total.bytes for k in n.children)
        ]
        if not openable:
            break
        i = max(openable, key=lambda i: shown[i][1].bytes)
        node = shown[i][0]
        own = [(node, node.own)] if node.own.bytes else []
        shown[i : i + 1] = own + [(c, c.total) for c in node.children if c.total.bytes]
    return shown


def _worst(row: list[float], side: float) -> float:
    total = sum(row)
    return max(max(side * side * a / total**2, total**2 / (side * side * a)) for a in row)


def squarify(areas: list[float], x: float, y: float, w: float, h: float) -> list[tuple[float, ...]]:
    """Rectangles (x, y, w, h) of the given areas (which sum to w*h), in the same order."""
    rects: list[tuple[float, ...]] = []
    i = 0
    while i < len(areas):
        side = min(w, h)
        row = [areas[i]]
        i += 1
        while i < len(areas) and _worst([*row, areas[i]], side) <= _worst(row, side):
            row.append(areas[i])
            i += 1
        thick = sum(row) / side  # the row runs along the shorter side
        offset = 0.0
        for a in row:
            length = a / thick
            rects.append((x, y + offset, thick, length) if w >= h else (x + offset, y, length, thick))
            offset += length
        if w >= h:
            x, w = x + thick, w - thick
        else:
            y, h = y + thick, h - thick
    return rects


def treemap(root: ModuleNode, width: float = 960, height: float = 360) -> list[Tile]:
    shown = sorted(blocks(root), key=lambda nc: -nc[1].bytes)
    total = sum(c.bytes for _, c in shown)
    if not total:
        return []
    areas = [c.bytes / total * width * height for _, c in shown]
    paths = [node.path or "(model)" for node, _ in shown]
    labels = unique_ends(paths)
    return [
        Tile(
            path,
            node.class_name,
            x,
            y,
            w,
            h,
            c.parameter_bytes,
            c.buffer_bytes,
            h * c.buffer_bytes / c.bytes,
            label,
            path[: -len(label)].removesuffix("."),
        )
        for path, label, (node, c), (x, y, w, h) in zip(
            paths, labels, shown, squarify(areas, 0, 0, width, height), strict=True
        )
    ]


def unique_ends(paths: list[str], least: int = 2) -> list[str]:
    """For each path, its shortest end of at least ``least`` parts that no other path ends with:
    two ResNet stages' ``layers.2`` become ``stages.0.layers.2`` and ``stages.1.layers.2``."""
    parts = [p.split(".") for p in paths]
    ends = []
    for i, mine in enumerate(parts):
        k = min(least, len(mine))
        while k < len(mine) and any(j != i and other[-k:] == mine[-k:] for j, other in enumerate(parts)):
            k += 1
        if k < len(mine) and mine[-k].isdigit():  # "stages.0.layers.2", not "0.layers.2"
            k += 1
        ends.append(".".join(mine[-k:]))
    return ends
