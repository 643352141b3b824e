"""Loading a checkpoint's state_dict into a module, as torch does it: the state_dict chosen, torch's
strict and non-strict outcome, the diagnosis of what went wrong, and the whole script that proves it."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from app.doctor.diagnosis import COMPILED, diagnose
from app.doctor.formats import Found
from app.doctor.report import CheckpointError, CheckpointReport, LoadOutcome
from app.doctor.script import Source, script
from app.doctor.targets import ConfigTarget, Target, target_module, target_name
from app.lab.spec import LabSpec
from app.langs import EN, Text


@dataclass
class Kept:
    """What a caller that writes the fixed file keeps of a load: the state as the fixes leave it, and
    the module it was proven against."""

    state: dict = field(default_factory=dict)
    target: Target | None = None


PREFERRED = ("state_dict", "model_state_dict", "model", "module", "net")
OPTIMIZER = ("state", "param_groups")  # what torch.optim.Optimizer.state_dict() holds


def choose_state_dict(report: CheckpointReport, asked: str | None) -> str:
    """The state_dict to load: the one asked for, the file itself, a conventional key, the largest."""
    found = report.state_dicts
    if asked is not None:
        if asked not in found:
            known = ", ".join(repr(s) for s in found) or "none"
            raise CheckpointError(
                Text(
                    "no state_dict at {asked!r}; state_dicts in this file: {known}", asked=asked, known=known
                )
            )
        return asked
    if not found:
        raise CheckpointError(Text("the file holds no dict of tensors to load into a module"))
    for candidate in ("", *PREFERRED):
        if candidate in found:
            return candidate
    counts = Counter(".".join(t.location[:-1]) for t in report.tensors)
    return max(found, key=lambda s: counts[s])


def optimizer_at(report: CheckpointReport, chosen: str) -> bool:
    """Whether the state_dict chosen sits in an optimizer's state_dict ({"state": {0: {...}},
    "param_groups": [...]}): its tensors are momenta, not a model's."""
    location = next((t.location[:-1] for t in report.tensors if ".".join(t.location[:-1]) == chosen), None)
    if location is None or len(location) < 2 or location[-2] != "state":
        return False
    parent = location[:-2]
    groups = [*parent, "param_groups"]
    return any(v.location[: len(groups)] == groups for v in report.values)


def _state(path: Path, fmt: str, found: Found, at: str, wanted: set[str]) -> dict[str, torch.Tensor]:
    """The state_dict at ``at``, as torch.load gave it (its ``_metadata``, module versions, kept:
    load_state_dict reads it). From safetensors only the keys the module may take are read (its
    keys, behind or in front of a prefix); the others stand in as empty meta tensors, which
    load_state_dict only counts as unexpected."""
    if fmt != "safetensors":
        return found.dicts[at]
    from safetensors import SafetensorError, safe_open

    keys = [loc[-1] for loc, _ in found.tensors]
    names = _tails(wanted)
    wanted = {key for key in keys if _named_like(key, names)}
    state = dict.fromkeys(keys, torch.empty(0, device="meta"))
    by_file: dict[Path, list[str]] = {}
    for key in keys:
        if key in wanted:
            by_file.setdefault(found.sources.get(key, path), []).append(key)
    try:
        for source, names_ in by_file.items():
            with safe_open(str(source), framework="pt") as f:
                state.update({key: f.get_tensor(key) for key in names_})
    except SafetensorError as exc:
        raise CheckpointError(Text("the safetensors library refused to read it: {exc}", exc=exc)) from exc
    return state


def _tails(names: set[str]) -> set[str]:
    """Each name and every dotted tail of it: transformer.h.0.ln_1.weight, h.0.ln_1.weight, ..."""
    tails = set()
    for name in names:
        parts = name.split(".")
        tails.update(".".join(parts[i:]) for i in range(len(parts)))
    return tails


