"""The architectures' routes: /api/architectures (the list, a module tree, the meta round trip) and
their pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from app.architectures import memo as architecture_memo
from app.architectures.catalogue import (
    ARCHITECTURES,
    EXPERIMENT_FIT,
    OFF,
    ArchitectureError,
    count_note,
    devices_for,
)
from app.architectures.module_tree import ModuleTree
from app.architectures.page import PAGE, PLAN_FIELDS, ArchitecturePage, page_of
from app.architectures.planner import DEFAULT_BATCH, MAX_BATCH, MAX_IMAGE, MAX_TOKENS, Plan
from app.architectures.roundtrip import RoundTrip
from app.langs import EN, ZH
from app.web.deps import SettingsDep
from app.web.html import ViewDep, respond


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
            code=a.code(),
            experiments=_fits(),
            translations={ZH: Text(title=a.title[ZH], description=a.description[ZH])},
            count_note=note[EN] if (note := count_note(a.id)) else None,
            count_note_translations={ZH: note[ZH]} if note else {},
        )
        for a in ARCHITECTURES.values()
    ]


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
