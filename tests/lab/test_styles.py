"""The seven registration styles of DESIGN.md, each doing what its code line says."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from app.lab.styles import STYLES
from app.langs import LANGS
from tests.support.reference import attach

DESIGN_IDS = [
    "parameter",
    "register_parameter",
    "frozen_parameter",
    "buffer",
    "non_persistent_buffer",
    "nn_buffer",
    "plain_tensor",
]


def test_the_seven_ids() -> None:
    assert list(STYLES) == DESIGN_IDS


@pytest.mark.parametrize("style", DESIGN_IDS)
def test_each_style_has_text(style: str) -> None:
    s = STYLES[style]
    assert all(s.title[lang] and s.explanation[lang] for lang in LANGS)
    assert "x" in s.code and "t" in s.code


def _listing(module: nn.Module) -> tuple:
    return (
        [(n, p.requires_grad) for n, p in module.named_parameters()],
        [n for n, _ in module.named_buffers()],
        list(module.state_dict()),
        type(module.x).__name__,
    )


@pytest.mark.parametrize("style", DESIGN_IDS)
def test_attach_matches_torch_directly(style: str) -> None:
    ours, ref = nn.Module(), nn.Module()
    STYLES[style].attach(ours, "x", torch.ones(2))
    attach(ref, "x", torch.ones(2), style)
    assert _listing(ours) == _listing(ref)


@pytest.mark.parametrize("style", DESIGN_IDS)
def test_code_line_matches_attach(style: str) -> None:
    # The code line, executed inside __init__, builds what attach builds.
    source = (
        f"class M(nn.Module):\n    def __init__(self, t):\n        super().__init__()\n"
        f"        {STYLES[style].code}\n"
    )
    namespace: dict = {"nn": nn}
    exec(source, namespace)
    ours = nn.Module()
    STYLES[style].attach(ours, "x", torch.ones(2))
    assert _listing(namespace["M"](torch.ones(2))) == _listing(ours)
