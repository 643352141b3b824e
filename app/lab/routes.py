"""The lab's routes: the JSON API v1 (the contract in DESIGN.md) and the lab page, thin layers over
``app.lab`` and its page model (``app.lab.page``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from functools import lru_cache
from typing import Annotated

import torch
from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from app.lab import devices, memo
from app.lab.deps import BoundsDep
from app.lab.experiments import EXPERIMENTS, Experiment, ExperimentResult
from app.lab.matrix import Matrix, matrix
from app.lab.page import PAGE, blocks_of, context, link, previous_spec, read_page
from app.lab.presets import PRESETS
from app.lab.query import OPENAPI_PARAMETERS, Bounds, read, with_experiment
from app.lab.report import LabReport
from app.lab.spec import LabSpec, SpecError, resolve
from app.lab.styles import ALL_STYLES
from app.langs import EN, ZH
from app.settings import Settings
from app.web.deps import OffloadDep
from app.web.html import VARY, View, ViewDep, respond

api = APIRouter(prefix="/api", tags=["api"])
pages = APIRouter(include_in_schema=False)


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    torch_version: str = Field(examples=["2.13.0+cpu"])
    devices: list[str] = Field(examples=[["cpu", "meta", "cuda:0"]])
    fast_path: bool = Field(
        False,
        description="The server writes cache hits and keeps connection deadlines itself (python -m app "
        "with the uvicorn it was tested with); false under another server, or if a uvicorn hook is missing.",
    )


class DeviceOut(BaseModel):
    id: str = Field(examples=["cuda:0"])
    label: str = Field(examples=["NVIDIA H100 80GB HBM3"])
    kind: str = Field(examples=["cuda"], description="cpu, meta, cuda or mps")
    total_memory: int | None = Field(None, description="Bytes; null where torch cannot tell.")
    allocated_memory: int | None = Field(None, description="Bytes allocated by this server's tensors.")


class StyleText(BaseModel):
    title: str
    explanation: str


class StyleOut(BaseModel):
    id: str = Field(examples=["buffer"])
    title: str = Field(examples=["register_buffer()"])
    explanation: str
    code: str = Field(examples=['self.register_buffer("x", t)'])
    kind: str = Field(
        "tensor",
        examples=["tensor"],
        description='"tensor": attaches a tensor; "container": holds a list of sub-layers (layer_list).',
    )
    translations: dict[str, StyleText] = Field(description="Title and explanation per language, e.g. zh-CN.")


class Text(BaseModel):
    title: str
    description: str


class MemberOut(BaseModel):
    name: str = Field(examples=["weight"])
    default_style: str = Field(examples=["register_parameter"])
    styles: list[str]
    init: str = Field(examples=["torch.ones(10, 10)"], description="The expression that makes its tensor.")


class PresetOut(BaseModel):
    id: str = Field(examples=["mymodule"])
    title: str
    description: str
    class_name: str = Field(examples=["MyModule"])
    custom: bool = Field(False, description="Members come from the spec: style.NAME and shape.NAME.")
    members: list[MemberOut]
    translations: dict[str, Text] = Field(description="Title and description per language, e.g. zh-CN.")


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


# The query is read by hand, by app.lab.query (a repeated spec costs one dict lookup); this documents it.
LAB_QUERY = OPENAPI_PARAMETERS
LAB_RESPONSES: dict = {
    404: {"description": "Unknown preset"},
    413: {"description": "Request body over the limit"},
    422: {"description": "Malformed spec, unknown member or style, or a device that is not here"},
}


@api.get("/health")
async def health(request: Request) -> Health:
    fast_path = getattr(request.app.state, "fast_path", lambda: False)()
    return Health(
        status="ok", torch_version=torch.__version__, devices=list(devices.device_ids()), fast_path=fast_path
    )


@api.get("/devices")
async def list_devices() -> list[DeviceOut]:
    return [DeviceOut(**vars(d)) for d in devices.available()]


@api.get("/styles")
async def list_styles() -> list[StyleOut]:
    return [
        StyleOut(
            id=s.id,
            title=s.title[EN],
            explanation=s.explanation[EN],
            code=s.code,
            kind=s.kind,
            translations={ZH: StyleText(title=s.title[ZH], explanation=s.explanation[ZH])},
        )
        for s in ALL_STYLES.values()
    ]


@api.get("/presets")
async def list_presets() -> list[PresetOut]:
    return [
        PresetOut(
            id=p.id,
            title=p.title[EN],
            description=p.description[EN],
            class_name=p.class_name,
            custom=p.custom,
            members=[MemberOut(**vars(m)) for m in p.members],
            translations={ZH: Text(title=p.title[ZH], description=p.description[ZH])},
        )
        for p in PRESETS.values()
    ]


@api.get(
    "/lab",
    response_model=LabReport,
    responses=LAB_RESPONSES,
    openapi_extra={"parameters": LAB_QUERY},
    description="The lab report for a spec in the query: `preset`, `device`, and `style.<member>=<style>` "
    "for each member to change, e.g. `/api/lab?preset=testmodel&device=meta&style.buffer1=buffer`. "
    "Answers carry a strong ETag; send it back in If-None-Match for a 304.",
)
async def lab_get(request: Request, bounds: BoundsDep, offload: OffloadDep) -> Response:
    # Repeated queries never get here (app.http.cache answers them); a new one costs 1-300 ms of
    # torch, off the event loop.
    pairs = request.query_params.multi_items()
    return _json(await offload.run(lambda: memo.report_json(read(pairs, bounds, experiments=False).spec)))


@api.post(
    "/lab",
    response_model=LabReport,
    responses=LAB_RESPONSES,
    description="The same report as GET /api/lab, for a JSON spec.",
)
async def lab_post(spec: Annotated[LabSpec, Body()], bounds: BoundsDep, offload: OffloadDep) -> Response:
    return _json(
        await offload.run(lambda: memo.report_json(resolve(spec, bounds.devices, bounds.max_elements)))
    )


class ExperimentOut(BaseModel):
    id: str = Field(examples=["step"])
    title: str
    description: str
    translations: dict[str, Text] = Field(description="Title and description per language, e.g. zh-CN.")
    params: dict[str, list[str]] = Field(
        description="Options and their allowed values; the first is the default."
    )


class ExperimentRequest(LabSpec):
    params: dict[str, str] = Field(
        default_factory=dict, description='Experiment options, e.g. {"dtype": "half"}.'
    )
    into: dict[str, str] = Field(
        default_factory=dict,
        description="load_into only: member styles of the module the state_dict is loaded into.",
    )


def experiment_or_404(experiment_id: str) -> Experiment:
    if experiment_id not in EXPERIMENTS:
        raise HTTPException(404, f"unknown experiment {experiment_id!r}; known: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[experiment_id]


@api.get("/experiments")
async def list_experiments() -> list[ExperimentOut]:
    return [
        ExperimentOut(
            id=e.id,
            title=e.title[EN],
            description=e.description[EN],
            translations={ZH: Text(title=e.title[ZH], description=e.description[ZH])},
            params={k: list(v) for k, v in e.params.items()},
        )
        for e in EXPERIMENTS.values()
    ]


@api.get(
    "/experiments/{experiment_id}",
    response_model=ExperimentResult,
    responses=LAB_RESPONSES,
    openapi_extra={"parameters": LAB_QUERY},
    description="Run an experiment on the module of the spec in the query (as for /api/lab). Options go "
    "in the query by name (e.g. `dtype=half`); for load_into, `into.<member>=<style>` gives the module "
    "the state_dict is loaded into.",
)
async def experiment_get(
    experiment_id: str, request: Request, bounds: BoundsDep, offload: OffloadDep
) -> Response:
    experiment = experiment_or_404(experiment_id)
    query = read(request.query_params.multi_items(), bounds, experiments=False, only=experiment.id)
    return _json(await offload.run(lambda: memo.experiment(query).model_dump_json().encode()))


@api.post(
    "/experiments/{experiment_id}",
    response_model=ExperimentResult,
    responses=LAB_RESPONSES,
    description="The same result as the GET form, for a JSON body.",
)
async def experiment_post(
    experiment_id: str, request: Annotated[ExperimentRequest, Body()], bounds: BoundsDep, offload: OffloadDep
) -> Response:
    experiment = experiment_or_404(experiment_id)
    fields = request.model_dump(include={"preset", "device", "styles", "shapes"})
    spec = resolve(LabSpec(**fields), bounds.devices, bounds.max_elements)
    query = with_experiment(spec, experiment.id, request.params, request.into, bounds)
    return _json(await offload.run(lambda: memo.experiment(query).model_dump_json().encode()))


@api.get(
    "/matrix",
    response_model=Matrix,
    responses=LAB_RESPONSES,
    openapi_extra={"parameters": LAB_QUERY},
    description="The tutorials' table, complete: one row per member, every cell computed by running the "
    "experiments on this spec's module (spec in the query, as for /api/lab).",
)
async def matrix_get(request: Request, bounds: BoundsDep, offload: OffloadDep) -> Response:
    spec = read(request.query_params.multi_items(), bounds, experiments=False).spec
    return _json(await offload.run(lambda: matrix(spec).model_dump_json().encode()))


@pages.get("/", response_class=HTMLResponse)
async def lab_page(request: Request, view: ViewDep, bounds: BoundsDep, offload: OffloadDep) -> Response:
    pairs, current = request.query_params.multi_items(), request.headers.get("hx-current-url")
    return await offload.run(_lab_page, pairs, view, current, bounds)


def _lab_page(pairs: list[tuple[str, str]], view: View, current: str | None, bounds: Bounds) -> Response:
    """The page's answer: read, run torch, render; off the event loop (``lab_page``)."""
    try:
        page = read_page(pairs, view, current, bounds)
    except SpecError as exc:
        return respond(view, PAGE, context(view, error=exc.text(view.lang)), (), exc.status)
    permalink = link(page.spec, view, page.view_pairs)
    if page.query.editing and not page.query.edit_error and not view.htmx:
        # An edit without JavaScript: on to the permalink, so reloading it does not edit again.
        return RedirectResponse(permalink, 303, headers={"Vary": VARY})
    # The canonical permalink goes into the address bar, not the form's field order. A refused edit
    # is 422 for a full page (htmx gets its notice in the blocks it swaps).
    status = 422 if page.query.edit_error else 200
    return respond(view, PAGE, context(view, page), blocks_of(page, view), status, {"HX-Push-Url": permalink})


