"""The architectures' routes: /api/architectures (the list, a module tree, the meta round trip) and
their pages."""

from __future__ import annotations

import json
import pathlib
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from app.architectures import configs
from app.architectures import memo as architecture_memo
from app.architectures.catalogue import (
    ARCHITECTURES,
    EXPERIMENT_FIT,
    OFF,
    ArchitectureError,
    count_note,
    devices_for,
)
from app.architectures.config_store import ConfigStore, default_folder, elements, preset_id
from app.architectures.isolated import Budget, ConfigReport
from app.architectures.module_tree import ModuleTree
from app.architectures.page import PAGE, PLAN_FIELDS, ArchitecturePage, config_page_of, page_of
from app.architectures.planner import DEFAULT_BATCH, MAX_BATCH, MAX_IMAGE, MAX_TOKENS, Plan
from app.architectures.roundtrip import RoundTrip
from app.langs import EN, ZH
from app.settings import Settings
from app.web.deps import SettingsDep
from app.web.html import VARY, ViewDep, respond


def enabled(settings: SettingsDep) -> None:
    if not settings.architectures:
        raise ArchitectureError(404, OFF)


api = APIRouter(prefix="/api/architectures", tags=["architectures"], dependencies=[Depends(enabled)])
ArchId = Annotated[str, Path(max_length=64, examples=["llama_tiny"])]
DeviceQuery = Annotated[str, Query(max_length=32, description="meta (default), or cpu/cuda:N for tiny ones")]
RESPONSES: dict = {
    404: {"description": "Unknown architecture, or architectures are off (MRE_ARCHITECTURES=false)"},
    422: {"description": "A device that is not here, or a full-size shape off meta"},
    503: {"description": "transformers is not installed"},
}


class Text(BaseModel):
    title: str
    description: str


class FitOut(BaseModel):
    experiment: str = Field(examples=["step"])
    applies: str = Field(examples=["no"], description='"all", "tiny" (tiny configs only) or "no".')
    reason: str
    translations: dict[str, str] = Field(description="The reason per language, e.g. zh-CN.")


class ArchitectureOut(BaseModel):
    id: str = Field(examples=["llama_8b"])
    family: str = Field(examples=["llama"])
    title: str
    description: str
    tiny: bool = Field(description="Can be built with real values on the devices listed.")
    devices: list[str] = Field(description="Devices it can be built on here.")
    config_class: str = Field(examples=["LlamaConfig"])
    auto_class: str = Field(examples=["AutoModelForCausalLM"])
    config: dict = Field(description="The config's keyword arguments (the rest are transformers' defaults).")
    code: str = Field(description="A script that builds it on meta with transformers alone.")
    experiments: list[FitOut]
    translations: dict[str, Text]
    count_note: str | None = Field(None, description="Why its count differs from the one usually quoted.")
    count_note_translations: dict[str, str] = Field(default_factory=dict)


def _fits() -> list[FitOut]:
    return [
        FitOut(
            experiment=f.experiment, applies=f.applies, reason=f.reason[EN], translations={ZH: f.reason[ZH]}
        )
        for f in EXPERIMENT_FIT
    ]


@api.get("")
def list_architectures(settings: SettingsDep) -> list[ArchitectureOut]:
    return [
        ArchitectureOut(
            **{k: getattr(a, k) for k in ("id", "family", "tiny", "config_class", "auto_class", "config")},
            title=a.title[EN],
            description=a.description[EN],
            devices=list(devices_for(a, settings.architecture_max_bytes)),
            code=a.code("meta"),
            experiments=_fits(),
            translations={ZH: Text(title=a.title[ZH], description=a.description[ZH])},
            count_note=note[EN] if (note := count_note(a.id)) else None,
            count_note_translations={ZH: note[ZH]} if note else {},
        )
        for a in ARCHITECTURES.values()
    ]


def body_caps(settings: Settings) -> dict[str, int]:
    """The body cap of the routes that take a config.json (the form's framing on top)."""
    cap = settings.architecture_config_max_bytes
    return {"/api/architectures/config": cap, "/architectures/config": cap + 64 * 1024}


def budget(settings: Settings) -> Budget:
    return Budget(settings.architecture_config_memory_bytes, settings.architecture_config_seconds)


