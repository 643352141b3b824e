"""HTML pages. htmx requests get the named blocks of the page, every other request the full page.

The page's form fields are named like the API query (``preset``, ``device``, ``style.<member>``),
so a page URL is a permalink and the same spec the JSON API takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError

from app import i18n
from app.assets import static_assets
from app.lab import devices, memo
from app.lab.diff import compare
from app.lab.experiments import EXPERIMENTS, ExperimentResult, run_experiment
from app.lab.inspect import LabReport
from app.lab.langs import LANGS
from app.lab.matrix import matrix
from app.lab.presets import PRESETS
from app.lab.spec import (
    SHAPE_PREFIX,
    STYLE_PREFIX,
    LabSpec,
    SpecError,
    UnknownPreset,
    from_query,
    members,
    resolve,
)
from app.lab.styles import ALL_STYLES
from app.settings import get_settings

TEMPLATES = Path(__file__).parent.parent / "templates"
VARY = "HX-Request, HX-History-Restore-Request, HX-Current-URL, Accept-Language, Accept-Encoding"
# The experiment to run and its options ride in the URL beside the spec, named like the API's.
EXPERIMENT_PARAMS = ("experiment", *sorted({name for e in EXPERIMENTS.values() for name in e.params}))
# The custom module's form: add the member named ``new`` (on ``add``), or drop one.
EDIT_PARAMS = ("add", "new", "new_shape", "new_style", "drop")
PAGE_PARAMS = ("lang", "present", *EXPERIMENT_PARAMS, *EDIT_PARAMS)  # not part of the spec
INTO = "into."  # load_into: the member styles of the module loaded into
DEFAULT_PRESET = "testmodel"  # the richer tutorial: a parameter, a buffer and a plain tensor side by side

router = APIRouter(include_in_schema=False)


@cache
def environment(lang: str) -> Environment:
    """One Jinja environment per language: templates compiled once, translations fixed."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.translations(lang), newstyle=True)  # type: ignore[attr-defined]
    env.globals["asset"] = static_assets().url  # content-hashed URLs, cached for a year
    return env


def render(lang: str, blocks: tuple[str, ...] | None, context: dict, page: str = "lab.html") -> bytes:
    """The whole page, or only ``blocks`` of it (htmx fragments), in ``lang``."""
    template = environment(lang).get_template(page)
    if blocks is None:
        return template.render(context).encode()
    ctx = template.new_context(context)
    return "".join("".join(template.blocks[b](ctx)) for b in blocks).encode()


@dataclass(frozen=True)
class View:
    """How the page is shown, apart from the spec: language and projector mode."""

    lang: str
    lang_chosen: bool  # given in the URL (kept in links), rather than taken from Accept-Language
    present: bool
    htmx: bool  # an htmx swap rather than a full page load


async def get_view(request: Request) -> View:
    query = request.query_params
    headers = request.headers
    return View(
        lang=i18n.choose(query.get("lang"), headers.get("accept-language")),
        lang_chosen=query.get("lang") in LANGS,
        present=query.get("present") == "1",
        # A history restore after a cache miss wants the full page, not a fragment.
        htmx=headers.get("hx-request") == "true" and headers.get("hx-history-restore-request") != "true",
    )


ViewDep = Annotated[View, Depends(get_view)]


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


def spec_of(query: list[tuple[str, str]]) -> tuple[LabSpec, list[str]]:
    """The page's spec, and the ``style.*`` members it ignored.

    Choosing another module in the form (or submitting it without JavaScript) still sends the old
    module's members; the page drops those and says so, where the API would refuse them.
    """
    query = edited([(key, value) for key, value in query if not key.startswith(INTO)])
    if not any(key == "preset" for key, _ in query):
        query = [("preset", DEFAULT_PRESET), *query]
    spec = from_query(query, allowed=PAGE_PARAMS)
    preset = PRESETS.get(spec.preset)
    ignored = [name for name in spec.styles if preset and not preset.custom and preset.member(name) is None]
    kept = {name: style for name, style in spec.styles.items() if name not in ignored}
    limit = get_settings().custom_max_elements
    return resolve(spec.model_copy(update={"styles": kept}), devices.device_ids(), limit), ignored


def previous_spec(url: str | None) -> LabSpec | None:
    """The spec of the page an htmx request came from (its HX-Current-URL), if readable.

    The HTTP cache keys pages by this (``spec.query()``), so it must stay all the page reads of the URL.
    """
    if not url:
        return None
    try:
        return spec_of(parse_qsl(urlsplit(url).query, keep_blank_values=True))[0]
    except ValueError:  # SpecError, ValidationError, or a URL urlsplit cannot read (``http://[``)
        return None


