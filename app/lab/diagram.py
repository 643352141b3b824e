"""The module diagram: a LabReport drawn, and what moved since the report before it (its LabDiff).

The module is a box, its submodules boxes nested in it; each tensor is a chip labelled with its
name, kind and shape. Lanes are devices: the one every tensor was made on (cpu) and the one
``model.to()`` moved the module to. Inside a lane, chips stand in bands by the tables that list
them (parameters, tied names, persistent buffers, non-persistent buffers, plain attributes), in
that order, so that each of ``named_parameters()``, ``named_buffers()`` and ``state_dict()`` is one
outline around consecutive bands. A chip that moves changes lane; a chip whose membership changes
changes band, into or out of an outline. Every element keeps its id from one report to the next, so
the page can draw the way between (CSS transitions across the htmx swap); ``draw`` adds the marks of
the diff, which say the same without motion: a ghost where a restyled chip stood, the device
``model.to()`` took the module's chips from.

Everything is laid out here, in em of the page's font (the SVG is sized in em, so its text is the
page's text size), from the widths of the characters: monospace (0.61 em for a Latin character, as
DejaVu Sans Mono, Menlo and Noto Sans Mono draw it) and 1 em for a CJK one. Lanes stand one under
the other, in two widths: beside the members' controls (``WIDE``) and on a phone (``NARROW``).

Repeated numbered blocks (``layers.0``, ``layers.1``, ...) that are alike tensor for tensor are
drawn once, as ``layers.{0..1}``; a module holding one tensor and nothing else is drawn as that
tensor's chip in its parent (``q_proj.weight``), so deep models stay readable.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from app.lab.diff import TABLES, LabDiff
from app.lab.experiments import ExperimentResult
from app.lab.presets import lookup
from app.lab.report import LabReport
from app.lab.tensors import ATTRIBUTE
from app.langs import Text

EM = 16  # SVG user units in an em: text of font-size 16 is the page's own 1em
WIDE, NARROW = "wide", "narrow"
# The width each arrangement aims at, in em: beside the members' controls on a 1280x720 projector
# (70 em across), and a 390 px phone (27 em across at 14 px).
MAX_WIDTH = {WIDE: 40.0, NARROW: 26.0}

# A chip's membership, (in named_parameters, in named_buffers, in state_dict), in band order: each
# table's chips are consecutive bands, so each outline is one rectangle. What no table lists comes
# first, on the side of the lane .to() leaves it in: it stays where it is when the others move on.
BANDS = ((0, 0, 0), (1, 0, 1), (1, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0))
OUTLINES = {
    "state_dict": {(1, 0, 1), (0, 0, 1), (0, 1, 1)},
    "named_parameters": {(1, 0, 1), (1, 0, 0)},
    "named_buffers": {(0, 1, 1), (0, 1, 0)},
}
TABLE_OF_SET = {"named_parameters": 0, "named_buffers": 1, "state_dict": 2}
# Kinds of chip, and their words (the class of the chip is the kind itself).
KINDS = {
    "parameter": Text("parameter"),
    "frozen": Text("frozen"),
    "tied": Text("tied"),
    "buffer": Text("buffer"),
    "non_persistent": Text("non-persistent"),
    "plain": Text("plain"),
}
LIST = Text("list")  # the "shape" of a plain Python list of layers
BEFORE = Text("before")  # the word of a before mark, as the tables' changed cells say it

# Metrics, in em.
MONO = 0.61  # a Latin character of the monospace font
PAD_X = 0.4  # inside a chip, each side
# A line of text takes 0.94 em above its baseline and 0.25 below (the monospace font's ascent and
# descent, which the CJK fallback shares): text boxes never overlap at these distances.
CHIP_H = 2.7  # two lines
LINES = (1.04, 2.34)  # their baselines: 0.1 em between their text boxes, at any scale
CHIP_GAP = 0.3  # between chips, either way
CHILD_GAP = 0.7  # above a nested box: its title stands half above its border
BAND_GAP = 0.8  # between bands: room for the outlines' edges
LANE_PAD = 0.6  # inside a lane, each side
LANE_GAP = 0.4
INSET = 0.45  # a nested box's border inside its parent's
TITLE = 0.85  # a box's title: half above its border, half below
BOX_BOTTOM = 0.35
LABEL = 1.05  # an outline's label, on its border
LABEL_PAD = 0.6  # from an outline's corner to its label
OUTER = 0.28  # named_parameters()' and named_buffers()' outlines around their bands, each side
STATE_OUTER = 0.55  # state_dict()'s, around both
TOP = 0.8  # from a lane's top to its top line: the device's name, on the module's box
EMPTY_LANE = 1.7


def text_width(text: str) -> float:
    """The width of ``text`` in the monospace font, in em: 1 for a wide (CJK) character."""
    return sum(1.0 if unicodedata.east_asian_width(ch) in "WF" else MONO for ch in text)


# The outlines' labels: the tables' calls, in the monospace font.
LABELS = {table: text_width(table + "()") for table in OUTLINES}


def _id(prefix: str, key: str) -> str:
    """A stable element id for ``key`` (a tensor name may hold any character)."""
    return f"{prefix}-{hashlib.blake2b(key.encode(), digest_size=6).hexdigest()}"


def owners(report: LabReport) -> dict[str, str]:
    """Each tensor's name -> the member it belongs to (itself, or a container's layers under it)."""
    names = [m.name for m in report.members]
    found: dict[str, str] = {}
    rows = [*report.named_parameters, *report.named_buffers, *report.state_dict]
    for row in rows:
        for name in names:
            if row.name == name or row.name.startswith((name + ".", name + "[")):
                found.setdefault(row.name, name)
    return found


@dataclass(frozen=True)
class Item:
    """What one chip stands for: a tensor as torch's tables list it, or a plain attribute."""

    key: str  # "t:" + its name: a table's, or a plain attribute member's (the same across a restyle)
    path: str  # the module it sits in ("" for the module itself)
    label: str  # its name inside that module
    kind: str
    shape: tuple[int, ...] | None
    dtype: str | None
    device: str
    device_before: str
    sets: tuple[int, int, int]  # in named_parameters, named_buffers, state_dict
    tensors: tuple[str, ...]  # the names it stands for (several once blocks are drawn once)
    members: tuple[str, ...]  # the members it belongs to, for the linked highlight
    ghost: bool = False  # where it stood before a change, in the tables that listed it then

    @property
    def name(self) -> str:
        return f"{self.path}.{self.label}" if self.path else self.label


