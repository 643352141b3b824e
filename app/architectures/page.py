"""An architecture's page model: the module tree, the byte map, the grouped tensor tables and the
meta round trip, from the same functions as /api/architectures."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

import torch

from app.architectures import configs
from app.architectures import memo as architecture_memo
from app.architectures.activations import ModuleShape
from app.architectures.catalogue import (
    ARCHITECTURES,
    EXPERIMENT_FIT,
    MAX_BYTES,
    OFF,
    Architecture,
    ArchitectureError,
    count_note,
    devices_for,
    transformers_module,
)
from app.architectures.config_store import ConfigStore, elements, too_large
from app.architectures.isolated import Budget
from app.architectures.module_tree import (
    ModuleNode,
    ModuleTree,
    Repeat,
    TensorGroup,
    collapsed,
    grouped,
    runs,
)
from app.architectures.planner import DEFAULT_BATCH, RECIPES, Plan, PlanInput
from app.architectures.roundtrip import RoundTrip
from app.architectures.treemap import Tile, treemap
from app.langs import LANGS, Text, rendered
from app.web.html import View

PAGE = "architectures/architectures.html"
MAX_FILTER = 100  # characters of the filter box that are read


@dataclass(frozen=True)
class ArchitecturePage:
    """What one architecture's page shows; ``arch`` is None on the list page."""

    view: View
    arch: Architecture | None = None
    device: str = "meta"
    max_bytes: int = MAX_BYTES
    tree: ModuleTree | None = None
    tiles: list[Tile] = field(default_factory=list)
    tables: dict[str, list[TensorGroup]] = field(default_factory=dict)
    roundtrip: RoundTrip | None = None
    q: str = ""
    error: str | None = None
    plan: Plan | None = None
    asked: dict[str, str] = field(default_factory=dict)  # the planner's fields as the URL gave them
    plan_error: str | None = None
    plan_url: str = ""  # where the plan of the default input is (the page loads it after itself)
    devices: tuple[str, ...] = ()  # where it can be built here
    extra: dict[str, str] = field(default_factory=dict)  # query kept in its links (c= of a pasted config)
    pasted: str = ""  # the list page: the config.json a refusal sends back to its form
    lab_link: str = ""  # a pasted config small enough for the lab: where it opens there
    not_in_lab: str = ""  # one that is not: why

    def context(self) -> dict:
        return {
            "page": self,
            "view": self.view,
            "langs": LANGS,
            "architectures": ARCHITECTURES,
            "fits": EXPERIMENT_FIT,
            "devices": self.devices,
            "recipes": {r.id: r for r in RECIPES},
            "runs": self.runs,
            "note": count_note(self.arch.id) if self.arch and self.arch.id in ARCHITECTURES else None,
            "extra": "".join(f"&{k}={v}" for k, v in self.extra.items()),
            # What built the figures shown (a pasted config's child runs this same install).
            "versions": {"torch": torch.__version__, "transformers": transformers_module().__version__}
            if self.tree
            else {},
        }

    def shape_rows(self) -> list[tuple[str, ModuleShape, int]]:
        """The plan's output shapes, module by module: a run of identical blocks (the tree's
        layers.{0..31}) once, as its first block's rows named with the span, when every block
        returns the same shapes; (name shown, row, how many blocks it stands for)."""
        assert self.plan is not None and self.tree is not None
        repeats: list[Repeat] = []

        def walk(node: ModuleNode) -> None:
            for item in self.runs(node.children):
                if isinstance(item, Repeat):
                    repeats.append(item)
                    walk(item.first)
                else:
                    walk(item)

        walk(self.tree.root)
        by_path = {m.path: m for m in self.plan.shapes}
        shown: dict[str, tuple[str | None, int]] = {}  # path -> (name shown, blocks); None drops it
        for r in repeats:
            first, last = r.indices
            blocks = {
                k: {
                    p[len(f"{r.stem}{k}") :]: m
                    for p, m in by_path.items()
                    if p == f"{r.stem}{k}" or p.startswith(f"{r.stem}{k}.")
                }
                for k in range(first, last + 1)
            }
            same = all(
                {rest: (m.class_name, m.shapes, m.dtypes) for rest, m in blocks[k].items()}
                == {rest: (m.class_name, m.shapes, m.dtypes) for rest, m in blocks[first].items()}
                for k in blocks
            )
            if not same:
                continue
            for k, rows in blocks.items():
                for rest, m in rows.items():
                    shown[m.path] = (
                        (f"{r.stem}{{{first}..{last}}}{rest}", len(blocks)) if k == first else (None, 0)
                    )
        found = []
        for m in self.plan.shapes:
            name, count = shown.get(m.path, (m.path, 1))
            if name is not None:
                found.append((name, m, count))
        return found

    def runs(self, children: list[ModuleNode]) -> list[ModuleNode | Repeat]:
        """A node's children, identical numbered blocks as one (layers.{0..31})."""
        assert self.tree is not None
        rows = {r.name: r for r in [*self.tree.named_parameters, *self.tree.named_buffers]}
        return runs(children, rows)


