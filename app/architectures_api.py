"""JSON API for real architectures (transformers): the list, a module tree, the meta round trip."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from app.deps import SettingsDep
from app.lab import architecture_memo
from app.lab.architectures import ARCHITECTURES, EXPERIMENT_FIT, OFF, ArchitectureError, devices_for
from app.lab.langs import EN, ZH
from app.lab.meta_roundtrip import RoundTrip
from app.lab.module_tree import ModuleTree


def enabled(settings: SettingsDep) -> None:
    if not settings.architectures:
        raise ArchitectureError(404, OFF)


router = APIRouter(prefix="/api/architectures", tags=["architectures"], dependencies=[Depends(enabled)])
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


def _fits() -> list[FitOut]:
    return [
        FitOut(
            experiment=f.experiment, applies=f.applies, reason=f.reason[EN], translations={ZH: f.reason[ZH]}
        )
        for f in EXPERIMENT_FIT
    ]


@router.get("")
async def list_architectures() -> list[ArchitectureOut]:
    return [
        ArchitectureOut(
            **{k: getattr(a, k) for k in ("id", "family", "tiny", "config_class", "auto_class", "config")},
            title=a.title[EN],
            description=a.description[EN],
            devices=list(devices_for(a)),
            code=a.code(),
            experiments=_fits(),
            translations={ZH: Text(title=a.title[ZH], description=a.description[ZH])},
        )
        for a in ARCHITECTURES.values()
    ]


@router.get("/{arch_id}", response_model=ModuleTree, responses=RESPONSES)
def architecture_tree(arch_id: ArchId, device: DeviceQuery = "meta") -> Response:
    """The module tree: per submodule its parameters and buffers, tied parameters counted once,
    totals as torch counts them, memory per dtype for inference and AdamW training."""
    return Response(architecture_memo.tree_json(arch_id, device), media_type="application/json")


@router.get("/{arch_id}/round-trip", response_model=RoundTrip, responses=RESPONSES)
def architecture_round_trip(arch_id: ArchId) -> RoundTrip:
    """Meta, to_empty(), load_state_dict from a CPU-built twin: what stays uninitialised, and the fix."""
    return architecture_memo.roundtrip(arch_id)
