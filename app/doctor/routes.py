"""The doctor's routes: POST /api/checkpoints (and compare) for programs, and the checkpoint page,
both over the same uploads, child processes and report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.background import BackgroundTask

from app.doctor.caps import check_available
from app.doctor.compare import Comparison
from app.doctor.page import PAGE, architecture_of, context, offered, respond, spec_of
from app.doctor.report import CheckpointReport, PageReport, UploadError
from app.doctor.runs import Inspector, discard
from app.doctor.targets import Target, architecture_target, listed
from app.doctor.uploads import FILE_FIELD, OTHER_FIELD, Received, sent, uploaded
from app.errors import Refusal
from app.lab.deps import lab_bounds
from app.lab.query import OPENAPI_PARAMETERS as LAB_QUERY
from app.lab.query import read
from app.lab.spec import SpecError
from app.langs import Text
from app.settings import Settings
from app.web.deps import SettingsDep
from app.web.html import View, ViewDep, render


def _inspector(request: Request) -> Inspector:
    """The app's inspector (its caps, slots and uploads in progress), made by the composition root."""
    return request.app.state.inspector


InspectorDep = Annotated[Inspector, Depends(_inspector)]
api = APIRouter(prefix="/api", tags=["api"])
pages = APIRouter(include_in_schema=False)


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


STATE_DICT = "state_dict"  # query: where in the file the state_dict to load is
ARCHITECTURE = "architecture"  # query: load into this architecture (GET /api/architectures) instead
CHECKPOINT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "The checkpoint; several parts of this name are one sharded "
                        "checkpoint (its shards and model.safetensors.index.json).",
                    }
                },
                "required": ["file"],
            }
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
CHECKPOINT_QUERY = [{**p, "required": False} for p in LAB_QUERY] + [
    {
        "name": STATE_DICT,
        "in": "query",
        "description": "Where in the file the state_dict to load is, e.g. model ('' for the top); "
        "by default the top, then model/state_dict keys, then the largest dict of tensors.",
        "schema": {"type": "string"},
    },
    {
        "name": ARCHITECTURE,
        "in": "query",
        "description": "Load it into this architecture (an id of GET /api/architectures, built on the meta "
        "device) instead of a preset's module.",
        "schema": {"type": "string"},
    },
]


# What every upload route may answer, whatever it does with the files.
UPLOADED: dict[int | str, dict] = {
    400: {"description": "The client went away before the upload ended"},
    408: {"description": "The upload arrived slower than MRE_CHECKPOINT_UPLOAD_MIN_BYTES_PER_SECOND"},
    503: {"description": "Every inspection slot busy, or the server is stopping; try again"},
}


def checkpoint_request(request: Request, settings: Settings) -> tuple[Target | None, str | None]:
    """The module to load into (a spec in the query, as for /api/lab, or an architecture's id),
    checked before any upload."""
    items = request.query_params.multi_items()
    for name in (STATE_DICT, ARCHITECTURE):
        if sum(key == name for key, _ in items) > 1:
            raise SpecError(("query", name), Text("query parameter {name!r} given more than once", name=name))
    at = next((value for key, value in items if key == STATE_DICT), None)
    arch = next((value for key, value in items if key == ARCHITECTURE), None)
    items = [(key, value) for key, value in items if key not in (STATE_DICT, ARCHITECTURE)]
    if arch is not None:
        if items:
            raise SpecError(("query", ARCHITECTURE), Text("load into an architecture or a preset, not both"))
        return architecture_target(arch, settings.architectures), at
    return listed(read(items, lab_bounds(settings), experiments=False).spec if items else None), at


