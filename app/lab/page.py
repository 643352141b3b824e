"""The lab page: a small pipeline, query -> page model -> blocks -> render.

The form's fields are named like the API query (``preset``, ``device``, ``style.<member>``), so a
page URL is a permalink and the same spec the JSON API takes. ``app.web.html`` owns the htmx rule.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from app.lab import devices, diagram, memo
from app.lab import query as lab_query
from app.lab.diff import LabDiff, compare, with_matrix
from app.lab.experiments import EXPERIMENTS, ExperimentResult
from app.lab.matrix import Matrix, matrix
from app.lab.presets import PRESETS, Preset, lookup
from app.lab.query import Bounds, LabQuery
from app.lab.report import LabReport
from app.lab.spec import LabSpec, SpecError, members
from app.lab.styles import ALL_STYLES
from app.langs import LANGS
from app.web.html import View

PAGE = "lab/lab.html"
TABLE = ("table", "1")  # the members' facts shown as a table on the first screen, not as the picture
BLOCKS = ("results", "announce", "experiment_controls", "more")  # what every htmx swap replaces


def page_query(pairs: list[tuple[str, str]], bounds: Bounds) -> LabQuery:
    """What a lab page's URL asks for (``app.lab.query`` reads it, as it reads every lab URL)."""
    return lab_query.read_page(pairs, bounds, lab_query.default_device(bounds.devices))


def previous_spec(url: str | None, bounds: Bounds) -> LabSpec | None:
    """The spec of the page an htmx request came from (its HX-Current-URL), if readable.

    The HTTP cache keys pages by this (``spec.query()``), so it must stay all the page reads of the URL.
    """
    if not url:
        return None
    try:
        parts = urlsplit(url)
        if parts.path not in ("/", "") or not (parts.path or parts.query):
            return None  # not the lab page (or nothing at all): nothing to compare with
        return page_query(parse_qsl(parts.query, keep_blank_values=True), bounds).spec
    except (SpecError, ValueError):  # or a URL urlsplit cannot read (``http://[``)
        return None


def link(spec: LabSpec, view: View, extra: Sequence[tuple[str, str]] = (), **changes: str | bool) -> str:
    """A URL for this spec, experiment and view, with some view options changed (``table``: the
    members' facts as a table instead of the picture, a lab page's own view option, in ``extra``)."""
    lang = changes.get("lang", view.lang if view.lang_chosen else None)
    present = changes.get("present", view.present)
    pairs = list(extra)
    if "table" in changes:
        pairs = [p for p in pairs if p != TABLE] + ([TABLE] if changes["table"] else [])
    pairs += [("lang", lang)] if lang else []
    pairs += [("present", "1")] if present else []
    pairs += [("embed", "1")] if view.embed else []
    tail = urlencode(pairs)
    return "/?" + spec.query() + ("&" + tail if tail else "")


@dataclass(frozen=True)
class LabPage:
    """Everything one request's page shows, built once from the query."""

    query: LabQuery
    experiment: ExperimentResult | None
    report: LabReport
    matrix: Matrix
    diff: LabDiff
    before: LabReport | None = None  # the report of the page it was swapped from: the diagram's marks
    ignored: tuple[str, ...] = ()  # style.* of another module, dropped and said
    controls: bool = False  # the member controls change too (another module, a member added or dropped)
    table: bool = False  # the members' facts as a table where the picture would be (``table=1``)

    @property
    def spec(self) -> LabSpec:
        return self.query.spec

    @property
    def experiment_pairs(self) -> list[tuple[str, str]]:
        return self.query.experiment_pairs()

    @property
    def view_pairs(self) -> list[tuple[str, str]]:
        """The URL's pairs after the spec: the experiment's, then the page's own view option."""
        return self.experiment_pairs + ([TABLE] if self.table else [])


