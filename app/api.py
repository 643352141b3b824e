"""JSON API v1 (the contract in DESIGN.md): thin routes over ``app.lab``."""

from __future__ import annotations

from typing import Annotated

import torch
from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from app import inspections
from app.deps import SettingsDep
from app.inspections import OTHER_FIELD
from app.lab import devices, memo
from app.lab.checkpoints import CheckpointReport
from app.lab.compare import Comparison
from app.lab.experiments import EXPERIMENTS, Experiment, ExperimentResult, run_experiment
from app.lab.inspect import LabReport
from app.lab.langs import EN, ZH
from app.lab.matrix import Matrix, matrix
from app.lab.presets import PRESETS
from app.lab.spec import LabSpec, SpecError, from_query, loaded_into, resolve
from app.lab.styles import ALL_STYLES
from app.lab.targets import Target, architecture_target
from app.settings import Settings
from app.uploads import FILE_FIELD

router = APIRouter(prefix="/api", tags=["api"])


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    torch_version: str = Field(examples=["2.13.0+cpu"])
    devices: list[str] = Field(examples=[["cpu", "meta", "cuda:0"]])


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


def resolved(spec: LabSpec, settings: Settings) -> LabSpec:
    return resolve(spec, devices.device_ids(), settings.custom_max_elements)


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


# The query is read by hand (so a repeated spec costs one dict lookup); this documents it.
LAB_QUERY = [
    {"name": "preset", "in": "query", "required": True, "schema": {"type": "string"}, "example": "testmodel"},
    {"name": "device", "in": "query", "schema": {"type": "string", "default": "cpu"}, "example": "meta"},
    {
        "name": "style.{member}",
        "in": "query",
        "description": "One per member to change, e.g. style.buffer1=buffer; see GET /api/presets. "
        "For the custom preset also shape.{member}=3x4.",
        "schema": {"type": "string"},
    },
]
LAB_RESPONSES: dict = {
    404: {"description": "Unknown preset"},
    413: {"description": "Request body over the limit"},
    422: {"description": "Malformed spec, unknown member or style, or a device that is not here"},
}


@router.get("/health")
async def health() -> Health:
    return Health(status="ok", torch_version=torch.__version__, devices=list(devices.device_ids()))


@router.get("/devices")
async def list_devices() -> list[DeviceOut]:
    return [DeviceOut(**vars(d)) for d in devices.available()]


@router.get("/styles")
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


@router.get("/presets")
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


@router.get(
    "/lab",
    response_model=LabReport,
    responses=LAB_RESPONSES,
    openapi_extra={"parameters": LAB_QUERY},
    description="The lab report for a spec in the query: `preset`, `device`, and `style.<member>=<style>` "
    "for each member to change, e.g. `/api/lab?preset=testmodel&device=meta&style.buffer1=buffer`. "
    "Answers carry a strong ETag; send it back in If-None-Match for a 304.",
)
async def lab_get(request: Request, settings: SettingsDep) -> Response:
    # Repeated queries never get here (app.http_cache answers them); a new one costs about 1 ms.
    return _json(memo.report_json(resolved(from_query(request.query_params.multi_items()), settings)))


@router.post(
    "/lab",
    response_model=LabReport,
    responses=LAB_RESPONSES,
    description="The same report as GET /api/lab, for a JSON spec.",
)
async def lab_post(spec: Annotated[LabSpec, Body()], settings: SettingsDep) -> Response:
    return _json(memo.report_json(resolved(spec, settings)))


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


def run_resolved(experiment: Experiment, request: ExperimentRequest, settings: Settings) -> bytes:
    spec = resolved(LabSpec(**request.model_dump(include={"preset", "device", "styles", "shapes"})), settings)
    for name, value in request.params.items():
        allowed = experiment.params.get(name)
        if allowed is None:
            raise SpecError(
                ("params", name),
                f"{experiment.id!r} takes no option {name!r}; options: "
                f"{', '.join(experiment.params) or 'none'}",
            )
        if value not in allowed:
            raise SpecError(("params", name), f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    other = None
    if request.into:
        if experiment.id != "load_into":
            raise SpecError(("into",), "only load_into takes the styles of another module")
        try:
            other = resolved(loaded_into(request, request.into), settings)
        except SpecError as exc:
            raise SpecError(("into", *exc.loc[1:]), exc.message) from exc
    return run_experiment(experiment.id, spec, other, **request.params).model_dump_json().encode()


@router.get("/experiments")
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


@router.get(
    "/experiments/{experiment_id}",
    response_model=ExperimentResult,
    responses=LAB_RESPONSES,
    openapi_extra={"parameters": LAB_QUERY},
    description="Run an experiment on the module of the spec in the query (as for /api/lab). Options go "
    "in the query by name (e.g. `dtype=half`); for load_into, `into.<member>=<style>` gives the module "
    "the state_dict is loaded into.",
)
async def experiment_get(experiment_id: str, request: Request, settings: SettingsDep) -> Response:
    experiment = experiment_or_404(experiment_id)
    spec_items, params, into = [], {}, {}
    for key, value in request.query_params.multi_items():
        if key.startswith("into."):
            into[key.removeprefix("into.")] = value
        elif key in experiment.params:
            params[key] = value
        else:
            spec_items.append((key, value))
    spec = from_query(spec_items)
    body = ExperimentRequest(**spec.model_dump(), params=params, into=into)
    return _json(run_resolved(experiment, body, settings))


@router.post(
    "/experiments/{experiment_id}",
    response_model=ExperimentResult,
    responses=LAB_RESPONSES,
    description="The same result as the GET form, for a JSON body.",
)
async def experiment_post(
    experiment_id: str, request: Annotated[ExperimentRequest, Body()], settings: SettingsDep
) -> Response:
    return _json(run_resolved(experiment_or_404(experiment_id), request, settings))


@router.get(
    "/matrix",
    response_model=Matrix,
    responses=LAB_RESPONSES,
    openapi_extra={"parameters": LAB_QUERY},
    description="The tutorials' table, complete: one row per member, every cell computed by running the "
    "experiments on this spec's module (spec in the query, as for /api/lab).",
)
async def matrix_get(request: Request, settings: SettingsDep) -> Response:
    spec = resolved(from_query(request.query_params.multi_items()), settings)
    return _json(matrix(spec).model_dump_json().encode())


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
            raise SpecError(("query", name), f"query parameter {name!r} given more than once")
    at = next((value for key, value in items if key == STATE_DICT), None)
    arch = next((value for key, value in items if key == ARCHITECTURE), None)
    items = [(key, value) for key, value in items if key not in (STATE_DICT, ARCHITECTURE)]
    if arch is not None:
        if items:
            raise SpecError(("query", ARCHITECTURE), "load into an architecture or a preset, not both")
        return architecture_target(arch, settings.architectures), at
    return (resolved(from_query(items), settings) if items else None), at


@router.post(
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
async def checkpoint_post(request: Request, settings: SettingsDep) -> Response:
    spec, at = checkpoint_request(request, settings)
    async with inspections.uploaded(request) as upload:
        # The child's JSON as it wrote it: parsing a 50k-tensor report again would cost ~200 MiB here.
        return _json(await inspections.inspect_json(request, upload.files, spec, at))


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


@router.post(
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
async def checkpoint_compare(request: Request) -> Response:
    async with inspections.uploaded(request, (FILE_FIELD, OTHER_FIELD)) as upload:
        a, b = upload.of(FILE_FIELD), upload.of(OTHER_FIELD)
        return _json(await inspections.compare_json(request, a, b))
