"""What each way of saving does with a model's tied (shared) tensors, read from the live model.

``state_dict()`` lists a tied tensor under each of its names; what reaches a file differs:

* ``torch.save(model.state_dict(), f)`` stores every storage once (its whole storage), so a tied
  weight is written once and both names come back tied.
* ``safetensors.torch.save_file(model.state_dict(), f)`` refuses tensors whose bytes overlap in one
  storage (views of one storage side by side are written).
* ``safetensors.torch.save_model(model, f)`` drops all names of such a group but one (the first in
  sorted order among those covering the whole storage, as safetensors chooses), and refuses a group
  where no name covers it (a lone slice of a larger tensor too); ``load_model`` re-ties them.
* ``model.save_pretrained(d)`` drops the tied copies transformers knows (``_tied_weights_keys``,
  found by transformers' own ``remove_tied_weights_from_state_dict``); ``from_pretrained`` ties them
  again, but a strict ``load_state_dict`` of that file reports them missing.

Shared storages are found by ``StorageImpl`` (meta tensors have one too), so this holds on meta.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from pydantic import BaseModel, Field
from torch import nn

from app.langs import EN, ZH, Text


class SaveWay(BaseModel):
    way: str = Field(examples=["torch.save"], description="The call, as code.")
    writes: bool = Field(description="False: it refuses the model's state_dict.")
    bytes: int = Field(description="Bytes of tensor data it writes (0 when it refuses).")
    dropped: dict[str, str] = Field(
        default_factory=dict, description="Names left out of the file -> the name kept for their tensor."
    )
    renamed: dict[str, str] = Field(
        default_factory=dict, description="Names written under another name: state_dict() name -> file name."
    )
    says: str
    translations: dict[str, str] = Field(default_factory=dict, description="What it says, e.g. in zh-CN.")


class Saving(BaseModel):
    shared: list[list[str]] = Field(description="state_dict() names that share one storage.")
    ways: list[SaveWay]


def _complete(t: torch.Tensor) -> bool:
    """Covers its whole storage (as safetensors' _is_complete)."""
    return t.storage_offset() == 0 and t.numel() * t.element_size() == t.untyped_storage().nbytes()


def _span(t: torch.Tensor) -> tuple[int, int]:
    """The bytes of its storage it spans, from its first element to past its last (as safetensors'
    data_ptr and _end_ptr; read from offsets, so a meta tensor has one too)."""
    start = t.storage_offset()
    last = start + sum((n - 1) * step for n, step in zip(t.shape, t.stride(), strict=True))
    return start * t.element_size(), ((last + 1) if t.numel() else start) * t.element_size()


def overlapping(state: dict[str, torch.Tensor], storages: Iterable[list[str]]) -> list[list[str]]:
    """The names safetensors treats as one tensor (its _find_shared_tensors): of each storage's
    names (``storages``), those whose bytes overlap, a name alone where nothing overlaps it (an empty
    tensor spans no byte: it overlaps nothing, as safetensors leaves empty storages out)."""
    groups: list[list[str]] = []
    for names in storages:
        areas = sorted((*_span(state[n]), n) for n in names)
        stop = None
        for start, end, name in areas:
            if stop is not None and start < stop:
                groups[-1].append(name)
            else:
                groups.append([name])
            stop = end  # as safetensors does: the last area's end, not the furthest
    order = {name: i for i, name in enumerate(state)}
    return [sorted(g, key=order.__getitem__) for g in groups]  # each in state_dict() order


def _way(way: str, writes: bool, size: int, dropped: dict[str, str], text: Text) -> SaveWay:
    return SaveWay(
        way=way, writes=writes, bytes=size, dropped=dropped, says=text[EN], translations={ZH: text[ZH]}
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def saving(model: nn.Module) -> Saving:
    state = model.state_dict()
    storages: dict[int, list[str]] = {}
    for name, t in state.items():
        storages.setdefault(t.untyped_storage()._cdata, []).append(name)
    shared = [names for names in storages.values() if len(names) > 1]
    per_name = {name: t.numel() * t.element_size() for name, t in state.items()}
    stored = sum(state[names[0]].untyped_storage().nbytes() for names in storages.values())
    listed = sum(per_name.values())
    ways = [
        _way(
            "torch.save(model.state_dict(), f)",
            True,
            stored,
            {},
            Text(
                "Writes each storage once: {size}, not the {listed} the state_dict() lists; tied names come "
                "back tied.",
                size=_mb(stored),
                listed=_mb(listed),
            )
            if shared
            else Text("Writes every tensor: {size}.", size=_mb(stored)),
        )
    ]
    groups = overlapping(state, storages.values())
    together = [g for g in groups if len(g) > 1]
    names = ", ".join(" = ".join(g) for g in together)
    ways.append(
        _way(
            "safetensors.torch.save_file(model.state_dict(), f)",
            not together,
            0 if together else listed,
            {},
            Text("Refuses: tensors share memory ({names}); save_model drops the duplicates.", names=names)
            if together
            else Text("Writes every tensor: {size}.", size=_mb(listed)),
        )
    )
    uncovered = [g for g in groups if not any(_complete(state[n]) for n in g)]
    dropped: dict[str, str] = {}
    for group in together:
        kept = min((n for n in group if _complete(state[n])), default="")
        dropped |= {n: kept for n in sorted(group) if n != kept}
    size = sum(s for n, s in per_name.items() if n not in dropped)
    if uncovered:
        words = Text(
            "Refuses: none of {names} covers the whole storage it is in; safetensors keeps only a name "
            "that does.",
            names=", ".join(" = ".join(sorted(g)) for g in uncovered),
        )
    elif dropped:
        words = Text(
            "Writes {size}, leaving out {names} (the name kept is the first in sorted order); "
            "safetensors.torch.load_model ties them again.",
            size=_mb(size),
            names=", ".join(f"{n} (= {k})" for n, k in dropped.items()),
        )
    else:
        words = Text("Writes every tensor: {size}.", size=_mb(size))
    ways.append(
        _way(
            "safetensors.torch.save_model(model, f)",
            not uncovered,
            0 if uncovered else size,
            {} if uncovered else dropped,
            words,
        )
    )
    found = _save_pretrained(model, state)
    if found is not None:
        pretrained, renamed = found
        size = sum(s for n, s in per_name.items() if n not in pretrained)
        words = (
            Text(
                "Writes {size} without {names}: from_pretrained ties them again, but a strict "
                "load_state_dict of that file reports them missing.",
                size=_mb(size),
                names=", ".join(pretrained),
            )
            if pretrained
            else Text("Writes every tensor: {size}.", size=_mb(size))
        )
        if renamed:
            first, name = next(iter(renamed.items()))
            words = Text(
                "{said} It writes {n} of them under the checkpoint's original names (save_original_format, "
                "e.g. {first} as {name}): from_pretrained converts them back; load_state_dict does not.",
                said=words,
                n=len(renamed),
                first=first,
                name=name,
            )
        way = _way("model.save_pretrained(d)", True, size, pretrained, words)
        way.renamed = renamed
        ways.append(way)
    return Saving(shared=shared, ways=ways)


def _save_pretrained(
    model: nn.Module, state: dict[str, torch.Tensor]
) -> tuple[dict[str, str], dict[str, str]] | None:
    """The names save_pretrained leaves out (-> the name it keeps) and those it writes under another
    name, by transformers' own functions; None for a model that is not a transformers model."""
    if not hasattr(model, "save_pretrained"):
        return None
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    kept = remove_tied_weights_from_state_dict(dict(state), model)
    by_storage = {state[n].untyped_storage()._cdata: n for n in kept}
    dropped = {n: by_storage.get(t.untyped_storage()._cdata, "") for n, t in state.items() if n not in kept}
    written = revert_weight_conversion(model, dict(kept))
    # A renaming keeps the tensor object: paired by it. A conversion (tensors merged or split) is
    # named by what it writes.
    named = {id(t): n for n, t in kept.items()}
    renamed = {named[id(t)]: n for n, t in written.items() if id(t) in named and named[id(t)] != n}
    made = [n for n, t in written.items() if id(t) not in named]
    renamed |= {n: ", ".join(made) for n in kept if n not in written and n not in renamed}
    return dropped, renamed
