"""The byte map: blocks that hold every byte of the model once, laid out as rectangles whose areas
are their bytes, inside the frame, without overlap."""

from __future__ import annotations

import math

import pytest

from app.architectures.catalogue import ARCHITECTURES
from app.architectures.memo import tree
from app.architectures.treemap import BLOCKS, blocks, squarify, treemap, unique_ends


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
    assert sum(t.parameter_bytes + t.buffer_bytes for t in tiles) == total
    for t in tiles:
        assert math.isclose(t.w * t.h, 960 * 360 * (t.parameter_bytes + t.buffer_bytes) / total, rel_tol=1e-6)
        assert 0 <= t.buffer_h <= t.h + 1e-9
        assert t.path.endswith(t.label) and (t.parent + "." + t.label).strip(".") == t.path
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
