"""Checkpoints as real libraries write them, each paired with the module it is loaded into and the
causes the doctor must find (shared by the API test and the command-line test)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_model
from torch import nn

from app.doctor import isolated
from app.doctor.patterns import group
from app.doctor.report import Limits
from app.lab.devices import device_ids
from app.lab.spec import LabSpec, resolve
from app.langs import LANGS
from tests.support.cases import CAP
from tests.support.reference import TUTORIAL_DEFAULTS, reference


@dataclass(frozen=True)
class Case:
    file: Path
    preset: str
    styles: dict[str, str]
    causes: list[str]  # the ids the doctor must give, in order

    @property
    def query(self) -> str:
        return "&".join([f"preset={self.preset}", *(f"style.{k}={v}" for k, v in self.styles.items())])

    def module(self) -> nn.Module:
        return reference(self.preset, {**TUTORIAL_DEFAULTS[self.preset], **self.styles})


def _module(preset: str, **styles: str) -> nn.Module:
    return reference(preset, {**TUTORIAL_DEFAULTS[preset], **styles})


def make_cases(folder: Path) -> dict[str, Case]:
    """Each file written by the library that writes it in the wild."""
    model = _module("testmodel")
    compiled = torch.compile(model)  # built, never run: its state_dict already has the _orig_mod. names
    torch.save(nn.DataParallel(model).state_dict(), folder / "data_parallel.pt")
    torch.save(compiled.state_dict(), folder / "compiled.pt")
    torch.save(nn.DataParallel(compiled).state_dict(), folder / "dp_compiled.pt")
    lightning = {
        "epoch": 3,
        "global_step": 120,
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
    }
    torch.save(lightning, folder / "lightning.ckpt")
    save_model(_module("tied_weights"), str(folder / "tied.safetensors"))  # keeps one name of the pair
    norm = _module("batchnorm")
    norm.bn = nn.BatchNorm1d(3, track_running_stats=False)  # the weights only, no running statistics
    torch.save(norm.state_dict(), folder / "no_stats.pt")
    torch.save(_module("positional_encoding").state_dict(), folder / "persistent_pe.pt")
    torch.save(_module("positional_encoding", pe="non_persistent_buffer").state_dict(), folder / "no_pe.pt")
    wider = _module("testmodel")
    wider.linear = nn.Linear(3, 5)  # another width, saved in half precision
    torch.save(wider.half().state_dict(), folder / "wider_half.pt")
    stored = dict(model.state_dict())  # tensors torch cannot copy from, as some pipelines store them
    torch.save({**stored, "linear.weight": stored["linear.weight"].to_sparse()}, folder / "sparse.pt")
    quantized = torch.quantize_per_tensor(stored["linear.weight"], 0.01, 0, torch.qint8)
    torch.save({**stored, "linear.weight": quantized}, folder / "quantized.pt")
    with torch.device("meta"):  # a model built on meta, saved before any weights were loaded into it
        torch.save(_module("testmodel").state_dict(), folder / "saved_on_meta.pt")
    return {
        "data_parallel": Case(folder / "data_parallel.pt", "testmodel", {}, ["prefix"]),
        "compiled": Case(folder / "compiled.pt", "testmodel", {}, ["prefix"]),
        "dp_compiled": Case(folder / "dp_compiled.pt", "testmodel", {}, ["prefix", "prefix"]),
        "lightning": Case(folder / "lightning.ckpt", "testmodel", {}, ["prefix"]),
        "tied": Case(folder / "tied.safetensors", "tied_weights", {}, ["tied_weights"]),
        "no_stats": Case(folder / "no_stats.pt", "batchnorm", {}, ["batchnorm_stats"]),
        "persistent_pe": Case(
            folder / "persistent_pe.pt",
            "positional_encoding",
            {"pe": "non_persistent_buffer"},
            ["non_persistent_saved"],
        ),
        "no_pe": Case(
            folder / "no_pe.pt",
            "positional_encoding",
            {"pe": "non_persistent_buffer"},
            ["non_persistent_absent"],
        ),
        "wider_half": Case(folder / "wider_half.pt", "testmodel", {}, ["size_mismatch", "dtype_change"]),
        "sparse": Case(folder / "sparse.pt", "testmodel", {}, ["sparse"]),
        "quantized": Case(folder / "quantized.pt", "testmodel", {}, ["quantized"]),
        "saved_on_meta": Case(folder / "saved_on_meta.pt", "testmodel", {}, ["meta_values"]),
    }


def refusal(action) -> str:
    try:
        action()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


LIMITS = Limits(max_bytes=64 * 1024**2, header_max_bytes=1024**2, max_entries=10_000)


FORMATS = ["torch_zip", "torch_legacy"]


def save(obj: object, path: Path, fmt: str) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=fmt == "torch_zip")
    return path


def ref(preset: str, **styles: str) -> torch.nn.Module:
    """The reference module, its members at the tutorial's styles but those given."""
    return reference(preset, {**TUTORIAL_DEFAULTS[preset], **styles})


def spec(preset: str, **styles: str) -> LabSpec:
    return resolve(LabSpec(preset=preset, styles=styles), device_ids(), CAP)


UNFILLED = re.compile(r"\{[a-z_]+\}|\bNone\b")  # a placeholder left as written, or a value not given
# How a cause counts its own keys (other numbers, such as the module's tensors, are not its keys').
COUNTED = re.compile(r"these (\d+) tensors|(\d+) tensors of other sizes|the file has (\d+) keys the module")
NAMED_IN_TITLE = {  # titles "...: {keys}"
    "transposed",
    "reshaped",
    "size_mismatch",
    "missing",
    "unexpected",
    "sparse",
    "quantized",
    "meta_values",
}


def said_in_full(cause: dict, where: str) -> bool:
    """A diagnosis cause (as JSON) says its keys in full: no placeholder left, its key patterns cover
    exactly its keys, a title that names keys names its first pattern, and a count it gives of its
    keys is theirs. True when it gave such a count."""
    keys, groups, at = cause["keys"], cause["groups"], (where, cause["id"])
    for lang in LANGS:
        assert not UNFILLED.search(cause["title"][lang] + cause["explanation"][lang]), (at, lang)
    if groups:
        assert sum(g["count"] for g in groups) == len(keys), at
    if cause["details"]:
        assert [d["key"] for d in cause["details"]] == keys, at
    if cause["id"] in NAMED_IN_TITLE:  # its keys as patterns (their grouping: test_patterns)
        first = str(next(iter(group(keys)))[1])
        assert all(first in cause["title"][lang] for lang in LANGS), at
    counted = COUNTED.search(cause["explanation"]["en"] + cause["title"]["en"])
    if counted:
        assert int(next(filter(None, counted.groups()))) == len(keys), (at, counted.group(0))
    return counted is not None


def in_process(job: isolated.Job, budget: isolated.Budget) -> bytes:
    """What run_now gives, with the inspector child's own work (``_answer``) done in this process,
    where mutation testing sees which test runs which line (it cannot follow a child)."""
    return isolated._outcome(isolated._answer(job, budget), "", 0, False, budget)


async def in_process_async(job: isolated.Job, budget: isolated.Budget) -> bytes:
    """run_isolated's answer, done in this process (see in_process)."""
    return in_process(job, budget)