def previous_report(request: Request) -> LabReport | None:
    """The report the page showed before this htmx request, if readable."""
    spec = previous_spec(request.headers.get("hx-current-url"))
    return memo.report(spec) if spec else None


def experiment_of(query: list[tuple[str, str]], spec: LabSpec) -> tuple[ExperimentResult | None, list]:
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
            target = LabSpec(preset=spec.preset, device=spec.device, styles=into)
            other = resolve(target, devices.device_ids())
            pairs += [(INTO + member, style) for member, style in other.styles.items()]
        except (SpecError, ValidationError):
            other = None
    return run_experiment(experiment.id, spec, other, **params), pairs


def link(spec: LabSpec, view: View, extra: Sequence[tuple[str, str]] = (), **changes: str | bool) -> str:
    """A URL for this spec, experiment and view, with some view options changed."""
    lang = changes.get("lang", view.lang if view.lang_chosen else None)
    present = changes.get("present", view.present)
    pairs = list(extra)
    pairs += [("lang", lang)] if lang else []
    pairs += [("present", "1")] if present else []
    tail = urlencode(pairs)
    return "/?" + spec.query() + ("&" + tail if tail else "")


def context(
    view: View, spec: LabSpec | None = None, previous: LabReport | None = None, **extra: object
) -> dict:
    report = memo.report(spec) if spec else None
    pairs = extra.get("experiment_pairs", ())
    return {
        "spec": spec,
        "report": report,
        "matrix": matrix(spec) if spec else None,
        "members": {m.name: m for m in members(spec)} if spec else {},
        "experiments": EXPERIMENTS,
        "experiment": None,
        "diff": compare(previous, report) if report else None,
        "view": view,
        "presets": PRESETS,
        "styles": ALL_STYLES,
        "devices": devices.available(),
        "link": lambda **changes: link(spec, view, pairs, **changes) if spec else "/",
        "langs": LANGS,
        "error": None,
        "ignored": (),
        "edit_error": None,
        **extra,
    }


def error_message(exc: SpecError | ValidationError) -> str:
    return exc.message if isinstance(exc, SpecError) else str(exc.errors()[0]["msg"])


def lab_html(request: Request, view: View) -> tuple[bytes, int, dict[str, str]]:
    """The page (or its htmx blocks) for a request: body, status and headers."""
    query = request.query_params.multi_items()
    editing = any(key in ("add", "drop") for key, _ in query)
    edit_error = None
    try:
        try:
            spec, ignored = spec_of(query)
        except (SpecError, ValidationError) as exc:
            if not editing:
                raise
            # A member the module cannot take (bad shape, too many): the lab stays, the reason shows.
            edit_error = error_message(exc)
            spec, ignored = spec_of([(key, value) for key, value in query if key not in EDIT_PARAMS])
    except (SpecError, ValidationError) as exc:
        status = 404 if isinstance(exc, UnknownPreset) else 422
        return render(view.lang, None, context(view, error=error_message(exc))), status, {}
    experiment, pairs = experiment_of(query, spec)
    if editing and not edit_error and not view.htmx:
        # An edit without JavaScript: on to the permalink, so reloading it does not edit again.
        return b"", 303, {"Location": link(spec, view, pairs)}
    previous = previous_report(request) if view.htmx else None
    ctx = context(
        view,
        spec,
        previous,
        ignored=ignored,
        experiment=experiment,
        experiment_pairs=pairs,
        edit_error=edit_error,
    )
    blocks = None
    if view.htmx:
        blocks = ("results", "announce", "links", "experiment_controls")
        if ctx["diff"].preset or (previous and list(previous.spec.styles) != list(spec.styles)):
            blocks += ("controls",)  # another module, or a custom member added or dropped
            # The form still sent the old module's members: expected to go, so not reported.
            ctx["ignored"] = ()
    # The canonical permalink goes into the address bar, not the form's field order. A refused
    # edit is 422 for a full page; htmx swaps only 2xx, and the notice is in what it swaps.
    status = 422 if edit_error and not view.htmx else 200
    return render(view.lang, blocks, ctx), status, {"HX-Push-Url": link(spec, view, pairs)}


@router.get("/", response_class=HTMLResponse)
async def lab_page(request: Request, view: ViewDep) -> Response:
    body, status, headers = lab_html(request, view)
    # Vary names every header the page depends on: the HTTP cache keys stored pages by them.
    return HTMLResponse(body, status, headers={**headers, "Vary": VARY})
