"""Architectures as transformers builds them, written out in the tests rather than through build()."""

from __future__ import annotations

import torch
import transformers
from torch import nn

from app.architectures.catalogue import ARCHITECTURES


def direct(arch_id: str, device: str = "meta") -> nn.Module:
    """The model as transformers builds it, written out here rather than through build()."""
    arch = ARCHITECTURES[arch_id]
    config = getattr(transformers, arch.config_class)(**arch.config)
    auto = getattr(transformers, arch.auto_class)
    if device == "meta":
        with torch.device("meta"):
            return auto.from_config(config)
    torch.manual_seed(0)
    return auto.from_config(config).to(device)
