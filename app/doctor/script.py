"""The doctor's fix as one whole script a user can paste and run with plain ``python``: the loading
lines (the file or its shards, ``weights_only=True``, the state_dict chosen), the model, the fixes in
order, and ``load_state_dict(state, strict=True)``; its first lines say what the doctor predicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from app.architectures import catalogue
from app.doctor.targets import ConfigTarget, Target, on_meta
from app.lab import codegen
from app.lab.presets import PRESETS
from app.lab.spec import LabSpec


@dataclass(frozen=True)
class Source:
    """Where the state comes from, as the script reads it."""

    files: tuple[str, ...]  # the weight files as the user named them (a sharded one's in order)
    fmt: str  # safetensors, torch_zip, torch_legacy or torch_dcp (files: the folder)
    location: tuple[str | int, ...] = ()  # keys from the top of the file down to the state_dict
    safe_globals: tuple[str, ...] = ()  # module.name of each global the file needs allowed
    as_dict: tuple[str, ...] = ()  # module.name of each dict subclass read as an OrderedDict


def _literal(value: object) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _comment(text: str) -> str:
    """One comment line, whatever the text holds (a newline in a file name ends no comment here)."""
    return "# " + text.replace("\r", " ").replace("\n", " ")


def _torch_load(path: str, indent: str = "") -> str:
    call = 'torch.load({}, map_location="cpu", weights_only=True)'
    if path.endswith(".safetensors"):  # torch >= 2.13 reads a file so named as safetensors
        return f'{indent}with open({_literal(path)}, "rb") as f:\n{indent}    state = {call.format("f")}'
    return f"{indent}state = {call.format(_literal(path))}"


def loading(source: Source) -> tuple[list[str], list[str]]:
    """(imports, lines) that leave the chosen state_dict in ``state``."""
    imports: list[str] = []
    lines: list[str] = []
    if source.fmt == "torch_dcp":
        imports += [
            "import os",
            "import tempfile",
            "from torch.distributed.checkpoint.format_utils import dcp_to_torch_save",
        ]
        lines += [
            'converted = os.path.join(tempfile.mkdtemp(), "model.pt")',
            f"dcp_to_torch_save({_literal(source.files[0])}, converted)  # the DCP folder as one torch file",
            'state = torch.load(converted, map_location="cpu", weights_only=True)',
        ]
    elif source.fmt == "safetensors":
        imports.append("from safetensors.torch import load_file")
        if len(source.files) == 1:
            lines.append(f"state = load_file({_literal(source.files[0])})")
        else:
            lines += ["state = {}", f"for shard in {json.dumps(list(source.files), ensure_ascii=False)}:"]
            lines.append("    state.update(load_file(shard))")
    elif len(source.files) == 1:
        lines.append(_torch_load(source.files[0]))
    else:
        lines += ["merged = {}", f"for shard in {json.dumps(list(source.files), ensure_ascii=False)}:"]
        lines += [
            '    merged.update(torch.load(shard, map_location="cpu", weights_only=True))',
            "state = merged",
        ]
    if source.safe_globals or source.as_dict:
        modules = sorted({g.rpartition(".")[0] for g in source.safe_globals})
        imports += [f"import {m}" for m in modules] + (["import collections"] if source.as_dict else [])
        allowed = ", ".join(
            [*source.safe_globals, *(f"(collections.OrderedDict, {_literal(n)})" for n in source.as_dict)]
        )
        lines = [
            f"with torch.serialization.safe_globals([{allowed}]):",
            *("    " + line for line in "\n".join(lines).split("\n")),
        ]
    if source.location:
        lines.append("state = state" + "".join(f"[{_literal(k)}]" for k in source.location))
    return imports, lines


def model_lines(target: Target) -> list[str]:
    if isinstance(target, LabSpec):
        preset = PRESETS[target.preset]
        helpers = codegen._custom_helpers(preset).strip()  # the lab's own helper for custom members
        return [
            "from torch import nn",
            *([helpers] if helpers else []),
            "",
            codegen.class_source(target),
            "",
            "",
            f"model = {preset.class_name}()",
        ]
    if isinstance(target, ConfigTarget):
        _, model_class = target.classes()
        build = (
            f"{model_class}.from_config(config)"
            if model_class == "AutoModel"
            else f"{model_class}._from_config(config)"
        )
        return [
            f"from transformers import AutoConfig, {model_class}",
            "",
            f"config = AutoConfig.from_pretrained({_literal(target.name)})",
            'with torch.device("meta"):  # keys, shapes, dtypes; the load below assigns the file\'s tensors',
            f"    model = {build}",
        ]
    arch = catalogue.get(target)
    code = arch.code("cpu" if arch.tiny else "meta").strip().split("\n")
    return [line for line in code if line != "import torch"]


def _files(files: tuple[str, ...]) -> str:
    return files[0] if len(files) == 1 else f"{files[0]} and {len(files) - 1} more shards"


def script(source: Source, target: Target, fixes: list[str], headline: str, into: str) -> str:
    imports, lines = loading(source)
    assign = ", assign=True" if on_meta(target) else ""
    parts = [
        _comment(f"mre: {_files(source.files)} into {into}"),
        _comment(f"predicted: {headline}"),
        "import torch",
        *imports,
        "",
        *lines,
        "",
        *model_lines(target),
        "",
    ]
    if fixes:
        parts += ["# the fixes, in order", *fixes, ""]
    parts.append(f"print(model.load_state_dict(state, strict=True{assign}))")
    return "\n".join(parts) + "\n"
