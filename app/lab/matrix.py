"""The tutorials' table, complete and live: one row per member, every cell computed by running
the lab and the experiments on the module of the spec, never looked up."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import parse_qsl

import torch
from pydantic import BaseModel, Field

from app.lab.experiments import run_experiment
from app.lab.memo import report
from app.lab.spec import LabSpec, from_query
from app.lab.styles import ALL_STYLES
from app.lab.tensors import member_tensors

COLUMNS = {
    "in_parameters": "in parameters()",
    "in_buffers": "in named_buffers()",
    "in_state_dict": "in state_dict()",
    "moves_with_to": "moves with .to()",
    "cast_by_half": "cast by .half()",
    "gets_grad": "gets a grad",
    "changed_by_step": "changed by an optimizer step",
    "restored_by_load": "restored by load_state_dict",
}


class MatrixRow(BaseModel):
    member: str
    style: str
    cells: dict[str, bool | None] = Field(
        description="Column id -> answer; null where torch refused the step."
    )


class Matrix(BaseModel):
    spec: LabSpec
    columns: dict[str, str]
    rows: list[MatrixRow]
    refusals: dict[str, str] = Field(description="Experiment -> torch's refusal, for the columns left null.")


def matrix(spec: LabSpec) -> Matrix:
    """Computed on the CPU (values) and on meta (the move), whatever device the spec names.

    Memoised like reports: a pure function of the styles (and of torch), so every htmx swap that
    lands on the same spec reuses it instead of running three experiments again.
    """
    cached = _matrix(spec.model_copy(update={"device": "cpu"}).query(), torch.__version__)
    return cached.model_copy(update={"spec": spec})


@lru_cache(maxsize=256)
def _matrix(query: str, torch_version: str) -> Matrix:
    # Already canonical (the query of a resolved spec): checked once, by the caller, with its app's caps.
    cpu = spec = from_query(parse_qsl(query))
    moved = report(spec.model_copy(update={"device": "meta"}))
    lab = {m.name: m for m in report(cpu).members}
    runs = {
        e: run_experiment(e, cpu, **({"dtype": "half"} if e == "cast" else {}))
        for e in ("cast", "step", "save_load")
    }
    seen = {e: {t.name: t for t in r.tensors} for e, r in runs.items()}
    refusals = {e: f"{r.error.type}: {r.error.message}" for e, r in runs.items() if r.error}
    changed_by_optimizer = set(runs["step"].facts.get("changed_by_optimizer", ()))
    rows = []
    for member in moved.members:
        container = ALL_STYLES[member.style].kind == "container"
        own = member_tensors(seen["cast"], member.name, container)
        if member.refused or not own:  # torch never attached it: nothing to ask of it
            rows.append(MatrixRow(member=member.name, style=member.style, cells=dict.fromkeys(COLUMNS)))
            continue
        # A container's answer holds for every tensor of its layers (they are treated alike).
        # A tensor can be gone from a module before an experiment watches it: a custom plain tensor
        # named "training" is replaced by model.train() before save_load snapshots the module.
        cast, step, load = ([seen[e][n] for n in own if n in seen[e]] for e in ("cast", "step", "save_load"))
        rows.append(
            MatrixRow(
                member=member.name,
                style=member.style,
                cells={
                    "in_parameters": lab[member.name].in_parameters,
                    "in_buffers": lab[member.name].in_buffers,
                    "in_state_dict": lab[member.name].in_state_dict,
                    "moves_with_to": member.device_after == "meta",
                    "cast_by_half": all(o.dtype_after != o.dtype_before for o in cast),
                    "gets_grad": None if "step" in refusals else all(o.has_grad for o in step),
                    "changed_by_step": None
                    if "step" in refusals
                    else all(n in changed_by_optimizer for n in own),
                    # Back from the checkpoint: carried by it, and equal to the saved value after loading.
                    "restored_by_load": None
                    if "save_load" in refusals
                    else lab[member.name].in_state_dict and all(o.changed is False for o in load),
                },
            )
        )
    return Matrix(spec=spec, columns=COLUMNS, rows=rows, refusals=refusals)
