"""Real models as lab presets: their own parameters and buffers are the members, each with the style
transformers gave it, and any can be restyled (Llama's ``inv_freq`` made persistent, a LayerNorm's
weight frozen), moved, and put through the lab's experiments, with permalinks.

Two kinds: the tiny catalogue architectures (``presets``), and a pasted config.json small enough for
the lab (``config_preset``; ``app.architectures.config_store`` keeps it and decides when it is).

The lab knows nothing of this feature: the composition root registers these presets
(``app.lab.presets.register``, ``add_source``) at start-up.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from app.architectures import configs
from app.architectures.catalogue import (
    ARCHITECTURES,
    Architecture,
    build,
)
from app.lab.presets import Member, Preset
from app.langs import Text, verbatim


def class_name(arch_id: str) -> str:
    return "".join(part.capitalize() for part in arch_id.split("_"))  # llama_tiny -> LlamaTiny


def members(model: nn.Module) -> tuple[Member, ...]:
    """The model's tensors in torch's order, parameters (a tied one once, at its first name) then
    buffers, each with its style as built."""
    state = model.state_dict()
    found = [Member(name, "", "parameter") for name, _ in model.named_parameters()]
    found += [
        Member(name, "", "buffer" if name in state else "non_persistent_buffer")
        for name, _ in model.named_buffers()
    ]
    return tuple(found)


def sample_input(model: nn.Module) -> str:
    """A batch its forward takes: two images of its size, or two rows of 8 token ids its vocabulary
    and positions hold."""
    config = model.config
    if model.main_input_name == "pixel_values":
        size = getattr(config, "image_size", 32)
        size = size if isinstance(size, int) else 32
        channels = getattr(config, "num_channels", 3)
        return f"torch.randn(2, {channels}, {size}, {size})"
    vocab = getattr(config, "vocab_size", 256)
    vocab = min(vocab, 256) if isinstance(vocab, int) and vocab > 0 else 256
    positions = next(
        (
            v
            for k in ("max_position_embeddings", "n_positions")
            if isinstance(v := getattr(config, k, None), int) and v > 0
        ),
        8,
    )
    return f"torch.randint(0, {vocab}, (2, {min(8, positions)}))"


def _made(
    arch: Architecture,
    model: nn.Module,
    preset_id: str,
    name: str,
    title: Text,
    description: Text,
    make: Callable[[], nn.Module],
    call: str,
) -> Preset:
    """The preset of a model built on meta (``model``), which ``make`` builds with real values."""
    code = arch.code("cpu").splitlines()
    imports, body = code[1], [line for line in code[3:] if not line.startswith("torch.manual_seed")]
    return Preset(
        id=preset_id,
        class_name=name,
        title=title,
        description=description,
        layers=(),
        members=members(model),
        forward="",
        sample_input=sample_input(model),
        source=f"transformers {arch.auto_class}.from_config({arch.config_class}(...))",
        make=make,
        make_code="\n".join(body).replace(".to('cpu')", ""),
        imports=imports,
        call=call,
    )


def preset(arch: Architecture) -> Preset:
    """A tiny catalogue architecture as a preset."""
    return _made(
        arch,
        build(arch.id, "meta"),
        arch.id,
        class_name(arch.id),
        arch.title,
        arch.description,
        lambda arch_id=arch.id: build(arch_id, "cpu"),
        "model(x).logits",
    )


def presets() -> list[Preset]:
    """Every tiny architecture as a lab preset."""
    return [preset(a) for a in ARCHITECTURES.values() if a.tiny]


def config_preset(preset_id: str, config: dict, elements: int) -> Preset:
    """A checked config (``configs.read``) as a preset, built in this process: call it only for a
    config the isolated child built and counted within the lab's cap (``config_store`` does)."""
    arch = configs.architecture(config)
    model = configs.build(config, "meta")
    title = verbatim(f"{type(model).__name__} · config.json {preset_id.partition(':')[2][:8]}")
    description = Text(
        "A config.json pasted on the architectures page ({model_type}): {elements} parameter and buffer "
        "elements, built by transformers in this server with seeded values. Its own tensors are the "
        "members: restyle them, move it, run the experiments.",
        model_type=config["model_type"],
        elements=f"{elements:,}",
    )
    return _made(
        arch,
        model,
        preset_id,
        # Not the transformers class's own name, which the script imports (a function of that name
        # would hide it).
        f"Pasted{type(model).__name__}",
        title,
        description,
        lambda: configs.build(config, "cpu"),
        # The first field of transformers' output: a head's logits, a base model's last hidden state.
        "model(x)[0]",
    )
