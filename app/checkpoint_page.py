"""The checkpoint page: an upload form (drag and drop, or a plain form without JavaScript) and what
the inspector found, from the same functions as POST /api/checkpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app import inspections, pages
from app.deps import SettingsDep
from app.html import View, ViewDep, render
from app.html import respond as page_response
from app.inspections import OTHER_FIELD
from app.lab.architectures import ARCHITECTURES, ArchitectureError
from app.lab.checkpoints import CheckpointError, PageReport
from app.lab.compare import Comparison
from app.lab.langs import LANGS
from app.lab.presets import PRESETS
from app.lab.spec import LabSpec, SpecError
from app.lab.styles import ALL_STYLES
from app.lab.targets import architecture_target
from app.settings import Settings
from app.uploads import FILE_FIELD, Received, UploadError

router = APIRouter(include_in_schema=False)
PAGE = "checkpoints.html"
FORM_FIELDS = ("lang", "present", "state_dict")  # beside the spec (preset, device, style.*)


def architecture_of(pairs: list[tuple[str, str]], settings: Settings) -> str | None:
    """The architecture chosen in the same field as a preset (their ids never meet), where they are on."""
    chosen = dict(pairs).get("preset", "")
    if chosen in PRESETS or chosen not in ARCHITECTURES:
        return None
    return architecture_target(chosen, settings.architectures)


def spec_of(pairs: list[tuple[str, str]], max_elements: int) -> LabSpec | None:
    """The module to load into, read like the lab page's spec; none when no preset is chosen."""
    pairs = [(k, v) for k, v in pairs if k not in FORM_FIELDS]
    return pages.spec_of(pairs, max_elements)[0] if dict(pairs).get("preset") else None


def context(view: View, **extra: object) -> dict:
    return {
        "view": view,
        "langs": LANGS,
        "presets": PRESETS,
        "styles": ALL_STYLES,
        "spec": None,
        "architecture": None,  # the architecture chosen instead of a preset
        "architectures": {},  # those the form offers: none where they are off
        "state_dict": "",
        "report": None,
        "comparison": None,
        "tensors": 0,
        "hidden": {},
        "filename": "",
        "error": None,
        **extra,
    }


def respond(view: View, status: int = 200, **extra: object) -> Response:
    return page_response(view, PAGE, context(view, **extra), ("result",), status)


def offered(settings: Settings) -> dict:
    return ARCHITECTURES if settings.architectures else {}


def _off(request: Request, view: View) -> Response | None:
    """The page of a server where the inspector cannot run (switched off, torch too old)."""
    try:
        inspections.check_available(request.app.state.settings)
    except UploadError as exc:
        return HTMLResponse(render(view.lang, PAGE, context(view, error=exc.message, off=True)), exc.status)
    return None


@router.get("/checkpoints", response_class=HTMLResponse)
async def checkpoint_form(request: Request, view: ViewDep, settings: SettingsDep) -> Response:
    """The form; a lab's spec in the query (its "inspect a checkpoint" link) is preselected."""
    off = _off(request, view)
    if off is not None:
        return off
    pairs = request.query_params.multi_items()
    try:
        spec = spec_of(pairs, settings.custom_max_elements)
    except SpecError:
        spec = None
    architecture = None if spec else architecture_of(pairs, settings)
    return respond(view, spec=spec, architecture=architecture, architectures=offered(settings))


@router.post("/checkpoints", response_class=HTMLResponse)
async def checkpoint_result(request: Request, view: ViewDep, settings: SettingsDep) -> Response:
    off = _off(request, view)
    if off is not None:
        return off
    page: PageReport | None = None
    comparison: Comparison | None = None
    spec = architecture = None
    filename = ""
    fields: dict[str, str] = {}

    def chosen() -> dict:  # what the form offers and had chosen, as the request left it
        return {"architecture": architecture, "architectures": offered(settings)}

    try:
        async with inspections.uploaded(request, (FILE_FIELD, OTHER_FIELD)) as upload:
            filename, fields = _names(upload.of(FILE_FIELD)), dict(upload.fields)
            architecture = architecture_of(upload.fields, settings)
            spec = None if architecture else spec_of(upload.fields, settings.custom_max_elements)
            # A file input left empty still sends a part, with no name and no bytes: no second file.
            others = [f for f in upload.of(OTHER_FIELD) if f.filename or f.path.stat().st_size]
            if others:  # a second checkpoint: compare the two
                comparison = await inspections.compare_page(request, upload.of(FILE_FIELD), others)
            else:
                at = fields.get("state_dict") or None
                page = await inspections.inspect_page(
                    request, upload.of(FILE_FIELD), architecture or spec, at
                )
    except (UploadError, CheckpointError, ArchitectureError) as exc:
        return respond(view, exc.status, error=exc.message, filename=filename, spec=spec, **chosen())
    except SpecError as exc:
        return respond(view, 422, error=exc.text(view.lang), filename=filename, **chosen())
    if comparison is not None:
        return respond(view, comparison=comparison, spec=spec, filename=filename, **chosen())
    assert page is not None
    return respond(
        view,
        report=page.report,
        tensors=page.tensors,
        hidden=page.hidden,
        spec=spec,
        filename=filename,
        state_dict=fields.get("state_dict", ""),
        **chosen(),
    )


def _names(files: list[Received]) -> str:
    return ", ".join(f.filename for f in files if f.filename)