def lab_page(query: LabQuery, view: View, previous: LabSpec | None, as_table: bool = False) -> LabPage:
    """The page model of a query read by ``app.lab.query``, marked against the spec of the page it
    was swapped from (``previous``); its experiment is run once (``memo.experiment``)."""
    spec = query.spec
    report, table = memo.report(spec), matrix(spec)
    before = memo.report(previous) if previous is not None else None
    diff = compare(before, report)
    if before is not None:
        diff = with_matrix(diff, matrix(before.spec), table)
    controls = bool(diff.preset) or (before is not None and list(before.spec.styles) != list(spec.styles))
    return LabPage(
        query=query,
        experiment=memo.experiment(query) if query.experiment else None,
        report=report,
        matrix=table,
        diff=diff,
        before=before,
        # A swap to another module still sent the old module's members: expected to go, not reported.
        ignored=() if view.htmx and controls else query.ignored,
        controls=controls,
        table=as_table,
    )


def read_page(pairs: list[tuple[str, str]], view: View, current_url: str | None, bounds: Bounds) -> LabPage:
    """The page model of a lab URL; a spec that cannot be shown raises its SpecError."""
    previous = previous_spec(current_url, bounds) if view.htmx else None
    return lab_page(page_query(pairs, bounds), view, previous, as_table=TABLE in pairs)


def blocks_of(page: LabPage, view: View) -> tuple[str, ...]:
    """The blocks an htmx swap of this page replaces."""
    blocks = BLOCKS + (() if view.embed else ("links",))  # an embedded lab has no header to update
    return blocks + (("controls",) if page.controls else ())


owners = diagram.owners  # each tensor's name -> its member, for the linked highlight


def diagrams(page: LabPage, lang: str) -> dict[str, diagram.Diagram]:
    """The page's picture in both arrangements (wide, beside the members; narrow, on a phone), marked
    with the page's diff and experiment."""
    return {
        variant: diagram.draw(page.report, lang, variant, page.before, page.diff, page.experiment)
        for variant in (diagram.WIDE, diagram.NARROW)
    }


def picture(report: LabReport, lang: str) -> dict[str, diagram.Diagram]:
    """A report's picture in both arrangements, unmarked: a lesson step's module before its change."""
    return {variant: diagram.draw(report, lang, variant) for variant in (diagram.WIDE, diagram.NARROW)}


def code_lines(report: LabReport) -> list[tuple[str, str | None]]:
    """The script's lines, each with the one member it is about (for the linked highlight)."""
    names = [m.name for m in report.members]
    marks = {name: (f"self.{name} ", repr(name), json.dumps(name)) for name in names}
    lines = []
    for line in report.code.splitlines():
        about = [name for name in names if any(mark in line for mark in marks[name])]
        lines.append((line, about[0] if len(about) == 1 else None))
    return lines


def without(spec: LabSpec, view: View, name: str) -> str:
    """The permalink of this lab without one custom member: the row's remove link."""
    styles = {k: v for k, v in spec.styles.items() if k != name}
    shapes = {k: v for k, v in spec.shapes.items() if k != name}
    return link(spec.model_copy(update={"styles": styles, "shapes": shapes}), view)


def menu(spec: LabSpec | None) -> dict[str, Preset]:
    """The module menu: the listed presets, and the one shown where it is not listed (a pasted
    config's), so the form sends it back."""
    if spec is None or spec.preset in PRESETS:
        return PRESETS
    return {**PRESETS, spec.preset: lookup(spec.preset)}


def context(view: View, page: LabPage | None = None, error: str | None = None) -> dict:
    spec = page.spec if page else None
    pairs = page.view_pairs if page else ()
    return {
        "spec": spec,
        "report": page.report if page else None,
        "matrix": page.matrix if page else None,
        "diff": page.diff if page else None,
        "members": {m.name: m for m in members(spec)} if spec else {},
        "owners": owners(page.report) if page else {},
        "diagrams": diagrams(page, view.lang) if page and not page.table else {},
        "code_lines": code_lines(page.report) if page else [],
        "without": lambda name: without(spec, view, name) if spec else "/",
        "experiments": EXPERIMENTS,
        "experiment": page.experiment if page else None,
        "experiment_pairs": page.experiment_pairs if page else (),
        "table": page.table if page else False,
        "ignored": page.ignored if page else (),
        "device_asked": page.query.device_asked if page else None,
        "edit_error": page.query.edit_error.text(view.lang) if page and page.query.edit_error else None,
        "view": view,
        "presets": menu(spec),
        "styles": ALL_STYLES,
        "devices": devices.available(),
        "link": lambda **changes: link(spec, view, pairs, **changes) if spec else "/",
        "langs": LANGS,
        "error": error,
    }