def config_store(settings: Settings) -> ConfigStore:
    """Where pasted configs that open in the lab are kept, and the lab's cap on them."""
    folder = pathlib.Path(settings.lab_config_dir) if settings.lab_config_dir else default_folder()
    return ConfigStore(folder, settings.lab_config_files, settings.lab_config_max_elements)


Batch = Annotated[int, Query(ge=1, le=MAX_BATCH)]
Tokens = Annotated[int | None, Query(ge=1, le=MAX_TOKENS, description="Text: training sequence length")]
Image = Annotated[int | None, Query(ge=32, le=MAX_IMAGE, description="Vision: image side in pixels")]
Context = Annotated[int | None, Query(ge=1, le=MAX_TOKENS, description="Text: inference context")]
CONFIG_RESPONSES: dict = {
    413: {"description": "The config is over MRE_ARCHITECTURE_CONFIG_MAX_BYTES, or needs more memory"},
    414: {"description": "The URL is over MRE_MAX_URL_BYTES"},
    422: {"description": "Not a config transformers can build; the detail names the field"},
    504: {"description": "Building and measuring it took over MRE_ARCHITECTURE_CONFIG_SECONDS"},
}


@api.post("/config", response_model=ConfigReport, responses=CONFIG_RESPONSES)
def config_post(
    config: Annotated[dict, Body(description="A transformers config.json, as it is.")],
    settings: SettingsDep,
    batch: Batch = DEFAULT_BATCH,
    tokens: Tokens = None,
    image: Image = None,
    context: Context = None,
) -> Response:
    """Any config.json transformers knows (its model_type): built on meta in an isolated process with
    time and memory limits, and the same report as a catalogue architecture's: the module tree, what
    each way of saving does, the plan for the input asked for, the meta round trip when small.
    ``c`` in the answer is its permalink: /architectures/config?c=..."""
    text = json.dumps(config)
    checked = configs.read(text, settings.architecture_config_max_bytes)
    asked = {"batch": batch, "tokens": tokens, "image": image, "context": context}
    return Response(
        architecture_memo.config_report_json(checked, asked, budget(settings)), media_type="application/json"
    )


@api.get("/config", response_model=ConfigReport, responses=CONFIG_RESPONSES)
def config_get(
    c: Annotated[
        str,
        Query(max_length=configs.MAX_PARAM, description="A config as /architectures/config links carry it"),
    ],
    settings: SettingsDep,
    batch: Batch = DEFAULT_BATCH,
    tokens: Tokens = None,
    image: Image = None,
    context: Context = None,
) -> Response:
    """The report of a config carried in a permalink (``c``, as POST /api/architectures/config gives it)."""
    asked = {"batch": batch, "tokens": tokens, "image": image, "context": context}
    report = architecture_memo.config_report_json(configs.decode(c), asked, budget(settings))
    return Response(report, media_type="application/json")


@api.get("/{arch_id}", response_model=ModuleTree, responses=RESPONSES)
def architecture_tree(arch_id: ArchId, settings: SettingsDep, device: DeviceQuery = "meta") -> Response:
    """The module tree: per submodule its parameters and buffers, tied parameters counted once,
    totals as torch counts them, the model's own bytes per dtype, what each way of saving does.
    A real device is taken when the model's float32 size fits MRE_ARCHITECTURE_MAX_BYTES."""
    tree = architecture_memo.tree_json(arch_id, device, settings.architecture_max_bytes)
    return Response(tree, media_type="application/json")


@api.get("/{arch_id}/round-trip", response_model=RoundTrip, responses=RESPONSES)
def architecture_round_trip(arch_id: ArchId, settings: SettingsDep) -> RoundTrip:
    """Meta, to_empty(), load_state_dict from a CPU-built twin: what stays uninitialised, and the fix
    (models whose float32 size fits MRE_ARCHITECTURE_MAX_BYTES)."""
    return architecture_memo.roundtrip(arch_id, settings.architecture_max_bytes)


