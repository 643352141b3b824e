"""Crafted inputs for the safety tests: a checkpoint whose unpickling would run code."""

from __future__ import annotations

import builtins
import io
from pathlib import Path

import torch


class Payload:
    """Unpickling this writes ``marker``: the side effect a malicious checkpoint would have."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def malicious_checkpoint(marker: Path, legacy: bool = False) -> bytes:
    """A torch file with a real tensor beside the payload, as an attacker would dress it."""
    buffer = io.BytesIO()
    torch.save(
        {"weight": torch.ones(2), "x": Payload(marker)}, buffer, _use_new_zipfile_serialization=not legacy
    )
    return buffer.getvalue()