def items(report: LabReport) -> list[Item]:
    """Every chip's content, in torch's order: the tables' tensors, then the plain attributes."""
    params = {r.name: r for r in report.named_parameters}
    buffers = {r.name: r for r in report.named_buffers}
    state = {r.name: r for r in report.state_dict}
    owner = owners(report)
    made_on = {m.name: m.device_before for m in report.members}
    first = next((d for d in made_on.values() if d != "none"), "cpu")
    found = []
    for name in dict.fromkeys([*state, *params, *buffers]):
        row = params.get(name) or buffers.get(name) or state[name]
        if name in params:
            kind = "parameter" if params[name].requires_grad else "frozen"
        elif name in buffers:
            kind = "buffer" if buffers[name].persistent else "non_persistent"
        else:
            kind = "tied"  # a second name of a tensor listed under its first: state_dict() only
        path, _, leaf = name.rpartition(".")
        member = owner.get(name)
        found.append(
            Item(
                key="t:" + name,
                path=path,
                label=leaf,
                kind=kind,
                shape=tuple(row.shape),
                dtype=row.dtype,
                device=row.device,
                device_before=made_on.get(member, first) if member else first,
                sets=(int(name in params), int(name in buffers), int(name in state)),
                tensors=(name,),
                members=(member,) if member else (),
            )
        )
    modules = {i.path for i in found} | {""}
    custom = lookup(report.spec.preset).custom
    for m in report.members:
        tracked = m.in_parameters or m.in_buffers or m.in_state_dict
        if m.refused or tracked:
            continue
        # A custom member is an attribute of the module itself, whatever its name ("a.b" too); a real
        # model's member names a tensor inside it (model.norm.weight), drawn in its module's box.
        path = "" if custom else _deepest(m.name, modules)
        found.append(
            Item(
                key="t:" + m.name,
                path=path,
                label=m.name[len(path) + 1 :] if path else m.name,
                kind="plain",
                shape=tuple(m.shape) if m.shape is not None else None,
                dtype=None,
                device=m.device_after,
                device_before=m.device_before,
                sets=(0, 0, 0),
                tensors=(m.name,),
                members=(m.name,),
            )
        )
    return found


def _deepest(name: str, modules: set[str]) -> str:
    parts = name.split(".")
    for n in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return ""


# Repeated blocks drawn once.


def _split(path: str) -> tuple[str, ...]:
    return tuple(path.split(".")) if path else ()


def collapse(found: Sequence[Item]) -> list[Item]:
    """``found`` with every run of numbered sibling blocks that are alike (same tensors, kinds,
    shapes, dtypes, devices and tables, in the same order) drawn once as ``name.{first..last}``."""
    result = list(found)
    changed = True
    while changed:
        changed = False
        for parent in sorted({_split(i.path)[:n] for i in result for n in range(len(_split(i.path)))}):
            merged = _collapse_under(result, parent)
            if merged is not None:
                result, changed = merged, True
                break
    return result


def _collapse_under(found: list[Item], parent: tuple[str, ...]) -> list[Item] | None:
    depth = len(parent)
    blocks: dict[int, list[Item]] = {}
    for item in found:
        parts = _split(item.path)
        if len(parts) > depth and parts[:depth] == parent and parts[depth].isdigit():
            blocks.setdefault(int(parts[depth]), []).append(item)
    runs, run = [], []
    for index in sorted(blocks):
        if run and index == run[-1] + 1 and _alike(blocks[run[0]], blocks[index], depth):
            run.append(index)
        else:
            runs.append(run) if len(run) > 1 else None
            run = [index]
    runs.append(run) if len(run) > 1 else None
    if not runs:
        return None
    gone: set[str] = set()
    drawn: dict[str, Item] = {}
    for run in runs:
        name = f"{{{run[0]}..{run[-1]}}}"
        for position, item in enumerate(blocks[run[0]]):
            parts = _split(item.path)
            twins = [blocks[i][position] for i in run]
            gone.update(t.key for t in twins)
            path = ".".join((*parent, name, *parts[depth + 1 :]))
            drawn[item.key] = replace(
                item,
                key="t:" + f"{path}.{item.label}",
                path=path,
                tensors=tuple(n for t in twins for n in t.tensors),
                members=tuple(dict.fromkeys(m for t in twins for m in t.members)),
            )
    return [drawn.get(i.key, i) for i in found if i.key not in gone or i.key in drawn]


