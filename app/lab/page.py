"""The lab page: a small pipeline, query -> page model -> blocks -> render.

The form's fields are named like the API query (``preset``, ``device``, ``style.<member>``), so a
page URL is a permalink and the same spec the JSON API takes. ``app.web.html`` owns the htmx rule.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from app.lab import devices, memo
from app.lab.diff import LabDiff, compare, with_matrix
from app.lab.experiments import EXPERIMENTS, ExperimentResult, run_experiment
from app.lab.matrix import Matrix, matrix
from app.lab.presets import PRESETS
from app.lab.report import LabReport
from app.lab.spec import (
    SHAPE_PREFIX,
    STYLE_PREFIX,
    LabSpec,
    SpecError,
    from_query,
    loaded_into,
    members,
    resolve,
)
from app.lab.styles import ALL_STYLES
from app.langs import LANGS
from app.web.html import View

# The experiment to run and its options ride in the URL beside the spec, named like the API's.
EXPERIMENT_PARAMS = ("experiment", *sorted({name for e in EXPERIMENTS.values() for name in e.params}))
# The custom module's form: add the member named ``new`` (on ``add``), or drop one.
EDIT_PARAMS = ("add", "new", "new_shape", "new_style", "drop")
PAGE_PARAMS = ("lang", "present", "embed", *EXPERIMENT_PARAMS, *EDIT_PARAMS)  # not part of the spec
INTO = "into."  # load_into: the member styles of the module loaded into
DEFAULT_PRESET = "testmodel"  # the richer tutorial: a parameter, a buffer and a plain tensor side by side
PAGE = "lab/lab.html"
BLOCKS = ("results", "announce", "experiment_controls", "more")  # what every htmx swap replaces


def edited(query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The query with the custom module's edit applied: a member added (or replaced), or dropped.

    The new member's fields ride in every submission of the form, but count only with ``add``.
    """
    asked = dict(query)
    adding = bool(asked.get("add")) and "new" in asked
    gone = {asked["new"]} if adding else set()
    gone |= {asked["drop"]} if "drop" in asked else set()
    kept = [
        (key, value)
        for key, value in query
        if key not in EDIT_PARAMS
        and not (key.startswith((STYLE_PREFIX, SHAPE_PREFIX)) and key.partition(".")[2] in gone)
    ]
    if adding:
        name = asked["new"]
        kept += [
            (STYLE_PREFIX + name, asked.get("new_style") or "parameter"),
            (SHAPE_PREFIX + name, asked.get("new_shape") or "3"),
        ]
    return kept


def lesson_device() -> str:
    """Where the first page moves its module: the first GPU, else meta, so the plain tensor that
    stays behind on cpu shows the tutorials' point before anything is touched."""
    return next((d for d in devices.device_ids() if d.startswith("cuda:")), "meta")


def spec_of(query: list[tuple[str, str]], max_elements: int) -> tuple[LabSpec, list[str]]:
    """The page's spec, and the ``style.*`` members it ignored.

    Choosing another module in the form (or submitting it without JavaScript) still sends the old
    module's members (and a custom module's shapes); the page drops those and says so, where the
    API would refuse them.
    """
    query = edited([(key, value) for key, value in query if not key.startswith(INTO)])
    given = {key for key, _ in query}
    if "preset" not in given:
        query = [("preset", DEFAULT_PRESET), *query]
        if "device" not in given:
            query.append(("device", lesson_device()))
    spec = from_query(query, allowed=PAGE_PARAMS)
    preset = PRESETS.get(spec.preset)
    foreign = bool(preset and not preset.custom)
    ignored = [name for name in spec.styles if foreign and preset.member(name) is None]  # type: ignore[union-attr]
    kept = {name: style for name, style in spec.styles.items() if name not in ignored}
    update = {"styles": kept, "shapes": {} if foreign else spec.shapes}
    return resolve(spec.model_copy(update=update), devices.device_ids(), max_elements), ignored


def with_edit(
    query: list[tuple[str, str]], max_elements: int, lang: str
) -> tuple[list[tuple[str, str]], str | None]:
    """The query with the custom module's edit applied, or, where the module cannot take it (a bad
    shape, too many elements), the query without the edit and the reason, in ``lang``."""
    if not any(key in ("add", "drop") for key, _ in query):
        return query, None
    try:
        spec_of(query, max_elements)
    except SpecError as exc:
        return [(key, value) for key, value in query if key not in EDIT_PARAMS], exc.text(lang)
    return query, None


def previous_spec(url: str | None, max_elements: int) -> LabSpec | None:
    """The spec of the page an htmx request came from (its HX-Current-URL), if readable.

    The HTTP cache keys pages by this (``spec.query()``), so it must stay all the page reads of the URL.
    """
    if not url:
        return None
    try:
        parts = urlsplit(url)
        if parts.path not in ("/", "") or not (parts.path or parts.query):
            return None  # not the lab page (or nothing at all): nothing to compare with
        return spec_of(parse_qsl(parts.query, keep_blank_values=True), max_elements)[0]
    except (SpecError, ValueError):  # or a URL urlsplit cannot read (``http://[``)
        return None