def _matching(groups: list[TensorGroup], q: str) -> list[TensorGroup]:
    """The groups whose rows name ``q`` (those rows only); without a filter, identical numbered
    blocks as one group (model.layers.{0..31})."""
    if not q:
        return collapsed(groups)
    kept = [(g, [r for r in g.rows if q in r.name]) for g in groups]
    return [g.model_copy(update={"rows": rows, "count": len(rows)}) for g, rows in kept if rows]


PLAN_FIELDS = ("batch", "tokens", "image", "context")


def _whole(name: str, value: str) -> int | None:
    if value == "":
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        shown = repr(value[:20])
        raise ArchitectureError(422, Text("{name}: a whole number, not {value}", name=name, value=shown))
    return int(value)


def plan_input(arch_id: str, asked: dict[str, str]) -> PlanInput:
    """The planner's input from a page's fields (empty ones take the defaults), checked."""
    numbers = {name: _whole(name, asked.get(name, "")) for name in PLAN_FIELDS}
    batch = numbers.pop("batch") or DEFAULT_BATCH
    return architecture_memo.plan_input(arch_id, batch, **numbers)


def page_of(
    view: View,
    arch_id: str,
    device: str,
    q: str,
    on: bool,
    asked: dict[str, str] | None = None,
    max_bytes: int = MAX_BYTES,
) -> tuple[ArchitecturePage, int]:
    """The page model and its status; a refusal is said on the page, with torch's or our message.
    The planner's refusal (a field out of range) is said in its section, the rest of the page shown."""
    asked = {k: v[:20] for k, v in (asked or {}).items() if k in PLAN_FIELDS}
    try:
        if not on:
            raise ArchitectureError(404, OFF)
        arch = ARCHITECTURES.get(arch_id)
        tree = architecture_memo.tree(arch_id, device, max_bytes)
    except ArchitectureError as exc:
        return ArchitecturePage(view, arch=None, error=exc.text(view.lang)), exc.status
    assert arch is not None
    q = q[:MAX_FILTER]
    tables = {
        "named_parameters()": _matching(grouped(tree.named_parameters), q),
        "named_buffers()": _matching(grouped(tree.named_buffers), q),
        "state_dict()": _matching(grouped(tree.state_dict), q),
    }
    trip = architecture_memo.roundtrip(arch_id) if arch.tiny else None
    found, plan_error, status = None, None, 200
    if asked:  # asked for: measured now (the default one comes after the page, by htmx or a link)
        try:
            found = architecture_memo.arch_plan(arch_id, plan_input(arch_id, asked))
        except ArchitectureError as exc:
            plan_error, status = exc.text(view.lang), exc.status
    keep = {"device": device, "q": q} | ({"lang": view.lang} if view.lang_chosen else {})
    keep |= {"present": "1"} if view.present else {}
    plan_url = f"/architectures/{arch_id}?" + urlencode({"batch": DEFAULT_BATCH, **keep})
    page = ArchitecturePage(
        view,
        arch,
        device,
        max_bytes,
        tree=tree,
        devices=devices_for(arch, max_bytes),
        tiles=treemap(tree.root),
        tables=tables,
        roundtrip=trip,
        q=q,
        plan=found,
        asked=asked,
        plan_error=plan_error,
        plan_url=plan_url,
    )
    return page, status


def config_page_of(
    view: View,
    config: dict | None,
    c: str,
    q: str,
    asked: dict[str, str],
    budget: Budget,
    store: ConfigStore,
) -> tuple[ArchitecturePage, int]:
    """A pasted config's page (``config``, or the ``c=`` of its permalink): the same sections as a
    catalogue architecture's, made in an isolated child; refusals said on the page. Within the
    lab's cap (``store``) it links to the lab, else it says why not."""
    asked = {k: v[:20] for k, v in asked.items() if k in PLAN_FIELDS}
    try:
        config = config if config is not None else configs.decode(c)
        numbers = {name: _whole(name, asked.get(name, "")) for name in PLAN_FIELDS}
        report = architecture_memo.config_report(config, numbers, budget)
    except ArchitectureError as exc:
        return ArchitecturePage(view, error=exc.text(view.lang)), exc.status
    arch = configs.architecture(report.config, report.config_class)
    q = q[:MAX_FILTER]
    tree = report.tree
    tables = {
        "named_parameters()": _matching(grouped(tree.named_parameters), q),
        "named_buffers()": _matching(grouped(tree.named_buffers), q),
        "state_dict()": _matching(grouped(tree.state_dict), q),
    }
    plan_error = rendered(report.plan_error)[view.lang] if report.plan_error else None
    count, keep = elements(report), {"lang": view.lang} if view.lang_chosen else {}
    lab_link = "/architectures/config/lab?" + urlencode({"c": report.c, **keep}) if store.fits(count) else ""
    page = ArchitecturePage(
        view,
        arch,
        "meta",
        tree=tree,
        devices=("meta",),
        tiles=treemap(tree.root),
        tables=tables,
        roundtrip=report.roundtrip,
        q=q,
        plan=report.plan,
        asked=asked,
        plan_error=plan_error,
        extra={"c": report.c},
        lab_link=lab_link,
        not_in_lab="" if lab_link else too_large(count, store.max_elements)[view.lang],
    )
    return page, 422 if plan_error and asked else 200