def _alike(a: list[Item], b: list[Item], depth: int) -> bool:
    def shape(items: list[Item]) -> list[tuple]:
        return [
            (
                _split(i.path)[depth + 1 :],
                i.label,
                i.kind,
                i.shape,
                i.dtype,
                i.device,
                i.device_before,
                i.sets,
                i.ghost,
            )
            for i in items
        ]

    return shape(a) == shape(b)


# The module tree.


@dataclass
class Node:
    path: str
    title: str  # its name inside the box it is drawn in
    items: list[Item] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many blocks it stands for: 2 for ``layers.{0..1}``."""
        found = re.findall(r"\{(\d+)\.\.(\d+)\}", self.title)
        return int(found[-1][1]) - int(found[-1][0]) + 1 if found else 1


def tree(found: Iterable[Item]) -> Node:
    """The module tree of ``found``'s chips, in order of first appearance, compacted: a module with
    one chip and nothing else is that chip in its parent; a module holding only one module is one
    box named by both (``layers.{0..1}``)."""
    root = Node("", "")
    nodes = {"": root}
    for item in found:
        parts = _split(item.path)
        for n in range(1, len(parts) + 1):
            path = ".".join(parts[:n])
            if path not in nodes:
                nodes[path] = Node(path, parts[n - 1])
                nodes[".".join(parts[: n - 1])].children.append(nodes[path])
        nodes[item.path].items.append(item)
    _compact(root)
    return root


def _compact(node: Node) -> None:
    for child in node.children:
        _compact(child)
    kept = []
    for child in node.children:
        if not child.children and len(child.items) == 1 and child.count == 1:
            (item,) = child.items
            node.items.append(replace(item, path=node.path, label=f"{child.title}.{item.label}"))
        elif not child.items and len(child.children) == 1:
            (grandchild,) = child.children
            grandchild.title = f"{child.title}.{grandchild.title}"
            kept.append(grandchild)
        else:
            kept.append(child)
    node.children = kept


# Geometry.


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float

    def __contains__(self, other: Rect) -> bool:
        return (
            self.x <= other.x
            and self.y <= other.y
            and other.x + other.w <= self.x + self.w
            and other.y + other.h <= self.y + self.h
        )


@dataclass(frozen=True)
class Chip:
    id: str
    item: Item
    lane: int
    rect: Rect
    name: str  # its first line: the name, and the shape when that is narrower than below
    shape: str  # its shape, on the first line or the second
    kind_words: str  # the kind, said
    shape_first: bool  # the shape on the first line, after the name
    changes: tuple[str, ...] = ()  # from the diff: moved, stayed, new, joined, left
    then: Item | None = None  # what it was before the change, when it changed
    hit: bool | None = None  # in an experiment: touched by it (None: not observed)
    outcome: str = ""  # what the experiment did to it, in words

    @property
    def kind(self) -> str:
        return self.item.kind

    @property
    def ghost(self) -> bool:
        """Where a chip stood before the change: its old band, its old lane."""
        return self.item.ghost

    @property
    def detail(self) -> str:
        """Its kind and shape, said."""
        return f"{self.kind_words} {self.shape}"


@dataclass(frozen=True)
class Box:
    id: str
    path: str
    title: str
    rect: Rect
    depth: int
    count: int
    title_x: float = 0.0  # where its title's tag starts (the root's comes after its lane's)
    fresh: bool = False  # not in the picture before the change: it fades in

    @property
    def title_width(self) -> float:
        """Its title's width (the count after it included), for the tag it is drawn on."""
        return text_width(self.title) + (text_width(f" ×{self.count}") if self.count > 1 else 0.0)


@dataclass(frozen=True)
class Lane:
    id: str
    device: str
    role: str  # said after the device's name: what .to() did there
    rect: Rect
    title_at: tuple[float, float]  # where the device's name starts (left end, baseline)
    empty: bool = False  # no tensor is there
    was: str = ""  # the device the chips now here were on before the change (model.to() moved them)
    fresh: bool = False  # not in the picture before the change: it fades in

    @property
    def device_width(self) -> float:
        return text_width(self.device)

    @property
    def role_width(self) -> float:
        return text_width(self.role)

    @property
    def was_at(self) -> float:
        """Where its before mark starts, after the role (in em from the device's name)."""
        return self.device_width + 0.85 + (self.role_width + 0.6 if self.role else 0.0)


@dataclass(frozen=True)
class Outline:
    id: str
    table: str
    lane: int
    rect: Rect
    label: tuple[float, float]  # where its label's text starts (left end, baseline)
    empty: str = ""  # a table none of the chips is in: just its label, which says it is empty
    fresh: bool = False  # not in the picture before the change: it fades in

    @property
    def label_width(self) -> float:
        return LABELS[self.table] + (MONO + text_width(self.empty) if self.empty else 0.0)