def previous_report(url: str | None, max_elements: int) -> LabReport | None:
    """The report the page showed before this htmx request, if readable."""
    spec = previous_spec(url, max_elements)
    return memo.report(spec) if spec else None


def experiment_of(
    query: list[tuple[str, str]], spec: LabSpec, max_elements: int
) -> tuple[ExperimentResult | None, list]:
    """The experiment the page asks for, run on ``spec``, and its canonical query pairs.

    Like ``lang``, an option the page does not know falls back to its default.
    """
    asked = dict(query)
    experiment = EXPERIMENTS.get(asked.get("experiment", ""))
    if experiment is None:
        return None, []
    params = {name: asked[name] for name, allowed in experiment.params.items() if asked.get(name) in allowed}
    pairs = [("experiment", experiment.id), *params.items()]
    other = None
    if experiment.id == "load_into":
        into = {k.removeprefix(INTO): v for k, v in query if k.startswith(INTO)}
        try:
            other = resolve(loaded_into(spec, into), devices.device_ids(), max_elements)
            pairs += [(INTO + member, style) for member, style in other.styles.items()]
        except SpecError:
            other = None
    return run_experiment(experiment.id, spec, other, **params), pairs


def link(spec: LabSpec, view: View, extra: Sequence[tuple[str, str]] = (), **changes: str | bool) -> str:
    """A URL for this spec, experiment and view, with some view options changed."""
    lang = changes.get("lang", view.lang if view.lang_chosen else None)
    present = changes.get("present", view.present)
    pairs = list(extra)
    pairs += [("lang", lang)] if lang else []
    pairs += [("present", "1")] if present else []
    pairs += [("embed", "1")] if view.embed else []
    tail = urlencode(pairs)
    return "/?" + spec.query() + ("&" + tail if tail else "")


@dataclass(frozen=True)
class LabPage:
    """Everything one request's page shows, built once from the query."""

    spec: LabSpec
    ignored: list[str]  # style.* of another module, dropped
    edit_error: str | None  # a custom member the module could not take
    experiment: ExperimentResult | None
    experiment_pairs: list
    report: LabReport
    matrix: Matrix
    diff: LabDiff
    controls: bool = False  # the member controls change too (another module, a member added or dropped)
    editing: bool = False  # the query adds or drops a custom member


def read_page(
    query: list[tuple[str, str]], view: View, current_url: str | None, max_elements: int
) -> LabPage:
    """The page model of a query; a spec that cannot be shown raises its SpecError."""
    editing = any(key in ("add", "drop") for key, _ in query)
    query, edit_error = with_edit(query, max_elements, view.lang)
    spec, ignored = spec_of(query, max_elements)
    experiment, pairs = experiment_of(query, spec, max_elements)
    report, table = memo.report(spec), matrix(spec)
    previous = previous_report(current_url, max_elements) if view.htmx else None
    diff = compare(previous, report)
    if previous is not None:
        diff = with_matrix(diff, matrix(previous.spec), table)
    controls = bool(diff.preset) or (previous is not None and list(previous.spec.styles) != list(spec.styles))
    return LabPage(
        spec=spec,
        # A swap to another module still sent the old module's members: expected to go, not reported.
        ignored=[] if view.htmx and controls else ignored,
        edit_error=edit_error,
        experiment=experiment,
        experiment_pairs=pairs,
        report=report,
        matrix=table,
        diff=diff,
        controls=controls,
        editing=editing,
    )


def blocks_of(page: LabPage, view: View) -> tuple[str, ...]:
    """The blocks an htmx swap of this page replaces."""
    blocks = BLOCKS + (() if view.embed else ("links",))  # an embedded lab has no header to update
    return blocks + (("controls",) if page.controls else ())


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


def context(view: View, page: LabPage | None = None, error: str | None = None) -> dict:
    spec = page.spec if page else None
    pairs = page.experiment_pairs if page else ()
    return {
        "spec": spec,
        "report": page.report if page else None,
        "matrix": page.matrix if page else None,
        "diff": page.diff if page else None,
        "members": {m.name: m for m in members(spec)} if spec else {},
        "owners": owners(page.report) if page else {},
        "code_lines": code_lines(page.report) if page else [],
        "without": lambda name: without(spec, view, name) if spec else "/",
        "experiments": EXPERIMENTS,
        "experiment": page.experiment if page else None,
        "experiment_pairs": pairs,
        "ignored": page.ignored if page else (),
        "edit_error": page.edit_error if page else None,
        "view": view,
        "presets": PRESETS,
        "styles": ALL_STYLES,
        "devices": devices.available(),
        "link": lambda **changes: link(spec, view, pairs, **changes) if spec else "/",
        "langs": LANGS,
        "error": error,
    }
