"""Architecture reports memoised: the same answer object for the same (id, device), every device
checked before the cache is asked, and a refusal never kept."""

from __future__ import annotations

import json
import threading
import time

import pytest

from app.architectures import configs, isolated, memo
from app.architectures.catalogue import ArchitectureError, real_bytes
from app.architectures.planner import checked, facts, plan
from app.lab.devices import Device
from tests.support.architectures import LLAMA_CONFIG, direct


def test_a_tree_is_built_once_per_architecture_and_device() -> None:
    memo.clear()
    first = memo.tree("llama_tiny", "meta")
    assert memo.tree("llama_tiny", "meta") is first
    assert memo.tree("llama_tiny", "cpu") is not first
    assert memo.tree_json("llama_tiny", "meta") == first.model_dump_json().encode()
    assert memo.roundtrip("llama_tiny") is memo.roundtrip("llama_tiny")
    memo.clear()
    assert memo.tree("llama_tiny", "meta") is not first


@pytest.mark.parametrize(
    ("arch_id", "device"), [("nope", "meta"), ("llama_8b", "cpu"), ("llama_tiny", "tpu:0")]
)
def test_a_refused_request_is_no_key_of_the_cache(arch_id: str, device: str) -> None:
    memo.clear()
    with pytest.raises(ArchitectureError):
        memo.tree(arch_id, device)
    with pytest.raises(ArchitectureError):
        memo.tree_json(arch_id, device)
    assert len(memo._trees) == 0


def test_concurrent_first_requests_build_once(monkeypatch: pytest.MonkeyPatch) -> None:
    memo.clear()
    built = []
    real = memo.module_tree

    def slow(model: object) -> object:
        built.append(model)
        time.sleep(0.2)  # the others arrive meanwhile: without single flight each would build
        return real(model)

    monkeypatch.setattr(memo, "module_tree", slow)  # _tree_of calls it
    found = []
    threads = [threading.Thread(target=lambda: found.append(memo.tree("gpt2"))) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and len(found) == 10 and all(f is found[0] for f in found)


def test_a_failed_build_is_not_kept_and_reaches_every_waiter() -> None:
    flights: memo.Flights[int] = memo.Flights(4)
    with pytest.raises(ZeroDivisionError):
        flights.get("k", lambda: 1 // 0)
    assert flights.get("k", lambda: 7) == 7 and flights.made == 1
    for i in range(6):
        flights.get(i, lambda i=i: i)
    assert len(flights) == 4  # bounded: the least recently used went


def test_a_budget_is_checked_before_the_cache_is_asked_and_a_round_trip_gets_it() -> None:
    """resnet50 (102 MB) at exactly its real bytes builds on the CPU; one byte less is refused,
    even with the tree already kept."""
    memo.clear()
    size = real_bytes("resnet50")
    kept = memo.tree("resnet50", "cpu", max_bytes=size)
    assert kept.totals.unique_bytes == size
    assert memo.tree_json("resnet50", "cpu", max_bytes=size) == kept.model_dump_json().encode()
    for read in (memo.tree, memo.tree_json):
        with pytest.raises(ArchitectureError):
            read("resnet50", "cpu", max_bytes=size - 1)
    with pytest.raises(ArchitectureError):
        memo.roundtrip("resnet50", max_bytes=size - 1)
    memo.clear()


@pytest.mark.parametrize(
    ("arch_id", "asked"), [("llama_tiny", {"tokens": 16, "context": 24}), ("resnet_tiny", {"image": 64})]
)
def test_a_plan_is_the_planners_own_for_the_model_built_on_meta_and_kept(
    arch_id: str, asked: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This server's GPUs as the lab lists them: each CUDA device torch gives a size for is a card.
    here = [
        Device("cpu", "CPU (x86_64)", "cpu", 64 * 2**30),
        Device("meta", "meta", "meta"),
        Device("cuda:0", "Test GPU", "cuda", 3 * 10**6, 0),
        Device("cuda:1", "Sizeless GPU", "cuda", None, None),
    ]
    monkeypatch.setattr(memo, "available", lambda: here)
    assert memo.server_gpus() == [("cuda:0 Test GPU", 3 * 10**6)]
    memo.clear()
    spec = memo.plan_input(arch_id, 2, **asked)
    assert spec == checked(facts(direct(arch_id)), 2, **asked)
    for key, value in asked.items():
        assert getattr(spec, key) == value
    found = memo.arch_plan(arch_id, spec)
    assert found == plan(arch_id, direct(arch_id), spec, [("cuda:0 Test GPU", 3 * 10**6)])
    assert found.recipes[0].cards[-1].name == "cuda:0 Test GPU"
    assert memo.arch_plan(arch_id, spec) is found
    assert memo.plan_json(arch_id, spec) == found.model_dump_json().encode()
    memo.clear()


def test_each_architecture_and_input_has_its_own_plan_kept() -> None:
    memo.clear()
    asked = [
        ("llama_tiny", 2, {"tokens": 16}),
        ("llama_tiny", 3, {"tokens": 16}),
        ("gpt2_tiny", 2, {"tokens": 16}),
    ]
    asked += [("llama_tiny", 2, {"tokens": 8}), ("llama_tiny", 2, {"tokens": 16, "context": 8})]
    for arch_id, batch, options in asked:
        spec = memo.plan_input(arch_id, batch, **options)
        assert memo.plan_json(arch_id, spec) == memo.arch_plan(arch_id, spec).model_dump_json().encode()
    memo.clear()


def test_a_tree_is_asked_for_on_meta_unless_said() -> None:
    memo.clear()
    assert (
        memo.tree_json("gpt2_tiny")
        == memo.tree_json("gpt2_tiny", "meta")
        != memo.tree_json("gpt2_tiny", "cpu")
    )
    memo.clear()


def test_a_pasted_configs_report_is_kept_per_input() -> None:
    """Two inputs that differ in one field each get their own plan, and the same input is kept."""
    config = configs.read(json.dumps(LLAMA_CONFIG))
    budget = isolated.Budget(memory_bytes=2 * 1024**3, seconds=60)
    memo.clear()
    for field, values in (("tokens", (8, 16)), ("context", (8, 16)), ("batch", (2, 3))):
        for value in values:
            found = memo.config_report(config, {field: value}, budget)
            assert found.plan is not None and getattr(found.plan.input, field) == value, (field, value)
    kept = memo.config_report_json(config, {"batch": 3}, budget)
    assert memo.config_report_json(config, {"batch": 3}, budget) is kept
    memo.clear()