@dataclass(frozen=True)
class Diagram:
    variant: str
    width: float
    height: float
    lanes: tuple[Lane, ...]
    boxes: tuple[Box, ...]
    outlines: tuple[Outline, ...]
    chips: tuple[Chip, ...]
    title: str
    desc: tuple[str, ...] = ()  # sentences saying what the picture shows, for a screen reader
    legend: tuple[str, str] = ("", "")  # an experiment's: what a lit chip and a dimmed one mean
    before: str = ""  # the word of the before marks, in the page's language
    lines: tuple[float, float] = LINES  # a chip's two baselines

    @property
    def before_width(self) -> float:
        return text_width(self.before)

    def chip(self, name: str) -> Chip:
        """The chip of a tensor (or a plain member) named as the tables name it."""
        return next(c for c in self.chips if name in c.item.tensors and not c.ghost)

    def ghost(self, name: str) -> Chip | None:
        """Where the chip of ``name`` stood before the change, when that was another band or lane."""
        return next((c for c in self.chips if name in c.item.tensors and c.ghost), None)

    def outline(self, table: str) -> Outline | None:
        return next((o for o in self.outlines if o.table == table and not o.empty), None)


def _shape(item: Item, lang: str) -> str:
    return LIST[lang] if item.shape is None else "[" + ", ".join(map(str, item.shape)) + "]"


def _lines(item: Item, lang: str) -> tuple[bool, float]:
    """Where its shape goes (after the name, or after the kind: whichever makes the chip narrower),
    and the chip's width (a ghost's second line is the word "before" on its tag)."""
    name, kind = text_width(item.label), text_width(KINDS[item.kind][lang])
    shape = MONO + text_width(_shape(item, lang))
    first, second = max(name + shape, kind), max(name, kind + shape)
    least = text_width(BEFORE[lang]) + 0.4 if item.ghost else 0.0
    return first <= second, max(min(first, second), least) + 2 * PAD_X


@dataclass
class _Band:
    sets: tuple[int, int, int]
    chip_w: float
    columns: int = 1
    x: float = 0.0
    min_w: float = 0.0  # as wide as its outline's label needs

    @property
    def w(self) -> float:
        return max(self.columns * self.chip_w + (self.columns - 1) * CHIP_GAP, self.min_w)


