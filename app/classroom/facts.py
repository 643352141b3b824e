"""A lab state (the lab's permalink query) read live, and the facts a prediction may ask about.

A fact is a name (``member.buffer1.device_after``) and a value as text, read from the report,
the matrix and the experiment of the state: a lesson's question names one, and its right answer
is whichever choice equals the live value, so no answer is ever written down.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from app.lab import memo
from app.lab.experiments import EXPERIMENTS, ExperimentResult, run_experiment
from app.lab.matrix import Matrix, matrix
from app.lab.report import LabReport
from app.lab.spec import SHAPE_PREFIX, STYLE_PREFIX, LabSpec, SpecError, from_query, loaded_into, resolve
from app.langs import Text

INTO = "into."  # load_into: the styles of the module loaded into, as in the lab's URL
VIEW_KEYS = ("lang", "present", "embed")  # how a page is shown, not what it shows


@dataclass(frozen=True)
class LabState:
    """What one permalink shows: its spec, report, matrix and experiment, read from torch."""

    query: str
    spec: LabSpec
    report: LabReport
    matrix: Matrix
    experiment: ExperimentResult | None


def _is_spec_key(key: str) -> bool:
    return key in ("preset", "device") or key.startswith((STYLE_PREFIX, SHAPE_PREFIX))


def read_state(query: str, devices: Iterable[str], max_elements: int) -> LabState:
    """The state of a lab query; anything it does not know (a typo in a lesson) is a SpecError."""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in VIEW_KEYS]
    spec = resolve(from_query([p for p in pairs if _is_spec_key(p[0])]), devices, max_elements)
    rest = dict(p for p in pairs if not _is_spec_key(p[0]))
    experiment = None
    if rest:
        experiment = _experiment(rest, spec, devices, max_elements)
    return LabState(query, spec, memo.report(spec), matrix(spec), experiment)


def _experiment(rest: dict[str, str], spec: LabSpec, devices: Iterable[str], max_elements: int):
    chosen = EXPERIMENTS.get(rest.pop("experiment", ""))
    if chosen is None:
        raise SpecError(
            ("query", "experiment"), Text("experiment: one of {names}", names=", ".join(EXPERIMENTS))
        )
    into = {k.removeprefix(INTO): rest.pop(k) for k in list(rest) if k.startswith(INTO)}
    params = {}
    for name, allowed in chosen.params.items():
        if name in rest:
            value = rest.pop(name)
            if value not in allowed:
                raise SpecError(
                    ("query", name), Text("{name}: one of {names}", name=name, names=", ".join(allowed))
                )
            params[name] = value
    if rest:
        raise SpecError(
            ("query", next(iter(rest))), Text("unknown query parameter {name!r}", name=next(iter(rest)))
        )
    other = resolve(loaded_into(spec, into), devices, max_elements) if chosen.id == "load_into" else None
    return run_experiment(chosen.id, spec, other, **params)


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
