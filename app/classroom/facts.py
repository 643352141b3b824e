"""A lab state (the lab's permalink query) read live, and the facts a prediction may ask about.

A fact is a name (``member.buffer1.device_after``) and a value as text, read from the report,
the matrix and the experiment of the state: a lesson's question names one, and its right answer
is whichever choice equals the live value, so no answer is ever written down.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from app.lab import memo
from app.lab.experiments import ExperimentResult
from app.lab.matrix import Matrix, matrix
from app.lab.query import Bounds, LabQuery, read
from app.lab.report import LabReport
from app.lab.spec import LabSpec


@dataclass(frozen=True)
class LabState:
    """What one permalink shows: its spec, report, matrix and experiment, read from torch."""

    query: str
    spec: LabSpec
    report: LabReport
    matrix: Matrix
    experiment: ExperimentResult | None


def read_state(state: str, bounds: Bounds) -> LabState:
    """The state of a lab query, read strictly: anything it does not know (a typo in a lesson) is a
    SpecError naming it."""
    return state_of(state, read(parse_qsl(state, keep_blank_values=True), bounds))


def state_of(state: str, query: LabQuery) -> LabState:
    """What a read query shows, from torch (its report and experiment memoised: run once each)."""
    experiment = memo.experiment(query) if query.experiment else None
    return LabState(state, query.spec, memo.report(query.spec), matrix(query.spec), experiment)


def as_text(value: object) -> str:
    """A fact's value as a choice names it: true/false, a list joined by commas (none if empty)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "refused"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) if value else "none"
    return str(value)


def facts(state: LabState) -> dict[str, str]:
    """Every fact of a state a question may name, each read from the live report."""
    found: dict[str, str] = {}
    for m in state.report.members:
        for key in ("style", "in_parameters", "in_buffers", "in_state_dict", "device_before", "device_after"):
            found[f"member.{m.name}.{key}"] = as_text(getattr(m, key))
    for row in state.matrix.rows:
        for key, value in row.cells.items():
            found[f"matrix.{row.member}.{key}"] = as_text(value)
    e = state.experiment
    if e is not None:
        found["experiment.error"] = e.error.type if e.error else "none"
        for key, value in e.facts.items():
            found[f"experiment.{key}"] = as_text(value)
            if isinstance(value, str) and value != "ok":
                found[f"experiment.{key}"] = value.partition(":")[0]  # a refusal: torch's exception type
        for t in e.tensors:
            for key in ("changed", "device_after", "dtype_after", "has_grad", "same_object"):
                found[f"experiment.tensor.{t.name}.{key}"] = as_text(getattr(t, key))
    return found


def outcome_message(state: LabState, fact: str) -> str | None:
    """Torch's whole message behind a refusal fact (``experiment.strict``), to show on reveal."""
    e = state.experiment
    key = fact.removeprefix("experiment.")
    if e is None or not fact.startswith("experiment."):
        return None
    value = e.facts.get(key)
    return value if isinstance(value, str) and value != "ok" else None