class _Plan:
    """The chips of one lane: the band each is in, the columns of each band, packed to the least
    height the width allows."""

    def __init__(self, root: Node, lang: str) -> None:
        self.root = root
        self.cells: dict[tuple[str, tuple], list[Item]] = {}
        self._walk(root)
        widths: dict[tuple, float] = {}
        for (_, sets), cell in self.cells.items():
            widths[sets] = max([widths.get(sets, 0.0), *(_lines(i, lang)[1] for i in cell)])
        self.bands = [_Band(s, widths[s]) for s in BANDS if s in widths]
        self.min_inner = 0.0
        self.depth = self._depth(root)

    def _walk(self, node: Node) -> None:
        for item in node.items:
            self.cells.setdefault((node.path, item.sets), []).append(item)
        for child in node.children:
            self._walk(child)

    def _depth(self, node: Node, depth: int = 0) -> int:
        return max([depth, *(self._depth(c, depth + 1) for c in node.children)])

    def fit_labels(self) -> None:
        """Widen the last band of named_buffers() where its label, right-aligned under it, would run
        into named_parameters()' label, left-aligned under the first band (one row holds both)."""
        for band in self.bands:
            band.min_w = 0.0
        params, buffers = self.of("named_parameters"), self.of("named_buffers")
        if params and buffers:
            first, last = self.bands.index(params[0]), self.bands.index(buffers[-1])
            span = sum(b.w for b in self.bands[first : last + 1]) + BAND_GAP * (last - first)
            # The labels stand LABEL_PAD inside their outlines, which stand OUTER outside the bands.
            need = LABELS["named_parameters"] + LABELS["named_buffers"] + 2 * (LABEL_PAD - OUTER) + 1.0 - span
            if need > 0:
                buffers[-1].min_w = buffers[-1].w + need

    def of(self, table: str) -> list[_Band]:
        return [b for b in self.bands if b.sets in OUTLINES[table]]

    def rows(self, node: Node) -> int:
        """Chip rows of a node's own chips: its tallest band's."""
        cells = ((self.cells.get((node.path, b.sets), []), b.columns) for b in self.bands)
        return max((-(-len(cell) // columns) for cell, columns in cells), default=0)

    def own_height(self, node: Node) -> float:
        rows = self.rows(node)
        return rows * CHIP_H + max(rows - 1, 0) * CHIP_GAP

    def height(self, node: Node | None = None) -> float:
        node = node or self.root
        inner = sum(CHILD_GAP + self.height(c) for c in node.children)
        return TITLE + self.own_height(node) + inner + BOX_BOTTOM

    def inner(self) -> float:
        bands = sum(b.w for b in self.bands) + BAND_GAP * max(len(self.bands) - 1, 0)
        return max(bands, self.min_inner)

    @property
    def edge(self) -> float:
        """From the lane's side to its bands: the nested boxes' borders and the lane's padding."""
        return (self.depth + 1) * INSET + LANE_PAD

    def width(self) -> float:
        self.fit_labels()
        return self.inner() + 2 * self.edge

    def pack(self, limit: float) -> None:
        """Give a band another column where that saves the most height, while the width allows."""
        while True:
            height, best = self.height(), None
            for band in self.bands:
                band.columns += 1
                saved, width = height - self.height(), self.width()
                band.columns -= 1
                if saved > 0 and width <= limit and (best is None or saved > best[0]):
                    best = (saved, band)
            if best is None:
                self.fit_labels()
                return
            best[1].columns += 1


def _lane_role(devices: Sequence[str], lane: int, lang: str, empty: bool, moved: bool) -> str:
    """Said after a lane's device: what .to() did there (``moved``: chips came here by a change)."""
    if len(devices) == 1 and not moved:
        return Text('model.to("{device}"): already there', device=devices[0])[lang]
    if lane == 0 and len(devices) > 1:
        return Text("nothing stayed behind")[lang] if empty else Text("stayed behind")[lang]
    if empty:
        return Text('model.to("{device}"): nothing moved here', device=devices[lane])[lang]
    return f'model.to("{devices[lane]}")'


@dataclass(frozen=True)
class _Part:
    """One lane, arranged."""

    width: float
    height: float
    lane: Lane
    boxes: list[Box]
    outlines: list[Outline]
    chips: list[Chip]


def _arrange(
    root: Node,
    lane: int,
    devices: Sequence[str],
    main: bool,
    lang: str,
    pid: str,
    top: float,
    limit: float,
    was: str,
) -> _Part:
    """One lane: its device's name on the module's box, the boxes nested, the chips in their bands,
    the outlines around the bands; from ``top`` down. ``was``: the device the chips now here were
    on before the change, said after the role (a before mark)."""
    plan = _Plan(root, lang)
    empty = not plan.cells
    ghosts_only = all(i.ghost for cell in plan.cells.values() for i in cell)  # nothing is here now
    role = _lane_role(devices, lane, lang, ghosts_only, bool(was))
    mark = text_width(BEFORE[lang]) + text_width(was) + 1.2 if was else 0.0  # its tag, and a gap

    def titles(role: str) -> tuple[float, float]:
        """The width of the device's pill, its role and mark; of the whole top line."""
        device_w = text_width(devices[lane]) + 0.85 + (text_width(role) + 0.6 if role else 0.0) + mark
        return device_w, INSET + 0.6 + device_w + 1.0 + text_width(root.title) + 0.6

    device_w, titles_w = titles(role)
    title_at = (LANE_PAD + INSET + 0.6, top + TOP + 0.35)
    lane_id = _id(pid + "l", devices[lane])
    if empty and not main:  # a lane with nothing in it: one line that says so (no module's title)
        width = 2 * title_at[0] + device_w - 0.6  # as much room after the line as before it
        the_lane = Lane(lane_id, devices[lane], role, Rect(0.0, top, width, EMPTY_LANE), title_at, True, was)
        return _Part(width, EMPTY_LANE, the_lane, [], [], [])
    nothing = Text("(empty)")[lang]
    stubs = [t for t in OUTLINES if main and not plan.of(t)]  # tables that list none of the chips
    labels = {t: LABELS[t] + (MONO + text_width(nothing) if t in stubs else 0.0) for t in OUTLINES}
    bottom_row = [t for t in ("named_parameters", "named_buffers") if plan.of(t) or t in stubs]
    # A label stands LABEL_PAD inside its outline's end, which stands OUTER outside the bands; a
    # table listing nothing has no outline: its label stands LABEL_PAD inside the bands' end.
    need = sum(labels[t] + LABEL_PAD - (OUTER if plan.of(t) else 0.0) for t in bottom_row)
    need += 1.0 if len(bottom_row) > 1 else 0.0
    plan.min_inner = max(titles_w + 2 * LANE_PAD - 2 * plan.edge, need)
    plan.pack(limit)
    labels_need = need  # what the labels' row needs of the bands, whatever the top line

    def position() -> float:
        x = plan.edge
        for band in plan.bands:
            band.x = x
            x += band.w + BAND_GAP
        return plan.inner()

    inner = position()
    if len(bottom_row) == 2:
        # The bottom row: named_parameters()' label from its outline's left end, named_buffers()'
        # up to its right end (or the bands' end, for a table that lists nothing), 1 em between.
        params, buffers = plan.of("named_parameters"), plan.of("named_buffers")
        start = (params[0].x - OUTER if params else plan.edge) + LABEL_PAD + labels["named_parameters"] + 1.0
        end = buffers[-1].x + buffers[-1].w + OUTER if buffers else plan.edge + inner
        short = start - (end - LABEL_PAD - labels["named_buffers"])
        if short > 0:
            if buffers:
                buffers[-1].min_w = buffers[-1].w + short
            else:
                plan.min_inner = labels_need = inner + short
            inner = position()
    width = inner + 2 * plan.edge
    right = plan.edge + inner  # the bands' right end

    line = top + TOP  # the top line: the lane's device and the module's name, on its box
    state = plan.of("state_dict")
    state_right = state[-1].x + state[-1].w + 0.6 if state else right

    # state_dict()'s label, right-aligned on its outline's top edge, shares the line when it clears
    # the titles; else it has a row of its own.
    def clears() -> bool:
        return state_right - LABEL_PAD - labels["state_dict"] >= LANE_PAD + titles_w + 0.5

    label_row = 0.0
    if (state or "state_dict" in stubs) and not clears():
        if lane and len(devices) > 1:  # the target lane's "model.to(...)" gives way: its pill says it
            role = ""
            device_w, titles_w = titles(role)
            # A shorter top line: the lane keeps only the width its bands and labels need.
            plan.min_inner = max(titles_w + 2 * LANE_PAD - 2 * plan.edge, labels_need)
            inner = position()
            width, right = inner + 2 * plan.edge, plan.edge + inner
        label_row = 0.0 if clears() else LABEL
    body = line + 1.15 + label_row  # the first chips: below the top line's labels

    boxes: list[Box] = []
    chips: list[Chip] = []

    def place(node: Node, y: float, depth: int) -> float:
        start = y
        y = y + TITLE if depth else body
        for band in plan.bands:
            cell = plan.cells.get((node.path, band.sets), [])
            w = band.chip_w  # its band may be wider (its outline's label): the chip keeps its own width
            for n, item in enumerate(cell):
                col, row = n % band.columns, n // band.columns
                rect = Rect(band.x + col * (band.chip_w + CHIP_GAP), y + row * (CHIP_H + CHIP_GAP), w, CHIP_H)
                shape_first = _lines(item, lang)[0]
                kind = KINDS[item.kind][lang]
                chip_id = _id(pid + ("g" if item.ghost else "c"), item.key)
                chips.append(
                    Chip(chip_id, item, lane, rect, item.label, _shape(item, lang), kind, shape_first)
                )
        y += plan.own_height(node)
        for child in node.children:
            y = place(child, y + CHILD_GAP, depth + 1)
        y += BOX_BOTTOM
        inset = LANE_PAD + depth * INSET
        rect = Rect(inset, start, width - 2 * inset, y - start)
        # The module's name after its lane's pill and role: a gap of line between, none after a bare pill.
        title_x = inset + 0.6 + (device_w + (1.0 if role or was else 0.55) if not depth else 0.0)
        key = f"{devices[lane]}:{node.path}"
        boxes.append(Box(_id(pid + "b", key), node.path, node.title, rect, depth, node.count, title_x))
        return y

    bottom = place(root, line, 0)
    height = bottom + (LABEL + 0.1 if bottom_row else 0.0) + 0.2 - top
    boxes.reverse()  # outer boxes first: drawn under the inner ones
    outlines = []
    for table in ("state_dict", "named_parameters", "named_buffers"):
        bands = plan.of(table)
        # The module's lane keeps one id per table, so its outlines glide from device to device; a
        # lane of ghosts (tables a restyled chip left, the module moved away) has its own.
        oid = f"{pid}o-{table}" if main else _id(f"{pid}o-{table}", devices[lane])
        if not bands and table not in stubs:
            continue
        if bands:
            outer = STATE_OUTER if table == "state_dict" else OUTER
            x0, x1 = bands[0].x - outer, bands[-1].x + bands[-1].w + outer
        if table == "state_dict":
            y0 = line + 0.45 + label_row
            if not bands:
                x1 = right
                x0 = x1 - labels[table] - 2 * LABEL_PAD
            rect = Rect(x0, y0, x1 - x0, bottom - BOX_BOTTOM + 0.2 - y0 if bands else 0.0)
            label = (x1 - LABEL_PAD - labels[table], y0 + 0.35)
        else:
            y0, y1 = body - 0.2, bottom + LABEL / 2
            if not bands:
                x0 = plan.edge if table == "named_parameters" else right - labels[table] - 2 * LABEL_PAD
                x1 = x0 + labels[table] + 2 * LABEL_PAD
                y0 = y1
            left = x0 + LABEL_PAD if table == "named_parameters" else x1 - LABEL_PAD - labels[table]
            rect = Rect(x0, y0, x1 - x0, y1 - y0)
            label = (left, y1 + 0.35)
        outlines.append(Outline(oid, table, lane, rect, label, nothing if table in stubs else ""))
    the_lane = Lane(lane_id, devices[lane], role, Rect(0.0, top, width, height), title_at, empty, was)
    return _Part(width, height, the_lane, boxes, outlines, chips)


def _only(root: Node, devices: Sequence[str], lane: int) -> Node:
    """The tree with only the chips in one lane, and the boxes holding them."""

    def keep(node: Node) -> Node | None:
        children = [k for c in node.children if (k := keep(c)) is not None]
        own = [i for i in node.items if _lane_of(i, devices) == lane]
        if not own and not children and node.path:
            return None
        return Node(node.path, node.title, own, children)

    return keep(root) or Node("", root.title)


def _lane_of(item: Item, devices: Sequence[str]) -> int | None:
    return devices.index(item.device) if item.device in devices else None


def layout(
    report: LabReport,
    lang: str,
    variant: str,
    prefix: str,
    ghosts: Sequence[Item] = (),
    moved_from: str = "",
) -> Diagram:
    """The diagram of ``report`` as it stands: a lane per device, one under the other, the module's
    box in each with the tensors there. ``draw`` adds the marks of a change: ``ghosts``, where
    chips stood before it (laid out as chips are, in their old bands and lanes), and ``moved_from``,
    the device model.to() took the chips in the module's lane from."""
    found = [*collapse(items(report)), *ghosts]
    made = [i.device_before for i in found]
    devices = [
        d for d in dict.fromkeys([*made, *(g.device for g in ghosts), report.spec.device]) if d != "none"
    ]
    root = tree(found)
    root.title = lookup(report.spec.preset).class_name
    tracked = [_lane_of(i, devices) for i in found if i.sets != (0, 0, 0) and not i.ghost]
    main = max((t for t in tracked if t is not None), default=len(devices) - 1)
    target = devices.index(report.spec.device)
    pid = f"{prefix}{variant[0]}"
    parts, y = [], 0.0
    for lane in range(len(devices)):
        sub = _only(root, devices, lane)
        was = moved_from if lane == target else ""
        parts.append(_arrange(sub, lane, devices, lane == main, lang, pid, y, MAX_WIDTH[variant], was))
        y += parts[-1].height + LANE_GAP
    width = max(p.width for p in parts)
    # One column: every lane and box as wide as the widest, the outlines where they were.
    lanes = [replace(p.lane, rect=replace(p.lane.rect, w=width)) for p in parts]
    boxes = [replace(b, rect=replace(b.rect, w=width - 2 * b.rect.x)) for p in parts for b in p.boxes]
    return Diagram(
        variant=variant,
        width=round(width, 3),
        height=round(y - LANE_GAP, 3),
        lanes=tuple(lanes),
        boxes=tuple(boxes),
        outlines=tuple(o for p in parts for o in p.outlines),
        chips=tuple(c for p in parts for c in p.chips),
        title=Text(
            'The module {name} after model.to("{device}"): where each tensor is, and which tables list it',
            name=root.title,
            device=report.spec.device,
        )[lang],
        before=BEFORE[lang],
    )


# A change and an experiment, marked on the chips.


def changes(item: Item, diff: LabDiff, before: dict[str, Item]) -> tuple[str, ...]:
    """What the diff says happened to a chip's tensors: moved (to another device), stayed (the
    module moved, this did not), joined or left a table, new (it was not there)."""
    if diff.empty or diff.preset:
        return ()
    found: list[str] = []
    old = before.get(item.key)
    if old is None:
        return ("new",)
    # A plain tensor is in no table: only its member's row says it moved (restyled on another
    # device). Joining or leaving a table is read from the tables, which list every tensor.
    for member in item.members:
        if "device_after" in diff.members.get(member, {}):
            found.append("moved")
    for table in TABLES:
        rows = diff.tables.get(table)
        if rows is None:
            continue
        for name in item.tensors:
            if name in rows.moved:
                found.append("moved")
            if name in rows.added:
                found.append("joined")
            if name in rows.removed:
                found.append("left")
    if diff.device and item.device == old.device:  # a tensor that moved is on another device now
        found.append("stayed")
    return tuple(dict.fromkeys(found))


def _outcomes(experiment: ExperimentResult, saved: set[str]) -> dict[str, tuple[bool, Text]]:
    """Each observed tensor's name -> (touched, what happened, in words), for the experiments whose
    point is which tensors they touch; none for the others, or where torch refused a step.
    ``saved``: the names state_dict() gives the checkpoint."""
    if experiment.error is not None:
        return {}
    kind, found = experiment.experiment, {}
    for t in experiment.tensors:
        if kind == "save_load" and t.changed is not None:
            # Equal after the load is not enough: a tensor the checkpoint does not carry (a
            # non-persistent buffer, a plain attribute) is equal when the fresh module makes it alike.
            back = t.name in saved and not t.changed
            found[t.name] = (back, BACK if back else NOT_BACK if t.name in saved else NOT_SAVED)
        elif kind == "cast":
            cast = t.dtype_after != t.dtype_before
            dtype = t.dtype_after if cast else t.dtype_before
            found[t.name] = (
                cast,
                Text("cast to {dtype}", dtype=dtype) if cast else Text("kept {dtype}", dtype=dtype),
            )
        elif kind == "step":
            touched = t.name in experiment.facts.get("changed_by_optimizer", ())
            found[t.name] = (touched, STEPPED if touched else NOT_STEPPED)
        elif kind == "forward" and t.changed is not None:
            found[t.name] = (t.changed, FORWARD if t.changed else SAME_VALUES)
        elif kind == "identity":
            found[t.name] = (not t.same_object, SAME_OBJECT if t.same_object else NEW_OBJECT)
        elif kind == "meta_roundtrip":
            garbage = t.name in experiment.facts.get("needs_reinit", ())
            found[t.name] = (garbage, GARBAGE if garbage else SAME_VALUES)
    return found


BACK, NOT_BACK = Text("came back from the checkpoint"), Text("did not come back")
NOT_SAVED = Text("not in the checkpoint")
STEPPED, NOT_STEPPED = Text("changed by the optimizer step"), Text("not changed by the step")
SAME_VALUES, NEW_OBJECT = Text("kept its values"), Text("a new Python object")
FORWARD, SAME_OBJECT = Text("changed by the forward pass"), Text("the same Python object")
GARBAGE = Text("holds uninitialised memory")
# What a lit chip and a dimmed one mean, per experiment.
LEGENDS = {
    "save_load": (BACK, NOT_BACK),
    "cast": (Text("dtype changed"), Text("dtype kept")),
    "step": (STEPPED, NOT_STEPPED),
    "forward": (FORWARD, SAME_VALUES),
    "identity": (NEW_OBJECT, SAME_OBJECT),
    "meta_roundtrip": (GARBAGE, SAME_VALUES),
}


def _outcome(chip: Chip, found: dict[str, tuple[bool, Text]]) -> tuple[bool, Text] | None:
    """A chip's outcome: its tensors' (when they agree); a plain attribute's, or a plain list's
    layers' (torch treats a list's layers alike: the first one's, as the matrix says)."""
    seen = []
    for name in chip.item.tensors:
        if chip.item.kind == "plain":
            names = [name + ATTRIBUTE, name, *(n for n in found if n.startswith(name + "["))]
            names = [n for n in names if n in found][:1]
        else:
            names = [name] if name in found else []
        seen += [found[n] for n in names]
    if not seen or len({hit for hit, _ in seen}) > 1:
        return None
    return seen[0]


def draw(
    report: LabReport,
    lang: str,
    variant: str = WIDE,
    before: LabReport | None = None,
    diff: LabDiff | None = None,
    experiment: ExperimentResult | None = None,
    prefix: str = "d",
) -> Diagram:
    """The diagram of ``report``, marked with what ``diff`` says changed since ``before`` and with
    what ``experiment`` did to each chip.

    The marks of a change: each chip says how it changed (moved, stayed, joined or left a table,
    new); a chip that changed band or lane by itself (its style changed) leaves a ghost where it
    stood, in the tables that listed it then; the module's lane says which device model.to() took
    its chips from; what the picture did not hold before fades in."""
    if before is None or diff is None or diff.empty or diff.preset:
        now = layout(report, lang, variant, prefix)
        return _experiment(report, now, list(now.chips), experiment, lang)
    then = {i.key: i for i in collapse(items(before))}
    found = {i.key: changes(i, diff, then) for i in collapse(items(report))}
    ghosts = [
        replace(then[key], key="g:" + key, ghost=True)
        for key, said in found.items()
        if key in then and ({"joined", "left"} & set(said) or ("moved" in said and not diff.device))
    ]
    moved_from = diff.device[0] if diff.device and any("moved" in said for said in found.values()) else ""
    now = layout(report, lang, variant, prefix, ghosts, moved_from)
    old = layout(before, lang, variant, prefix)
    seen = {e.id for e in (*old.lanes, *old.boxes, *old.outlines)}
    now = replace(
        now,
        lanes=tuple(replace(e, fresh=e.id not in seen) for e in now.lanes),
        boxes=tuple(replace(e, fresh=e.id not in seen) for e in now.boxes),
        outlines=tuple(replace(e, fresh=e.id not in seen) for e in now.outlines),
    )
    chips = [
        c
        if c.ghost
        else replace(
            c, changes=(said := found.get(c.item.key, ())), then=then.get(c.item.key) if said else None
        )
        for c in now.chips
    ]
    return _experiment(report, now, chips, experiment, lang)


def _experiment(
    report: LabReport, now: Diagram, chips: list[Chip], experiment: ExperimentResult | None, lang: str
) -> Diagram:
    """``now`` with ``chips``, lit by what ``experiment`` did to each, and its sentences."""
    legend = ("", "")
    if experiment is not None and experiment.experiment in LEGENDS:
        outcomes = _outcomes(experiment, {row.name for row in report.state_dict})
        if outcomes:
            for n, chip in enumerate(chips):
                outcome = None if chip.ghost else _outcome(chip, outcomes)
                if outcome is not None:
                    chips[n] = replace(chip, hit=outcome[0], outcome=outcome[1][lang])
            lit, dimmed = LEGENDS[experiment.experiment]
            legend = (lit[lang], dimmed[lang])
    return replace(now, chips=tuple(chips), desc=describe(report, chips, lang), legend=legend)


def _tables(sets: tuple[int, int, int]) -> str:
    return ", ".join(f"{t}()" for t, i in TABLE_OF_SET.items() if sets[i])


def describe(report: LabReport, chips: Sequence[Chip], lang: str) -> tuple[str, ...]:
    """The picture in sentences, for a screen reader: each chip's kind, shape, device and tables,
    as the tables say them; what moved; the members torch refused."""
    said = []
    for chip in chips:
        if chip.ghost:
            continue
        item = chip.item
        name = item.name
        if len(item.tensors) > 1:
            name = Text("{name} ({count} alike)", name=name, count=len(item.tensors))[lang]
        tables = _tables(item.sets)
        where = (
            Text(
                "{name}: {kind}, on {device}, in {tables}.",
                name=name,
                kind=chip.detail,
                device=item.device,
                tables=tables,
            )
            if tables
            else Text(
                "{name}: {kind}, on {device}, in no table.", name=name, kind=chip.detail, device=item.device
            )
        )
        said.append(where[lang])
        then = chip.then
        if "moved" in chip.changes and then is not None:
            said.append(
                Text("It moved from {before} to {device}.", before=then.device, device=item.device)[lang]
            )
        if {"joined", "left"} & set(chip.changes) and then is not None:
            tables = _tables(then.sets)
            before = (
                Text("Before the change it was in {tables}.", tables=tables)
                if tables
                else Text("Before the change it was in no table.")
            )
            said.append(before[lang])
        if "stayed" in chip.changes:
            said.append(Text("It stayed on {device}.", device=item.device)[lang])
        if chip.outcome:
            said.append(Text("In the experiment: {outcome}.", outcome=chip.outcome)[lang])
    refused = [m.name for m in report.members if m.refused]
    if refused:
        said.append(Text("Refused by torch, so in no lane: {names}.", names=", ".join(refused))[lang])
    return tuple(said)
