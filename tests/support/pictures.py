"""The module picture's geometry, checked on the app's own numbers (tests/browser/test_diagram.py
checks the same in a browser): lanes in order, outlines and labels inside their lanes, no text on
another or on a chip it does not belong to."""

from __future__ import annotations

import itertools
import unicodedata

from app.lab.diagram import Diagram, Rect


def overlap(a: Rect, b: Rect) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def inside(point: tuple[float, float], rect: Rect) -> bool:
    return rect.x <= point[0] <= rect.x + rect.w and rect.y <= point[1] <= rect.y + rect.h


def well_placed(d: Diagram) -> None:
    """Each lane in the picture, below the one before, its device's name inside it; each outline
    inside its lane, with its label."""
    for above, below in itertools.pairwise(d.lanes):
        assert above.rect.y + above.rect.h <= below.rect.y + 1e-9, (above.device, below.device)
    picture = Rect(-0.01, -0.01, d.width + 0.02, d.height + 0.02)  # its size is rounded to 0.01
    for lane in d.lanes:
        assert lane.rect in picture and inside(lane.title_at, lane.rect), lane.device
    for outline in d.outlines:
        lane = d.lanes[outline.lane]
        assert outline.rect in lane.rect, (outline.table, lane.device)
        assert inside(outline.label, lane.rect), outline.table  # its label: under it, in the lane
    legible(d)
    snug(d)
    one_label_row(d)
    state_label_placed(d)
    abutting(d)
    tight_lines(d)
    no_wider_than_needed(d)


# A text's extent in em, measured here and not by the app's metrics: a Latin character of the
# monospace font is 0.61 em wide, a wide (CJK) one 1 em; a line stands 0.94 em above its baseline
# and 0.25 below.
ASCENT, DESCENT = 0.94, 0.25


def ink(text: str) -> float:
    return sum(1.0 if unicodedata.east_asian_width(ch) in "WF" else 0.61 for ch in text)


def text_at(x: float, baseline: float, text: str) -> Rect:
    return Rect(x, baseline - ASCENT, ink(text), ASCENT + DESCENT)


def texts(d: Diagram) -> list[tuple[str, Rect, str]]:
    """Every text of the picture where the template draws it: (the text, its box, the id of the
    chip it is on, or "")."""
    found = []
    for lane in d.lanes:
        x, y = lane.title_at
        found.append((lane.device, text_at(x, y, lane.device), ""))
        if lane.role:
            found.append((lane.role, text_at(x + ink(lane.device) + 0.85, y, lane.role), ""))
        if lane.was:
            at = x + ink(lane.device) + 0.85 + (ink(lane.role) + 0.6 if lane.role else 0.0)
            found.append((d.before, text_at(at + 0.2, y, d.before), ""))
            found.append((lane.was, text_at(at + ink(d.before) + 0.7, y, lane.was), ""))
    for box in d.boxes:
        title = box.title + (f" ×{box.count}" if box.count > 1 else "")
        found.append((title, text_at(box.title_x, box.rect.y + 0.35, title), ""))
    for o in d.outlines:
        label = f"{o.table}()" + (f" {o.empty}" if o.empty else "")
        found.append((label, text_at(*o.label, label), ""))
    for c in d.chips:
        x, (first, second) = c.rect.x + 0.4, (c.rect.y + line for line in d.lines)
        if c.ghost:
            found.append((c.name, text_at(x, first, c.name), c.id))
            found.append((d.before, text_at(c.rect.x + 0.5, second, d.before), c.id))
            continue
        top = f"{c.name} {c.shape}" if c.shape_first else c.name
        below = c.kind_words if c.shape_first else f"{c.kind_words} {c.shape}"
        found.append((top, text_at(x, first, top), c.id))
        found.append((below, text_at(x, second, below), c.id))
    return found


def legible(d: Diagram) -> None:
    """No text on another, a chip's texts inside its face and no other text on it, every text in
    the picture: what tests/browser/test_diagram.py checks in a browser, on the app's own numbers."""
    picture = Rect(-0.01, -0.01, d.width + 0.02, d.height + 0.02)
    said = texts(d)
    for (a, box_a, _), (b, box_b, _) in itertools.combinations(said, 2):
        assert not overlap(box_a, box_b), (a, b)
    faces = {c.id: c for c in d.chips}
    for text, box, on in said:
        assert box in picture, text
        for chip in faces.values():
            if chip.id == on:
                assert box in chip.rect, (text, "out of its chip")
            else:
                assert not overlap(box, chip.rect), (text, "on", chip.name)


# A box's border under its content (diagram.BOX_BOTTOM), measured here on the app's own numbers.
BOX_BOTTOM = 0.35


def snug(d: Diagram) -> None:
    """Each box ends just under what it holds: its last row of chips or its last nested box, then
    its bottom margin; no empty band of height inside it."""
    for box in d.boxes:
        inside_box = [c.rect for c in d.chips if c.rect in box.rect]
        inside_box += [b.rect for b in d.boxes if b is not box and b.rect in box.rect]
        if not inside_box:  # a module holding no tensor: its title alone
            continue
        lowest = max(r.y + r.h for r in inside_box)
        assert abs(box.rect.y + box.rect.h - (lowest + BOX_BOTTOM)) < 1e-6, (box.path, box.title)