@api.post(
    "/checkpoints",
    response_model=CheckpointReport,
    responses={
        **UPLOADED,
        404: {
            "description": "Unknown preset or architecture, or the inspector (MRE_CHECKPOINTS) or the "
            "architectures (MRE_ARCHITECTURES) turned off"
        },
        413: {"description": "File, zip contents, pickle, memory, entries or report over a cap"},
        415: {"description": "Neither multipart/form-data nor application/octet-stream"},
        422: {"description": "Not a checkpoint, truncated, refused by torch, or the inspector died on it"},
        504: {"description": "The inspection ran past MRE_CHECKPOINT_CPU_SECONDS or _WALL_SECONDS"},
    },
    openapi_extra={"requestBody": CHECKPOINT_BODY, "parameters": CHECKPOINT_QUERY},
    description="What is inside a checkpoint: `.safetensors` (header only), torch zip files (`.pt`, `.pth`, "
    "`.bin`: `torch.load(weights_only=True, mmap=True)`) and torch's legacy format. Tensors by location and "
    "as a tree by module path, totals per dtype, tensors sharing storage, other values, the dicts of "
    "tensors it holds. With a spec in the query (`preset=...`, as for /api/lab) it is also loaded into that "
    "module: torch's strict and non-strict outcome, missing and unexpected keys, size mismatches, and the "
    "diagnosis: each cause (a wrapper's prefix, a tied weight saved once, BatchNorm statistics, "
    "non-persistent buffers, sizes, dtypes) with its fix and torch's outcome after it. Send the file as "
    "multipart/form-data (part `file`; several: a sharded checkpoint, its index checked) or as the raw body.",
)
async def checkpoint_post(request: Request, settings: SettingsDep, inspector: InspectorDep) -> Response:
    spec, at = checkpoint_request(request, settings)
    async with uploaded(request, settings, inspector.uploads) as upload:
        # The child's JSON as it wrote it: parsing a 50k-tensor report again would cost ~200 MiB here.
        return _json(await inspector.inspect_json(upload.files, spec, at))


COMPARE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "The first checkpoint."},
                    "other": {"type": "string", "format": "binary", "description": "The second."},
                },
                "required": ["file", "other"],
            }
        }
    },
}


@api.post(
    "/checkpoints/compare",
    response_model=Comparison,
    responses={
        **UPLOADED,
        404: {"description": "The inspector is turned off (MRE_CHECKPOINTS=false)"},
        413: {"description": "The files together, a zip's contents, memory, entries or report over a cap"},
        415: {"description": "Not multipart/form-data"},
        422: {"description": "A part missing, not a checkpoint, truncated, or the inspector died on it"},
        504: {"description": "The comparison ran past MRE_CHECKPOINT_CPU_SECONDS or _WALL_SECONDS"},
    },
    openapi_extra={"requestBody": COMPARE_BODY},
    description="Two checkpoints side by side: part `file` is a, part `other` is b (several parts of one "
    "name: that checkpoint's shards and index). A summary, then one row per key that differs: only in "
    "one, shape, dtype, storage sharing, and for tensors up to MRE_CHECKPOINT_COMPARE_MAX_ELEMENTS the "
    "largest absolute and relative difference of values, NaN and Inf counted.",
)
async def checkpoint_compare(request: Request, inspector: InspectorDep) -> Response:
    fields = (FILE_FIELD, OTHER_FIELD)
    async with uploaded(request, inspector.settings, inspector.uploads, fields, checkpoints=2) as upload:
        a, b = upload.of(FILE_FIELD), upload.of(OTHER_FIELD)
        return _json(await inspector.compare_json(a, b))


def _download(path: Path, files: list[Received]) -> FileResponse:
    """The fixed file as a download, named after the first file sent; removed once sent."""
    stem = next((f.filename for f in files if f.filename), "checkpoint").split(".")[0] or "checkpoint"
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{stem}.fixed.safetensors",
        background=BackgroundTask(discard, path),
    )


