"""The tiny architectures as lab presets: their own parameters and buffers are the members, each with
the style transformers gave it, and any can be restyled (Llama's ``inv_freq`` made persistent, a
LayerNorm's weight frozen), moved, and put through the lab's experiments, with permalinks.

The lab knows nothing of this feature: the composition root registers these presets
(``app.lab.presets.register``) at start-up.
"""

from __future__ import annotations

from app.architectures.catalogue import ARCHITECTURES, Architecture, build
from app.lab.presets import Member, Preset


def class_name(arch_id: str) -> str:
    return "".join(part.capitalize() for part in arch_id.split("_"))  # llama_tiny -> LlamaTiny


def preset(arch: Architecture) -> Preset:
    """The architecture as a preset: members in torch's order, parameters (a tied one once, at its
    first name) then buffers, each with its style as built."""
    model = build(arch.id, "meta")
    state = model.state_dict()
    members = [Member(name, "", "parameter") for name, _ in model.named_parameters()]
    members += [
        Member(name, "", "buffer" if name in state else "non_persistent_buffer")
        for name, _ in model.named_buffers()
    ]
    code = arch.code("cpu").splitlines()
    imports, body = code[1], [line for line in code[3:] if not line.startswith("torch.manual_seed")]
    make = "\n".join(body).replace(".to('cpu')", "")
    vision = model.main_input_name == "pixel_values"
    size = getattr(model.config, "image_size", 32)
    return Preset(
        id=arch.id,
        class_name=class_name(arch.id),
        title=arch.title,
        description=arch.description,
        layers=(),
        members=tuple(members),
        forward="",
        sample_input=f"torch.randn(2, 3, {size}, {size})" if vision else "torch.randint(0, 256, (2, 8))",
        source=f"transformers {arch.auto_class}.from_config({arch.config_class}(...))",
        make=lambda arch_id=arch.id: build(arch_id, "cpu"),
        make_code=make,
        imports=imports,
        call="model(x).logits",
    )


def presets() -> list[Preset]:
    """Every tiny architecture as a lab preset."""
    return [preset(a) for a in ARCHITECTURES.values() if a.tiny]