def warm(settings: Settings) -> dict[str, float]:
    """What the first visitor would otherwise wait for, done before the server says it is healthy:
    each accelerator's context (seconds on a GPU box: the default page is on the GPU), the default
    lab's report on it and its page in every language. Seconds each, by what was warmed."""
    took: dict[str, float] = {}
    started = time.perf_counter()
    for device in devices.device_ids():
        if device not in ("cpu", "meta"):
            torch.empty(1, device=device).add_(1).cpu()  # the context, a kernel, a copy back
            took[f"{device} context"] = time.perf_counter() - started
            started = time.perf_counter()
    bounds = Bounds.here(settings.custom_max_elements)
    for lang in (EN, ZH):
        _lab_page([], View(lang=lang, lang_chosen=False, present=False, htmx=False), None, bounds)
    took["default lab"] = time.perf_counter() - started
    return took


def vary_readers(settings: Settings) -> dict[bytes, Callable[[bytes], Hashable]]:
    """What the lab page reads of HX-Current-URL (the spec of the page an htmx swap came from, read
    as the page reads it under this app's settings): the HTTP cache keys the page by it."""

    @lru_cache(maxsize=256)
    def previous(value: bytes) -> str | None:
        # Bounds at the first request, not at app creation: the devices are asked for only then.
        spec = previous_spec(value.decode("latin-1"), Bounds.here(settings.custom_max_elements))
        return spec.query() if spec else None

    return {b"hx-current-url": previous}
