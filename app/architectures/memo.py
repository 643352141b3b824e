"""Architecture reports memoised by (id, device): each is a pure function of them, the torch and
transformers versions and this process's devices, so a bounded LRU is always exact. The device is
checked before the cache, so a request's text never becomes a key."""

from __future__ import annotations

from functools import lru_cache

from app.architectures.catalogue import build, check_device, get
from app.architectures.module_tree import ModuleTree, module_tree
from app.architectures.roundtrip import RoundTrip, round_trip


def tree(arch_id: str, device: str = "meta") -> ModuleTree:
    check_device(get(arch_id), device)
    return _tree(arch_id, device)


def tree_json(arch_id: str, device: str = "meta") -> bytes:
    check_device(get(arch_id), device)
    return _tree_json(arch_id, device)


def roundtrip(arch_id: str) -> RoundTrip:
    get(arch_id)
    return _roundtrip(arch_id)


@lru_cache(maxsize=64)
def _tree(arch_id: str, device: str) -> ModuleTree:
    return module_tree(build(arch_id, device))


@lru_cache(maxsize=64)
def _tree_json(arch_id: str, device: str) -> bytes:
    return _tree(arch_id, device).model_dump_json().encode()


@lru_cache(maxsize=16)
def _roundtrip(arch_id: str) -> RoundTrip:
    return round_trip(arch_id)


def clear() -> None:
    for f in (_tree, _tree_json, _roundtrip):
        f.cache_clear()
