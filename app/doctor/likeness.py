"""Whose keys a file's are: its keys' layout (layer indices left out) beside that of each architecture
the explorer knows, each built by transformers on the meta device. Asked of transformers, not read
from a table of names; only when a file is found to be another model's."""

from __future__ import annotations

import re
from functools import cache

from app.architectures import catalogue
from app.errors import Refusal

LIKE = 0.5  # at least this share of the file's layouts must be the architecture's
_INDEX = re.compile(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)")


def layout(key: str) -> str:
    """A key without its layer indices: encoder.layer.3.attention.self.query.weight ->
    encoder.layer.#.attention.self.query.weight."""
    return _INDEX.sub("#", key)


@cache
def _layouts() -> dict[str, frozenset[str]]:
    """Each family's key layouts, from its tiny (else first) config built on meta."""
    found: dict[str, frozenset[str]] = {}
    for arch in catalogue.ARCHITECTURES.values():
        if arch.family in found and not arch.tiny:
            continue
        try:
            model = catalogue.build(arch.id, "meta")
        except Refusal:  # transformers missing: no name, not an error
            return {}
        found[arch.family] = frozenset(_suffixes(layout(k) for k in model.state_dict()))
    return found


def _suffixes(layouts: object) -> set[str]:
    """Each layout and its tails (a head's model prefix, bert., model., may or may not be there)."""
    out = set()
    for item in layouts:  # type: ignore[attr-defined]
        parts = item.split(".")
        out.update(".".join(parts[i:]) for i in range(min(len(parts) - 1, 2) + 1))
    return out


def closest(keys: list[str]) -> str | None:
    """The family (gpt2, llama, bert, ...) whose layouts hold most of ``keys``', if one holds at
    least half of them."""
    mine = {layout(k) for k in keys}
    if not mine:
        return None
    best, share = None, 0.0
    for family, theirs in _layouts().items():
        held = sum(1 for k in mine if k in theirs) / len(mine)
        if held > share:
            best, share = family, held
    return best if share >= LIKE else None