@api.post(
    "/checkpoints/fix",
    response_class=FileResponse,
    responses={
        **UPLOADED,
        200: {"content": {"application/octet-stream": {}}, "description": "The fixed safetensors file"},
        404: {"description": "Unknown preset or architecture, or the inspector turned off"},
        409: {"description": "It does not load into that module and no fix makes every tensor load"},
        413: {"description": "File, zip contents, pickle, memory, entries or report over a cap"},
        415: {"description": "Neither multipart/form-data nor application/octet-stream"},
        422: {"description": "Not a checkpoint, nothing to load it into, or the inspector died on it"},
        504: {"description": "It ran past MRE_CHECKPOINT_CPU_SECONDS or _WALL_SECONDS"},
    },
    openapi_extra={"requestBody": CHECKPOINT_BODY, "parameters": CHECKPOINT_QUERY},
    description="The fixed checkpoint: the fixes POST /api/checkpoints proves, applied, loaded into a fresh "
    "module with strict=True before and after writing, as a safetensors file (each tied tensor its own "
    "copy, as safetensors requires). The module is given as for /api/checkpoints, or is the model a "
    "config.json sent with the files describes. Refused (409) unless every tensor of the module comes "
    "from the file.",
)
async def checkpoint_fix(request: Request, settings: SettingsDep, inspector: InspectorDep) -> Response:
    spec, at = checkpoint_request(request, settings)
    async with uploaded(request, settings, inspector.uploads) as upload:
        files = sent(upload.of(FILE_FIELD))
        path, _ = await inspector.fixed_file(files, spec, at)
        return _download(path, files)


def _off(settings: Settings, view: View) -> Response | None:
    """The page of a server where the inspector cannot run (switched off, torch too old)."""
    try:
        check_available(settings)
    except UploadError as exc:
        return HTMLResponse(
            render(view.lang, PAGE, context(view, error=exc.text(view.lang), off=True)), exc.status
        )
    return None


@pages.get("/checkpoints", response_class=HTMLResponse)
async def checkpoint_form(request: Request, view: ViewDep, settings: SettingsDep) -> Response:
    """The form; a lab's spec in the query (its "inspect a checkpoint" link) is preselected."""
    off = _off(settings, view)
    if off is not None:
        return off
    pairs = request.query_params.multi_items()
    architecture = architecture_of(pairs, settings)
    try:
        spec = None if architecture else spec_of(pairs, lab_bounds(settings))
    except SpecError:
        spec = None
    return respond(view, spec=spec, architecture=architecture, architectures=offered(settings))


@pages.post("/checkpoints", response_class=HTMLResponse)
async def checkpoint_result(
    request: Request, view: ViewDep, settings: SettingsDep, inspector: InspectorDep
) -> Response:
    off = _off(settings, view)
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
        fields_ = (FILE_FIELD, OTHER_FIELD)
        async with uploaded(request, settings, inspector.uploads, fields_, checkpoints=2) as upload:
            files = sent(upload.of(FILE_FIELD))  # the file input and the folder input share a name
            filename, fields = _names(files), dict(upload.fields)
            architecture = architecture_of(upload.fields, settings)
            spec = None if architecture else spec_of(upload.fields, lab_bounds(settings))
            others = sent(upload.of(OTHER_FIELD))
            if others:  # a second checkpoint: compare the two
                comparison = await inspector.compare_page(files, others)
            else:
                at = fields.get("state_dict") or None
                page = await inspector.inspect_page(files, architecture or spec, at)
    except SpecError as exc:  # the module chosen in the form
        return respond(view, 422, error=exc.text(view.lang), filename=filename, **chosen())
    except Refusal as exc:  # the upload, the file or the architecture
        return respond(view, exc.status, error=exc.text(view.lang), filename=filename, spec=spec, **chosen())
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


@pages.post("/checkpoints/fix", response_class=HTMLResponse)
async def checkpoint_fix_page(
    request: Request, view: ViewDep, settings: SettingsDep, inspector: InspectorDep
) -> Response:
    """The page's download button: the fixed file, or the page saying why there is none."""
    off = _off(settings, view)
    if off is not None:
        return off
    spec = architecture = None
    try:
        async with uploaded(request, settings, inspector.uploads, (FILE_FIELD, OTHER_FIELD)) as upload:
            files = sent(upload.of(FILE_FIELD))
            architecture = architecture_of(upload.fields, settings)
            spec = None if architecture else spec_of(upload.fields, lab_bounds(settings))
            at = dict(upload.fields).get("state_dict") or None
            path, _ = await inspector.fixed_file(files, architecture or spec, at)
            return _download(path, files)
    except Refusal as exc:
        chosen = {"architecture": architecture, "architectures": offered(settings)}
        return respond(view, exc.status, error=exc.text(view.lang), spec=spec, **chosen)


def _names(files: list[Received]) -> str:
    return ", ".join(f.filename for f in files if f.filename)
