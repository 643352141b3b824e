"""JSON API v1 (the contract in DESIGN.md): thin routes over ``app.lab``."""

from __future__ import annotations

from typing import Annotated

import torch
from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, Field

from app.lab import devices
from app.lab.inspect import LabReport, inspect
from app.lab.langs import EN, ZH
from app.lab.presets import PRESETS
from app.lab.spec import LabSpec, from_query, resolve
from app.lab.styles import STYLES

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
    members: list[MemberOut]
    translations: dict[str, Text] = Field(description="Title and description per language, e.g. zh-CN.")


def spec_from_query(
    request: Request,
    preset: Annotated[str, Query(description="Preset id.", examples=["testmodel"])],
    device: Annotated[str, Query(description="Target device.", examples=["meta"])] = "cpu",
) -> LabSpec:
    """``preset``, ``device`` and one ``style.<member>=<style id>`` per member to change."""
    return from_query(request.query_params.multi_items())


def resolved(spec: LabSpec) -> LabSpec:
    return resolve(spec, devices.device_ids())


QuerySpec = Annotated[LabSpec, Depends(spec_from_query)]


@router.get("/health")
def health() -> Health:
    return Health(status="ok", torch_version=torch.__version__, devices=list(devices.device_ids()))


@router.get("/devices")
def list_devices() -> list[DeviceOut]:
    return [DeviceOut(**vars(d)) for d in devices.available()]


@router.get("/styles")
def list_styles() -> list[StyleOut]:
    return [
        StyleOut(
            id=s.id,
            title=s.title[EN],
            explanation=s.explanation[EN],
            code=s.code,
            translations={ZH: StyleText(title=s.title[ZH], explanation=s.explanation[ZH])},
        )
        for s in STYLES.values()
    ]


@router.get("/presets")
def list_presets() -> list[PresetOut]:
    return [
        PresetOut(
            id=p.id,
            title=p.title[EN],
            description=p.description[EN],
            class_name=p.class_name,
            members=[MemberOut(**vars(m)) for m in p.members],
            translations={ZH: Text(title=p.title[ZH], description=p.description[ZH])},
        )
        for p in PRESETS.values()
    ]


@router.get(
    "/lab",
    description="The lab report for a spec in the query: `preset`, `device`, and `style.<member>=<style>` "
    "for each member to change, e.g. `/api/lab?preset=testmodel&device=meta&style.buffer1=buffer`.",
)
def lab_get(spec: QuerySpec) -> LabReport:
    return inspect(resolved(spec))


@router.post("/lab", description="The same report as GET /api/lab, for a JSON spec.")
def lab_post(spec: Annotated[LabSpec, Body()]) -> LabReport:
    return inspect(resolved(spec))
