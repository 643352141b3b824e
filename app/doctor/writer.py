"""The fixed checkpoint, written: the state the diagnosis proved, loaded by torch into a fresh module
with ``strict=True`` here before a byte is written, saved as safetensors.

Only a fix that gives every tensor of the module from the file is written: a state in which some
tensors would keep the module's initial values (a missing head, BatchNorm statistics) would hold
values nobody trained, under the file's name. safetensors refuses tensors that share memory (tied
weights), so each name gets its own copy; loading re-ties them, as the module shares the tensor.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from app.doctor.diagnosis import Diagnosis
from app.doctor.examine import inspect_files
from app.doctor.load import Kept
from app.doctor.report import CheckpointError, Limits
from app.doctor.targets import Target, target_module
from app.langs import Text

NOT_FIXABLE = 409  # the file does not load into that module, and no fix makes every tensor load


class Written(BaseModel):
    path: str = Field(description="Where the fixed checkpoint was written.")
    tensors: int
    bytes: int = Field(description="The file's size.")
    verdict: str = Field(description="The diagnosis' verdict on the file given: loads or fixed.")
    fixes: list[str] = Field(description="The fixes applied, in order.")
    headline: dict[str, str]


def write_fixed(
    paths: list[Path], names: list[str], limits: Limits, spec: Target | None, at: str | None, out: Path
) -> Written:
    from safetensors.torch import save_file

    kept = Kept()
    report = inspect_files(paths, names, limits, spec, at, kept)
    load = report.load
    if load is None or load.diagnosis is None:
        raise CheckpointError(
            Text("nothing to load it into: give --into (a preset, an architecture or a config.json)")
        )
    diagnosis: Diagnosis = load.diagnosis
    if diagnosis.verdict not in ("loads", "fixed"):
        raise CheckpointError(
            Text("not written: {headline}", headline=_rendered(diagnosis.headline)), status=NOT_FIXABLE
        )
    state, target = kept.state, kept.target
    assert target is not None
    meta = [k for k, v in state.items() if v.is_meta]
    if meta:  # never: a fixed verdict takes every tensor from the file
        raise CheckpointError(Text("not written: {key} has no value in the file", key=meta[0]))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="for .*: copying from a non-meta parameter")
        target_module(target).load_state_dict(state, strict=True)  # torch's word, before writing
    tensors = _unshared(state)
    save_file(tensors, str(out), metadata={"format": "pt"})
    from safetensors.torch import load_file

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="for .*: copying from a non-meta parameter")
        target_module(target).load_state_dict(load_file(str(out)), strict=True)  # and after
    return Written(
        path=str(out),
        tensors=len(tensors),
        bytes=out.stat().st_size,
        verdict=diagnosis.verdict,
        fixes=diagnosis.fixes,
        headline=diagnosis.headline,
    )


def _rendered(words: dict[str, str]) -> Text:
    from app.langs import rendered

    return rendered(words) if words else Text("it does not load")


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor on memory of its own, contiguous, as safetensors requires."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, t in state.items():
        storage = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        whole = t.is_contiguous() and t.storage_offset() == 0 and t.nbytes == storage[1]
        out[key] = t if whole and storage not in seen else t.detach().clone().contiguous()
        seen.add(storage)
    return out
