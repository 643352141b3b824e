"""Architecture reports memoised: the same answer object for the same (id, device), every device
checked before the cache is asked, and a refusal never kept."""

from __future__ import annotations

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