def tensor_of(path: Path, fmt: str, found: Found, name: str) -> torch.Tensor:
    """One tensor's values, by its name in the report (read from disk now, for safetensors)."""
    if fmt != "safetensors":
        return found.objects[name]
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(found.sources.get(name, path)), framework="pt") as f:
            return f.get_tensor(name)
    except SafetensorError as exc:
        raise CheckpointError(
            Text("the safetensors library refused to read {name!r}: {exc}", name=name, exc=exc)
        ) from exc


def _named_like(key: str, names: set[str]) -> bool:
    """``key`` is one of ``names`` (the module's keys and their tails), or one of them behind a
    prefix (module.linear.weight), or a compiled submodule's (linear._orig_mod.weight)."""
    key = key.replace(COMPILED, ".")
    return key in names or any(key[i + 1 :] in names for i, c in enumerate(key) if c == ".")


def _attempt(action: object) -> str:
    try:
        action()  # type: ignore[operator]
    except (RecursionError, MemoryError):
        raise
    except Exception as exc:  # torch's refusal is the result
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def load_into(
    path: Path,
    fmt: str,
    found: Found,
    report: CheckpointReport,
    spec: Target,
    at: str | None,
    files: tuple[str, ...] = (),
    kept: Kept | None = None,
) -> LoadOutcome:
    """``files`` are the weight files as the user named them, for the script (``path`` by default);
    ``kept`` receives the fixed state."""
    with warnings.catch_warnings():
        # A full-size architecture is on meta, where torch warns of each copy that it does nothing.
        warnings.filterwarnings("ignore", message="for .*: copying from a non-meta parameter")
        return _load_into(path, fmt, found, report, spec, at, files or (str(path),), kept)


def _load_into(
    path: Path,
    fmt: str,
    found: Found,
    report: CheckpointReport,
    spec: Target,
    at: str | None,
    files: tuple[str, ...],
    kept: Kept | None,
) -> LoadOutcome:
    chosen = choose_state_dict(report, at)
    loose: nn.Module = target_module(spec)
    expected = loose.state_dict()  # keys and shapes, read before anything is loaded
    state = _state(path, fmt, found, chosen, set(expected))
    strict = _attempt(lambda: target_module(spec).load_state_dict(state))
    result: list = []
    non_strict = _attempt(lambda: result.append(loose.load_state_dict(state, strict=False)))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if result:
        missing, unexpected = list(result[0].missing_keys), list(result[0].unexpected_keys)
    mismatches = [
        {"key": k, "checkpoint": _shape(state[k]), "module": list(v.shape)}
        for k, v in expected.items()
        if k in state and _shape(state[k]) != list(v.shape)
    ]
    file_is = None
    if optimizer_at(report, chosen):
        file_is = (
            "optimizer_state",
            Text(
                "the file is an optimizer's state_dict (momenta by parameter number, and param_groups): "
                "load it with optimizer.load_state_dict, and the model from its own checkpoint"
            ),
        )
    diagnosis = diagnose(
        state,
        lambda: target_module(spec),
        strict,
        file_is=file_is,
        absent=found.absent or None,
        fixed=kept.state if kept is not None else None,
    )
    if kept is not None:
        kept.target = spec
    into = target_name(spec)
    as_dict = tuple(found.read_as_dict)
    allowed = tuple(n for n in found.safe_globals if n not in as_dict)
    source = Source(files, fmt, found.raw.get(chosen, ()), allowed, as_dict)
    return LoadOutcome(
        spec=spec if isinstance(spec, LabSpec) else None,
        architecture=spec if isinstance(spec, str) else None,
        config=spec.name if isinstance(spec, ConfigTarget) else None,
        target=into,
        state_dict=chosen,
        strict=strict,
        non_strict=non_strict,
        missing_keys=missing,
        unexpected_keys=unexpected,
        size_mismatches=mismatches,
        diagnosis=diagnosis,
        script=script(source, spec, diagnosis.fixes, diagnosis.headline[EN], into),
    )


def _shape(t: torch.Tensor) -> list[int]:
    return [len(t.unbind())] if t.is_nested else list(t.shape)