@api.get("/{arch_id}/plan", response_model=Plan, responses=RESPONSES)
def architecture_plan(
    arch_id: ArchId,
    batch: Annotated[int, Query(ge=1, le=MAX_BATCH)] = DEFAULT_BATCH,
    tokens: Annotated[
        int | None, Query(ge=1, le=MAX_TOKENS, description="Text: training sequence length")
    ] = None,
    image: Annotated[
        int | None, Query(ge=32, le=MAX_IMAGE, description="Vision: image side in pixels")
    ] = None,
    context: Annotated[int | None, Query(ge=1, le=MAX_TOKENS, description="Text: inference context")] = None,
) -> Response:
    """Will it fit: per precision recipe (fp32, bf16 mixed precision, pure bf16, fp32 and bf16
    inference) the bytes of weights, gradients, AdamW states and activations measured on meta for
    this batch, the total, whether it fits on 24/40/80/141 GB GPUs and this server's, and the
    largest batch that does, with the arithmetic. Defaults: batch 8, 512 tokens (or the model's
    positions), an 8192-token context (or the model's positions), the model's image size."""
    spec = architecture_memo.plan_input(arch_id, batch, tokens, image, context)
    return Response(architecture_memo.plan_json(arch_id, spec), media_type="application/json")


pages = APIRouter(include_in_schema=False)


@pages.get("/architectures")
async def architecture_list(view: ViewDep, settings: SettingsDep) -> Response:
    error = None if settings.architectures else OFF[view.lang]
    page = ArchitecturePage(view, error=error)
    return respond(view, PAGE, page.context(), ("report",), 404 if error else 200)


@pages.get("/architectures/config")
def config_page(request: Request, view: ViewDep, settings: SettingsDep, c: str = "", q: str = "") -> Response:
    """A pasted config's page, from its permalink."""
    if not settings.architectures:
        page, status = ArchitecturePage(view, error=OFF[view.lang]), 404
    else:
        asked = {k: v for k, v in request.query_params.items() if k in PLAN_FIELDS}
        page, status = config_page_of(view, None, c, q, asked, budget(settings), config_store(settings))
    return respond(view, PAGE, page.context(), ("report",), status)


@pages.get("/architectures/config/lab")
def config_lab(view: ViewDep, settings: SettingsDep, c: str = "") -> Response:
    """A pasted config into the lab (its page's "Open it in the lab"): counted in the isolated
    child (the report its page showed), kept when within the lab's cap (else a 413 naming it), and
    on to its lab, /?preset=config:<digest>."""
    if not settings.architectures:
        raise ArchitectureError(404, OFF)
    config = configs.decode(c)
    report = architecture_memo.config_report(config, dict.fromkeys(PLAN_FIELDS), budget(settings))
    key = config_store(settings).put(report.config, elements(report))
    keep = {"lang": view.lang} if view.lang_chosen else {}
    return RedirectResponse("/?" + urlencode({"preset": preset_id(key), **keep}), 303, headers={"Vary": VARY})


@pages.post("/architectures/config")
async def config_paste(request: Request, view: ViewDep, settings: SettingsDep) -> Response:
    """The form of the list page: a config.json pasted or uploaded; on to its permalink."""
    text = ""
    try:
        if not settings.architectures:
            raise ArchitectureError(404, OFF)
        form = await request.form()
        upload = form.get("file")
        if upload is not None and not isinstance(upload, str) and upload.filename:
            raw = await upload.read(settings.architecture_config_max_bytes + 1)
            text = raw.decode("utf-8", errors="replace")
        else:
            text = str(form.get("config") or "")
        config = configs.read(text, settings.architecture_config_max_bytes)
    except ArchitectureError as exc:
        page = ArchitecturePage(view, error=exc.text(view.lang), pasted=text[:20_000])
        return respond(view, PAGE, page.context(), ("report",), exc.status)
    keep = {"lang": view.lang} if view.lang_chosen else {}
    return RedirectResponse(
        "/architectures/config?" + urlencode({"c": configs.encode(config), **keep}),
        303,
        headers={"Vary": VARY},
    )


@pages.get("/architectures/{arch_id}")
def architecture_page(
    arch_id: str,
    request: Request,
    view: ViewDep,
    settings: SettingsDep,
    device: str = "meta",
    q: str = "",
    part: str = "",
) -> Response:
    asked = {k: v for k, v in request.query_params.items() if k in PLAN_FIELDS}
    page, status = page_of(
        view, arch_id, device, q, settings.architectures, asked, settings.architecture_max_bytes
    )
    # The page loads its plan after itself (part=plan): htmx swaps that block alone.
    blocks = ("plan",) if part == "plan" and page.arch is not None else ("report",)
    return respond(view, PAGE, page.context(), blocks, status)
