"""Which styles each preset's members take: the cases the tests run every preset through."""

from __future__ import annotations

from app.lab.presets import PRESETS
from app.lab.styles import STYLES
from app.settings import Settings


def styles_of(preset: str) -> tuple[str, ...]:
    members = PRESETS[preset].members
    return members[0].styles if members else tuple(STYLES)  # custom: any tensor style


PRESET_STYLES = [(p, s) for p in PRESETS for s in styles_of(p)]

# The custom tensor cap every test resolves specs with: the app's own default (MRE_CUSTOM_MAX_ELEMENTS).
CAP = Settings().custom_max_elements

# The custom module at its fullest for a lesson: six members, every kind of style, one refused.
CUSTOM = {
    "preset": "custom",
    "style.weight": "parameter",
    "shape.weight": "4x4",
    "style.frozen": "frozen_parameter",
    "style.running_mean": "buffer",
    "style.scratch": "non_persistent_buffer",
    "style.cache": "plain_tensor",
    "style.a.b": "nn_buffer",
}
