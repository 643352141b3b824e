"""Any transformers config.json: read and checked here (refusals name the field), carried in the URL
(compressed, so the page stays a permalink and the server stateless), and built by transformers on
meta. A config is untrusted input: it can ask for a model of any size, so everything that builds or
runs it happens in an isolated child process (``app.architectures.isolated``); this module only
reads text and, in that child, builds.
"""

from __future__ import annotations

import base64
import json
import re
import zlib

import torch
from torch import nn

from app.architectures.catalogue import Architecture, ArchitectureError, transformers_module
from app.errors import out_of_memory
from app.langs import Text, verbatim

# What never changes the modules: where it came from, which transformers wrote it, its load dtype.
DROPPED = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "auto_map", "_commit_hash")
CONFIG = "config.json"
MAX_TEXT = 64 * 1024  # MRE_ARCHITECTURE_CONFIG_MAX_BYTES by default
MAX_PARAM = 4096  # characters of the c= parameter read (the URL cap is 8 KB anyway)


class ConfigError(ArchitectureError):
    """A config refused, naming the field at fault."""

    def __init__(self, text: Text, *, field: str, status: int = 422) -> None:
        super().__init__(status, Text("{field}: {said}", field=field, said=text))
        self.loc = (field,)


def read(text: str, max_bytes: int = MAX_TEXT) -> dict:
    """The config of a pasted or uploaded config.json, in canonical form: the keys that never change
    the modules dropped, labels as their count. Refusals name the field."""
    if len(text.encode()) > max_bytes:
        raise ConfigError(
            Text(
                "{size} bytes, over the cap of {cap} (MRE_ARCHITECTURE_CONFIG_MAX_BYTES)",
                size=len(text.encode()),
                cap=max_bytes,
            ),
            field=CONFIG,
            status=413,
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            Text(
                "not JSON: {error} (line {line}, column {column})",
                error=exc.msg,
                line=exc.lineno,
                column=exc.colno,
            ),
            field=CONFIG,
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(Text("a JSON object is expected, as config.json holds"), field=CONFIG)
    return canonical(config)


def canonical(config: dict) -> dict:
    config = {k: v for k, v in config.items() if k not in DROPPED}
    labels = config.pop("id2label", None)
    config.pop("label2id", None)
    if isinstance(labels, dict) and "num_labels" not in config:
        config["num_labels"] = len(labels)  # the names never change a tensor; their count does
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(
            Text("missing: transformers reads it to choose the config class"), field="model_type"
        )
    mapping = transformers_module().CONFIG_MAPPING
    if model_type not in mapping:
        raise ConfigError(
            Text(
                "{value} is not a model type this transformers ({version}) knows; {n} are, e.g. {some}",
                value=repr(model_type)[:80],
                version=transformers_module().__version__,
                n=len(list(mapping.keys())),
                some="llama, gpt2, bert, vit, resnet, t5, qwen2, mistral",
            ),
            field="model_type",
        )
    return dict(sorted(config.items()))


def encode(config: dict) -> str:
    """The config as a URL parameter: compact JSON, zlib, urlsafe base64."""
    raw = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def decode(param: str) -> dict:
    """The config of a ``c=`` parameter, read back and checked as a pasted one is."""
    if len(param) > MAX_PARAM or not re.fullmatch(r"[A-Za-z0-9_-]*", param):
        raise ConfigError(Text("not a config this server wrote (paste the config.json again)"), field="c")
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(base64.urlsafe_b64decode(param + "=" * (-len(param) % 4)), MAX_TEXT)
        if not inflate.eof:  # cut short, or inflating past the cap: never inflated further
            raise ValueError  # said below, as any other link that is not ours
        return read(raw.decode())
    except (ValueError, zlib.error, UnicodeDecodeError):
        raise ConfigError(
            Text("not a config this server wrote (paste the config.json again)"), field="c"
        ) from None


def _field_of(error: Exception, config: dict) -> str:
    said = str(error)
    found = re.search(r"field '(\w+)'", said)
    if found:
        return found.group(1)
    for key in config:  # a key named in the message, as it is or in words ("hidden size")
        for name in {key, key.replace("_", " ")}:
            if re.search(rf"\b{re.escape(name)}\b", said, re.IGNORECASE):
                return key
    return CONFIG


def architecture(config: dict, config_class: str = "") -> Architecture:
    """The config as the catalogue's architectures are described (id "config"): its config class
    (``config_class`` when known: no transformers call then), and the class its ``architectures``
    names, else AutoModel's."""
    config_class = config_class or type(made_config(config)).__name__
    names = config.get("architectures") or []
    auto_class = "AutoModel"
    if isinstance(names, list) and names and isinstance(names[0], str):
        auto_class = names[0]
        transformers = transformers_module()
        maker = getattr(transformers, auto_class, None)
        # Named as AutoModel is when nothing is named; else a model class (not a config class, an
        # Auto class of a head, a function or a module of transformers).
        is_model = isinstance(maker, type) and issubclass(maker, transformers.PreTrainedModel)
        if auto_class != "AutoModel" and not is_model:
            raise ConfigError(
                Text("{name} is no model class of transformers", name=repr(auto_class)[:80]),
                field="architectures",
            )
    kwargs = {k: v for k, v in config.items() if k != "model_type"}
    title = verbatim(f"{names[0] if names else config_class} · config.json")
    # Its title stands for its description too: the config's page and its lab preset say their own.
    return Architecture("config", config["model_type"], config_class, auto_class, kwargs, False, title, title)


def made_config(config: dict) -> object:
    transformers = transformers_module()
    kwargs = {k: v for k, v in config.items() if k != "model_type"}
    try:
        return transformers.AutoConfig.for_model(config["model_type"], **kwargs)
    except MemoryError:
        raise
    except Exception as exc:  # the config class's own refusal: named by its field
        raise ConfigError(
            verbatim(f"{type(exc).__name__}: {exc}"[:600]), field=_field_of(exc, config)
        ) from None


def model_class(config: dict) -> type:
    """The class that builds it (its modeling module imported): what ``architectures`` names, else
    the base model transformers maps its config class to."""
    transformers = transformers_module()
    arch = architecture(config)
    if arch.auto_class != "AutoModel":
        return getattr(transformers, arch.auto_class)
    try:
        return transformers.AutoModel._model_mapping[type(made_config(config))]
    except KeyError:
        raise ConfigError(
            Text("transformers has no model class for {model_type}", model_type=config["model_type"]),
            field="model_type",
        ) from None


def build(config: dict, device: str) -> nn.Module:
    """The model of a checked config, built on meta (or, small ones, on the CPU, seeded)."""
    made = made_config(config)
    maker = model_class(config)._from_config
    try:
        if device == "meta":
            with torch.device("meta"):
                return maker(made)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return maker(made).to(device)
    except (ArchitectureError, MemoryError):
        raise
    except Exception as exc:
        if out_of_memory(exc):
            raise MemoryError(str(exc)) from None
        raise ConfigError(
            verbatim(f"{type(exc).__name__}: {exc}"[:600]), field=_field_of(exc, config)
        ) from None