# Around their bands of chips, named_parameters()' and named_buffers()' outlines (diagram.OUTER).
OUTER = 0.28


def one_label_row(d: Diagram) -> None:
    """Under a lane, named_parameters()' label (at its outline's left) and named_buffers()' (at its
    right) share a row at least 1 em apart; a buffers outline wider than its chips was widened for
    that row alone, so its labels are exactly 1 em apart, no more."""
    for n in range(len(d.lanes)):
        found = {o.table: o for o in d.outlines if o.lane == n and not o.empty}
        if not {"named_parameters", "named_buffers"} <= set(found):
            continue
        params, buffers = found["named_parameters"], found["named_buffers"]
        gap = buffers.label[0] - (params.label[0] + ink("named_parameters()"))
        assert gap >= 1.0 - 1e-6, d.lanes[n].device
        chips = [c.rect for c in d.chips if c.lane == n and c.rect in buffers.rect]
        widened = buffers.rect.x + buffers.rect.w > max(r.x + r.w for r in chips) + OUTER + 1e-6
        assert not widened or abs(gap - 1.0) < 1e-6, (d.lanes[n].device, gap)


def state_label_placed(d: Diagram) -> None:
    """state_dict()'s label shares the lane's title line (the device, what .to() did, the module's
    name) when it clears it by 1.55 em; only when it does not does it take a row of its own."""
    said = texts(d)
    for n, lane in enumerate(d.lanes):
        state = next((o for o in d.outlines if o.lane == n and o.table == "state_dict"), None)
        if state is None:
            continue
        baseline = lane.title_at[1]
        line = [
            r for _, r, on in said if not on and abs(r.y + ASCENT - baseline) < 1e-6 and r.y >= lane.rect.y
        ]
        end = max(r.x + r.w for r in line)
        own_row = state.label[1] - baseline > 0.45 + 1e-6
        assert not own_row or state.label[0] < end + 1.6, (lane.device, state.label[0], end)


# Between two bands of chips (diagram.BAND_GAP).
BAND_GAP = 0.8


def abutting(d: Diagram) -> None:
    """In each lane the bands of chips (one per set of tables) stand BAND_GAP apart: no band holds
    a column no chip is in (it would push the next band right)."""
    for n in range(len(d.lanes)):
        bands: dict[tuple, list[float]] = {}
        for c in d.chips:
            if c.lane == n:
                left, right = bands.get(c.item.sets, [c.rect.x, c.rect.x + c.rect.w])
                bands[c.item.sets] = [min(left, c.rect.x), max(right, c.rect.x + c.rect.w)]
        spans = sorted(bands.values())
        for (_, right), (left, _) in itertools.pairwise(spans):
            assert abs(left - right - BAND_GAP) < 1e-6, (d.lanes[n].device, left - right)


def tight_lines(d: Diagram) -> None:
    """A lane's title line reads as one line (no hole of 1.6 em between its texts), and each lane
    ends 0.3 em under the lowest thing in it."""
    said = texts(d)
    for lane in d.lanes:
        inside_lane = [r for _, r, _ in said if r.y >= lane.rect.y and r.y + r.h <= lane.rect.y + lane.rect.h]
        line = sorted(r.x for r in inside_lane if abs(r.y + ASCENT - lane.title_at[1]) < 1e-6)
        ends = {r.x: r.x + r.w for r in inside_lane if abs(r.y + ASCENT - lane.title_at[1]) < 1e-6}
        for left, right in itertools.pairwise(line):
            assert right - ends[left] <= 1.6, (lane.device, right - ends[left])
        things = [r.y + r.h for r in inside_lane]
        things += [c.rect.y + c.rect.h for c in d.chips if c.rect in lane.rect]
        things += [b.rect.y + b.rect.h for b in d.boxes if b.rect in lane.rect]
        assert lane.rect.y + lane.rect.h - max(things) <= 0.3 + 1e-6, lane.device


def no_wider_than_needed(d: Diagram) -> None:
    """The picture is as wide as its widest lane needs: in some lane, what stands furthest right (a
    text, a chip, an outline) has no more room on its right than the lane gives on the left (its
    title's start, or its first chip's)."""
    said = texts(d)
    spare = []
    for n, lane in enumerate(d.lanes):
        things = [r for _, r, _ in said if r in lane.rect]
        things += [c.rect for c in d.chips if c.lane == n] + [o.rect for o in d.outlines if o.lane == n]
        first = min((c.rect.x for c in d.chips if c.lane == n), default=lane.title_at[0])
        right_room = lane.rect.x + lane.rect.w - max(r.x + r.w for r in things)
        spare.append(right_room - (max(lane.title_at[0], first) - lane.rect.x))
    assert min(spare) <= 1e-6, spare
