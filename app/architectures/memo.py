"""Architecture reports memoised, each made once however many ask at the same time.

Each report is a pure function of its key (an id, a device, a plan's input), the torch and
transformers versions and this process's devices, so a bounded LRU is always exact. Requests are
checked before the cache is asked, so a request's text never becomes a key; a refusal is never
kept. Single flight: while one thread builds a report, the others asking for it wait for that one
(ten first requests for one architecture build it once).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from threading import Lock
from typing import Generic, TypeVar

from torch import nn

from app.architectures import isolated
from app.architectures.catalogue import (
    ARCHITECTURES,
    MAX_BYTES,
    build,
    check_device,
    get,
    transformers_module,
)
from app.architectures.configs import encode
from app.architectures.isolated import Budget, ConfigReport
from app.architectures.module_tree import ModuleTree, module_tree
from app.architectures.planner import Facts, Plan, PlanInput, checked, facts, plan
from app.architectures.roundtrip import RoundTrip, round_trip
from app.architectures.saving import saving
from app.lab.devices import available

T = TypeVar("T")


class Flights(Generic[T]):
    """A bounded LRU of made values where each key is made once at a time: a caller that finds
    its key being made waits for it rather than making it again."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._lock = Lock()
        self._done: OrderedDict[Hashable, T] = OrderedDict()
        self._making: dict[Hashable, Future[T]] = {}
        self.made = 0  # values made (not found): what single flight saves is visible

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        with self._lock:
            if key in self._done:
                self._done.move_to_end(key)
                return self._done[key]
            waiting = self._making.get(key)
            if waiting is None:
                mine: Future[T] = Future()
                self._making[key] = mine
        if waiting is not None:
            return waiting.result()
        try:
            value = make()
        except BaseException as exc:
            with self._lock:
                del self._making[key]
            mine.set_exception(exc)
            raise
        with self._lock:
            self.made += 1
            self._done[key] = value
            while len(self._done) > self.maxsize:
                self._done.popitem(last=False)
            del self._making[key]
        mine.set_result(value)
        return value

    def __len__(self) -> int:
        return len(self._done)

    def clear(self) -> None:
        with self._lock:
            self._done.clear()
            self.made = 0


_trees: Flights[ModuleTree] = Flights(64)
_tree_json: Flights[bytes] = Flights(64)
_roundtrips: Flights[RoundTrip] = Flights(16)
_facts: Flights[Facts] = Flights(64)
_plans: Flights[Plan] = Flights(64)
_plan_json: Flights[bytes] = Flights(64)


def _tree_of(model: nn.Module) -> ModuleTree:
    found = module_tree(model)
    found.saving = saving(model)
    return found


def tree(arch_id: str, device: str = "meta", max_bytes: int = MAX_BYTES) -> ModuleTree:
    """The module tree; a real device only within ``max_bytes`` (MRE_ARCHITECTURE_MAX_BYTES)."""
    check_device(get(arch_id), device, max_bytes)
    return _trees.get((arch_id, device), lambda: _tree_of(build(arch_id, device, max_bytes=max_bytes)))


def tree_json(arch_id: str, device: str = "meta", max_bytes: int = MAX_BYTES) -> bytes:
    check_device(get(arch_id), device, max_bytes)
    return _tree_json.get(
        (arch_id, device), lambda: tree(arch_id, device, max_bytes).model_dump_json().encode()
    )


def roundtrip(arch_id: str, max_bytes: int = MAX_BYTES) -> RoundTrip:
    get(arch_id)  # round_trip refuses a model over the budget itself (a refusal is never kept)
    return _roundtrips.get(arch_id, lambda: round_trip(arch_id, max_bytes))


def server_gpus() -> list[tuple[str, int]]:
    """This server's GPUs as the planner names them, with torch's total_memory."""
    return [(f"{d.id} {d.label}", d.total_memory) for d in available() if d.kind == "cuda" and d.total_memory]


def plan_input(
    arch_id: str, batch: int, tokens: int | None = None, image: int | None = None, context: int | None = None
) -> PlanInput:
    """The plan's input checked against the model (its positions, its image size), defaults filled."""
    get(arch_id)
    found = _facts.get(arch_id, lambda: facts(build(arch_id, "meta")))
    return checked(found, batch, tokens, image, context)


def arch_plan(arch_id: str, spec: PlanInput) -> Plan:
    """The plan of a checked input (``plan_input``): built on meta, measured once per input."""
    key = (arch_id, spec.batch, spec.tokens, spec.image, spec.context)
    return _plans.get(key, lambda: plan(arch_id, build(arch_id, "meta"), spec, server_gpus()))


def plan_json(arch_id: str, spec: PlanInput) -> bytes:
    key = (arch_id, spec.batch, spec.tokens, spec.image, spec.context)
    return _plan_json.get(key, lambda: arch_plan(arch_id, spec).model_dump_json().encode())


_configs: Flights[bytes] = Flights(32)


def config_report_json(config: dict, asked: dict[str, int | None], budget: Budget) -> bytes:
    """A pasted config's report (ConfigReport JSON), made in an isolated child once per input."""
    key = (encode(config), *(asked.get(k) for k in ("batch", "tokens", "image", "context")))
    return _configs.get(key, lambda: isolated.run(config, asked, server_gpus(), budget))


def config_report(config: dict, asked: dict[str, int | None], budget: Budget) -> ConfigReport:
    return ConfigReport.model_validate_json(config_report_json(config, asked, budget))


def clear() -> None:
    for flights in (_trees, _tree_json, _roundtrips, _facts, _plans, _plan_json, _configs):
        flights.clear()


def warm_up() -> float:
    """What the first architecture request would otherwise pay, paid at start-up: transformers
    imported, each family's modeling module with it, every catalogue tree built on meta and kept.
    Returns the seconds it took."""
    start = time.perf_counter()
    transformers_module()
    for arch_id in ARCHITECTURES:
        tree_json(arch_id, "meta")
    return time.perf_counter() - start
