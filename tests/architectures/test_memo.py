"""Architecture reports memoised: the same answer object for the same (id, device), every device
checked before the cache is asked, and a refusal never kept."""

from __future__ import annotations

import threading
import time

import pytest

from app.architectures import memo
from app.architectures.catalogue import ArchitectureError


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
