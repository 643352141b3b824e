"""The byte map: blocks that hold every byte of the model once, laid out as rectangles whose areas
are their bytes, inside the frame, without overlap."""

from __future__ import annotations

import math
import random

import pytest

from app.architectures.catalogue import ARCHITECTURES
from app.architectures.memo import tree
from app.architectures.module_tree import ModuleNode
from app.architectures.treemap import BLOCKS, blocks, squarify, treemap, unique_ends
from tests.support.architectures import direct


@pytest.mark.parametrize("areas", [[6.0, 6.0, 4.0, 3.0, 2.0, 2.0, 1.0], [1.0], [10.0, 0.5, 0.25], [1.0] * 30])
def test_squarified_rectangles_have_their_areas_inside_the_frame_without_overlap(areas: list[float]) -> None:
    w, h = 6.0, 4.0
    scaled = [a * w * h / sum(areas) for a in areas]
    rects = squarify(scaled, 0.0, 0.0, w, h)
    assert len(rects) == len(scaled)
    for (x, y, rw, rh), area in zip(rects, scaled, strict=True):
        assert math.isclose(rw * rh, area, rel_tol=1e-9)
        assert x >= -1e-9 and x + rw <= w + 1e-9 and y >= -1e-9 and y + rh <= h + 1e-9
    for i, (x, y, rw, rh) in enumerate(rects):
        for a, b, aw, ah in rects[i + 1 :]:
            overlap = min(x + rw, a + aw) - max(x, a), min(y + rh, b + ah) - max(y, b)
            assert overlap[0] <= 1e-9 or overlap[1] <= 1e-9


@pytest.mark.parametrize("arch_id", ["llama_tiny", "resnet_tiny", "gpt2"])
def test_the_blocks_hold_every_byte_once(arch_id: str) -> None:
    root = tree(arch_id).root
    shown = blocks(root)
    assert sum(c.bytes for _, c in shown) == root.total.bytes
    paths = [n.path for n, c in shown if c is n.total]
    assert not any(p != q and q.startswith(p + ".") for p in paths for q in paths)  # none inside another
    assert len(shown) >= min(BLOCKS, len(shown))


@pytest.mark.parametrize("arch_id", list(ARCHITECTURES))
def test_each_tiles_area_is_its_bytes(arch_id: str) -> None:
    root = tree(arch_id).root
    tiles = treemap(root, 960, 360)
    total = root.total.bytes
    model = direct(arch_id)
    assert sum(t.parameter_bytes + t.buffer_bytes for t in tiles) == total
    for t in tiles:
        assert math.isclose(t.w * t.h, 960 * 360 * (t.parameter_bytes + t.buffer_bytes) / total, rel_tol=1e-6)
        assert 0 <= t.buffer_h <= t.h + 1e-9
        assert t.path.endswith(t.label) and (t.parent + "." + t.label).strip(".") == t.path
        module = model.get_submodule("" if t.path == "(model)" else t.path)
        assert t.class_name == type(module).__name__, t.path
    labels = [t.label for t in tiles]
    assert len(set(labels)) == len(labels)  # no two tiles say the same


def test_labels_carry_as_much_of_the_path_as_tells_tiles_apart() -> None:
    paths = [
        "resnet.encoder.stages.0.layers.2",
        "resnet.encoder.stages.1.layers.2",
        "model.layers.31",
        "lm_head",
    ]
    assert unique_ends(paths) == ["stages.0.layers.2", "stages.1.layers.2", "layers.31", "lm_head"]
    tiles = treemap(tree("resnet50").root)
    assert len({t.label for t in tiles}) == len(tiles)


def aspect(w: float, h: float) -> float:
    return max(w / h, h / w)


def bruls(areas: list[float], w: float, h: float) -> list[tuple[float, float, float, float]]:
    """Bruls et al.'s rule, from the rectangles themselves: a row laid along the shorter side of
    what is left takes the next area while its most elongated rectangle gets no more elongated."""

    def laid(row: list[float], side: float) -> list[tuple[float, float]]:
        thick = sum(row) / side
        return [(thick, a / thick) for a in row]

    rects: list[tuple[float, float, float, float]] = []
    x = y = 0.0
    i = 0
    while i < len(areas):
        side, row = min(w, h), [areas[i]]
        i += 1
        while i < len(areas) and max(aspect(*r) for r in laid([*row, areas[i]], side)) <= max(
            aspect(*r) for r in laid(row, side)
        ):
            row.append(areas[i])
            i += 1
        along = 0.0
        for thick, length in laid(row, side):
            rects.append((x, y + along, thick, length) if w >= h else (x + along, y, length, thick))
            along += length
        x, y, w, h = (x + thick, y, w - thick, h) if w >= h else (x, y + thick, w, h - thick)
    return rects


@pytest.mark.parametrize("seed", range(12))
def test_squarify_grows_each_row_while_its_worst_aspect_ratio_does_not_grow(seed: int) -> None:
    rng = random.Random(seed)
    areas = sorted((rng.uniform(0.05, 1.0) ** 3 for _ in range(rng.randint(3, 24))), reverse=True)
    w, h = (960.0, 360.0) if seed % 2 else (300.0, 500.0)
    areas = [a * w * h / sum(areas) for a in areas]
    got, want = squarify(areas, 0.0, 0.0, w, h), bruls(areas, w, h)
    assert len(got) == len(want)
    assert all(
        math.isclose(g, e, rel_tol=1e-9, abs_tol=1e-9)
        for r, q in zip(got, want, strict=True)
        for g, e in zip(r, q, strict=True)
    )


def test_blocks_open_the_largest_first() -> None:
    # No block shown whole that could be opened is larger than one that was opened.
    for arch_id in ("llama_tiny", "gpt2", "resnet50", "bert_base"):
        root = tree(arch_id).root
        for wanted in (3, 6, BLOCKS):
            shown = blocks(root, wanted)
            # Opened: every module above a block shown (an opened module's own tensors are a block of it).
            opened = {".".join(n.path.split(".")[:k]) for n, _ in shown for k in range(n.path.count(".") + 1)}
            opened_bytes = [n.total.bytes for n in walk(root) if n.path in opened]
            whole = [c.bytes for n, c in shown if c is n.total and any(k.total.bytes for k in n.children)]
            assert opened_bytes and whole, (arch_id, wanted)
            assert max(whole) <= min(opened_bytes), (arch_id, wanted)


def walk(node: ModuleNode) -> list[ModuleNode]:
    return [node, *(m for c in node.children for m in walk(c))]
