"""The catalogue: each architecture built as transformers builds it (on meta, or a tiny one seeded
on the CPU and moved), and its refusals."""

from __future__ import annotations

import pytest
import torch

from app.architectures.catalogue import ARCHITECTURES, ArchitectureError, build
from app.architectures.module_tree import module_tree
from app.architectures.roundtrip import round_trip
from tests.support.architectures import check_against_torch, direct


def test_tiny_configs_build_seeded_on_the_cpu() -> None:
    for arch_id in [a for a, arch in ARCHITECTURES.items() if arch.tiny]:
        model, again, reference = build(arch_id, "cpu"), build(arch_id, "cpu"), direct(arch_id, "cpu")
        states = (model.state_dict(), again.state_dict(), reference.state_dict())
        for (name, t), u, v in zip(states[0].items(), states[1].values(), states[2].values(), strict=True):
            assert torch.equal(t, u) and torch.equal(t, v), (arch_id, name)
        report = module_tree(model)
        check_against_torch(report, reference)
        assert {r.device for r in report.named_parameters} == {"cpu"}
    half = build("bert_tiny", "cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half.get_buffer("bert.embeddings.position_ids").dtype == torch.int64  # as model.to() leaves it


def test_refusals_name_the_problem() -> None:
    with pytest.raises(ArchitectureError, match="unknown architecture 'llama'") as unknown:
        build("llama")
    assert unknown.value.status == 404
    with pytest.raises(ArchitectureError, match=r"meta only.*llama_tiny") as full:
        build("llama_8b", "cpu")
    assert full.value.status == 422
    with pytest.raises(ArchitectureError, match="'cuda:9' is not a device here") as absent:
        build("llama_tiny", "cuda:9")
    assert absent.value.status == 422
    with pytest.raises(ArchitectureError, match="needs real memory"):
        round_trip("gpt2")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_configs_move_to_a_gpu() -> None:
    for arch_id in [a for a, arch in ARCHITECTURES.items() if arch.tiny]:
        model, reference = build(arch_id, "cuda:0"), direct(arch_id, "cpu")
        report = module_tree(model)
        assert {r.device for r in [*report.named_parameters, *report.named_buffers]} == {"cuda:0"}
        for name, t in model.state_dict().items():
            assert torch.equal(t.cpu(), reference.state_dict()[name]), (arch_id, name)
