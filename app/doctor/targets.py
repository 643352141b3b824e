"""What a checkpoint is loaded into: a lab preset (its spec), built the one way the lab builds it; an
architecture of the catalogue, by id; or any transformers config (a ``config.json``), built on meta.

Every load the doctor tries goes through ``target_module``: each attempt gets a fresh module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import nn

from app.architectures import (
    catalogue as architectures,  # its catalogue: transformers is imported on the first build
)
from app.errors import Refusal
from app.lab.presets import PRESETS
from app.lab.report import build
from app.lab.spec import LabSpec, SpecError
from app.langs import Text

CONFIG_MAX_BYTES = 1024**2  # a config.json is a few KB


class ConfigError(Refusal):
    """A config.json that describes no model transformers can build here."""


@dataclass(frozen=True)
class ConfigTarget:
    """A transformers config, as its config.json says it: the model it describes is built on the meta
    device (keys, shapes and dtypes, all a load checks, at no memory cost), never with remote code."""

    text: str  # the config.json's contents
    name: str  # where it was read from, as the user named it (for the script and the report)

    def data(self) -> dict:
        try:
            data = json.loads(self.text)
        except (ValueError, RecursionError) as exc:
            raise ConfigError(Text("{name}: not JSON: {exc}", name=self.name, exc=str(exc)[:500])) from exc
        if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
            raise ConfigError(
                Text('{name}: a transformers config is a JSON object with a "model_type"', name=self.name)
            )
        return data

    def classes(self) -> tuple[str, str]:
        """(config class, model class) transformers builds it with; refused where it has neither."""
        transformers = architectures.transformers_module()
        data = self.data()
        model_type = data["model_type"]
        if model_type not in transformers.CONFIG_MAPPING:
            raise ConfigError(
                Text(
                    "{name}: model_type {model_type!r} is not one transformers {version} knows (a model "
                    "with its own code, auto_map, is never run here)",
                    name=self.name,
                    model_type=model_type,
                    version=transformers.__version__,
                )
            )
        config_class = transformers.CONFIG_MAPPING[model_type].__name__
        names = data.get("architectures") or []
        chosen = next(
            (n for n in names if isinstance(n, str) and isinstance(getattr(transformers, n, None), type)),
            None,
        )
        return config_class, chosen or "AutoModel"


def read_config(data: bytes, name: str) -> ConfigTarget:
    if len(data) > CONFIG_MAX_BYTES:
        raise ConfigError(
            Text(
                "{name}: {size} bytes, over the {cap} bytes a config.json may have",
                name=name,
                size=len(data),
                cap=CONFIG_MAX_BYTES,
            )
        )
    target = ConfigTarget(data.decode("utf-8", "replace"), name)
    target.data()  # refused now, not at the first load
    return target


Target = LabSpec | str | ConfigTarget  # a preset's spec, an architecture's id, a transformers config


def architecture_target(arch_id: str, enabled: bool) -> str:
    """``arch_id`` as a load target, refused (404) where unknown or where architectures are off."""
    if not enabled:
        raise architectures.ArchitectureError(404, architectures.OFF)
    return architectures.get(arch_id).id


def target_module(target: Target) -> nn.Module:
    """A fresh module to load into (each attempt gets its own: a strict load that fails has already
    copied what it could)."""
    if isinstance(target, LabSpec):
        return build(target, refusals={})
    if isinstance(target, ConfigTarget):
        return _from_config(target)
    # A tiny config on the CPU, seeded (a few hundred KB); a full size on meta, where keys, shapes
    # and dtypes, all a load checks, cost no memory (an 8B Llama included).
    if architectures.get(target).tiny:
        return architectures.build(target, "cpu")
    return architectures.build(target, "meta")


def _from_config(target: ConfigTarget) -> nn.Module:
    transformers = architectures.transformers_module()
    transformers.logging.set_verbosity_error()  # its remarks on a config's values are not the user's question
    config_class, model_class = target.classes()
    try:
        config = getattr(transformers, config_class).from_dict(target.data())
        with torch.device("meta"):
            if model_class == "AutoModel":
                return transformers.AutoModel.from_config(config)
            return getattr(transformers, model_class)._from_config(config)
    except Refusal:
        raise
    except Exception as exc:  # the config's values refused by transformers: its words
        raise ConfigError(
            Text(
                "{name}: transformers could not build {model_class} from it: {error}",
                name=target.name,
                model_class=model_class,
                error=f"{type(exc).__name__}: {str(exc)[:1000]}",
            )
        ) from exc


def listed(spec: LabSpec | None) -> LabSpec | None:
    """A lab module the doctor loads into: one of the lab's listed presets. Its inspection's child
    process knows those; a preset made on request (a pasted config kept for the lab,
    ``config:<digest>``) only the server's process does."""
    if spec is not None and spec.preset not in PRESETS:
        raise SpecError(
            ("preset",),
            Text(
                "{preset}: the checkpoint doctor loads into the lab's listed modules and the architectures, "
                "not a pasted config kept for the lab",
                preset=spec.preset[:80],
            ),
        )
    return spec


def on_meta(target: Target) -> bool:
    """Whether the module is built on meta (a load then copies nothing: assign=True in a script)."""
    if isinstance(target, LabSpec):
        return False
    return isinstance(target, ConfigTarget) or not architectures.get(target).tiny


def target_name(target: Target) -> str:
    if isinstance(target, LabSpec):
        return PRESETS[target.preset].class_name
    if isinstance(target, ConfigTarget):
        return f"{target.classes()[1]} ({target.name})"
    return target
