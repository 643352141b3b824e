"""Architecture reports against the transformers model read directly here: every count, byte total,
tied group, buffer persistence and device; the memory estimate against a real AdamW step; the meta
round trip against a model built on the CPU; the treemap against the bytes it draws."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from app.architectures.catalogue import ARCHITECTURES, ArchitectureError, build
from app.architectures.module_tree import ModuleTree, grouped, module_tree
from app.architectures.roundtrip import round_trip
from app.architectures.treemap import treemap
from tests.support.architectures import direct


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def check_against_torch(report: ModuleTree, model: nn.Module) -> None:
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    state = model.state_dict()
    totals = report.totals
    assert totals.parameters == sum(p.numel() for p in model.parameters())
    assert totals.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert totals.buffers == sum(b.numel() for b in model.buffers())
    assert totals.state_dict_entries == len(state)
    assert totals.state_dict_bytes == sum(nbytes(t) for t in state.values())
    assert totals.unique_bytes == sum(nbytes(t) for t in [*params.values(), *buffers.values()])
    # Tied: every state_dict name that is the same Parameter object as an earlier one.
    everyone = dict(model.named_parameters(remove_duplicate=False))
    tied = {}
    for name, p in everyone.items():
        first = next(n for n, q in everyone.items() if q is p)
        if first != name:
            tied.setdefault(first, []).append(name)
    assert {g[0]: g[1:] for g in totals.tied_groups} == tied
    for row in report.named_parameters:
        p = model.get_parameter(row.name)
        assert (row.shape, row.dtype, row.device) == (list(p.shape), str(p.dtype)[6:], str(p.device))
        assert (row.numel, row.bytes, row.requires_grad) == (p.numel(), nbytes(p), p.requires_grad)
        assert row.tied_names == tied.get(row.name, [])
    assert [r.name for r in report.named_parameters] == list(params)
    for row in report.named_buffers:
        owner, _, leaf = row.name.rpartition(".")
        module = model.get_submodule(owner)
        b = model.get_buffer(row.name)
        assert row.persistent == (leaf not in module._non_persistent_buffers_set)
        assert (row.shape, row.dtype, row.device, row.bytes) == (
            list(b.shape),
            str(b.dtype)[6:],
            str(b.device),
            nbytes(b),
        )
    assert [r.name for r in report.named_buffers] == list(buffers)
    assert [(r.name, r.bytes) for r in report.state_dict] == [(n, nbytes(t)) for n, t in state.items()]

    # Every submodule's subtree, each tensor at the first name torch gives it.
    def walk(node):
        yield node
        for child in node.children:
            yield from walk(child)

    nodes = list(walk(report.root))
    assert [n.path for n in nodes] == [n for n, _ in model.named_modules()]
    for node in nodes:
        prefix = node.path + "." if node.path else ""
        mine_p = [p for n, p in params.items() if n.startswith(prefix)]
        mine_b = {n: b for n, b in buffers.items() if n.startswith(prefix)}
        module = model.get_submodule(node.path)
        assert node.class_name == type(module).__name__
        assert node.total.trainable == sum(p.numel() for p in mine_p if p.requires_grad)
        assert node.total.parameter_bytes == sum(nbytes(p) for p in mine_p)
        assert node.total.buffer_bytes == sum(nbytes(b) for b in mine_b.values())
        assert node.total.non_persistent == sum(b.numel() for n, b in mine_b.items() if n not in state)
        own = [n for n, _ in module.named_parameters(recurse=False)] + [
            n for n, _ in module.named_buffers(recurse=False)
        ]
        assert sorted(t.rpartition(".")[2] for t in [*node.tensors, *node.tied]) == sorted(own)
        for name, first in node.tied.items():
            assert model.get_parameter(name) is model.get_parameter(first) and name in tied[first]
        dtypes: dict[str, int] = {}
        for t in [*mine_p, *mine_b.values()]:
            dtypes[str(t.dtype)[6:]] = dtypes.get(str(t.dtype)[6:], 0) + nbytes(t)
        assert node.total.bytes_by_dtype == dtypes


@pytest.mark.parametrize("arch_id", list(ARCHITECTURES))
def test_every_architecture_on_meta_matches_torch(arch_id: str) -> None:
    model = direct(arch_id)
    report = module_tree(build(arch_id))
    check_against_torch(report, model)
    assert report.device == "meta" and {r.device for r in report.state_dict} == {"meta"}
    # The treemap draws every byte once, in rectangles of proportional area inside its frame.
    tiles = treemap(report.root)
    assert sum(t.parameter_bytes + t.buffer_bytes for t in tiles) == report.totals.unique_bytes
    for t in tiles:
        assert t.w > 0 and t.h > 0 and t.x >= -1e-6 and t.y >= -1e-6
        assert t.x + t.w <= 960 + 1e-6 and t.y + t.h <= 360 + 1e-6
        share = (t.parameter_bytes + t.buffer_bytes) / report.totals.unique_bytes
        assert t.w * t.h == pytest.approx(share * 960 * 360, rel=1e-6, abs=1e-6)
    # Grouped tables keep every row once, in torch's order.
    groups = grouped(report.state_dict)
    assert [r.name for g in groups for r in g.rows] == list(model.state_dict())
    assert all(g.count == len(g.rows) for g in groups)


def test_facts_the_issue_names() -> None:
    # Read from the models: the figures the issue quotes follow from them, not from this test.
    llama = direct("llama_8b")
    assert "model.rotary_emb.inv_freq" in dict(llama.named_buffers())
    assert "model.rotary_emb.inv_freq" not in llama.state_dict()
    resnet = module_tree(build("resnet50"))
    batchnorms = [m for m in direct("resnet50").modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(resnet.named_buffers) == 3 * len(batchnorms)
    # What the descriptions say is what the models hold.
    said = ARCHITECTURES["resnet50"].description["en"]
    assert f"{len(batchnorms)} BatchNorms, so {len(resnet.named_buffers)} buffers" in said
    gpt2 = direct("gpt2_tiny")
    assert len(gpt2.state_dict()) == len(dict(gpt2.named_parameters())) + 1  # the tied head, listed twice
    assert "state_dict() twice" in ARCHITECTURES["gpt2_tiny"].description["en"]
    bert = module_tree(build("bert_tiny"))
    assert {r.name: r.persistent for r in bert.named_buffers}["bert.embeddings.position_ids"] is False


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


def test_memory_estimate_matches_a_real_adamw_step_and_cast() -> None:
    model = build("llama_tiny", "cpu")
    report = module_tree(model)
    f32, bf16 = report.memory[0], report.memory[1]
    assert (f32.dtype, bf16.dtype) == ("float32", "bfloat16")
    ids = torch.randint(0, 256, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = sum(nbytes(p.grad) for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters())
    optimizer.step()
    states = sum(nbytes(t) for s in optimizer.state.values() for t in s.values())
    assert (f32.gradients, f32.optimizer) == (grads, states)
    assert f32.inference == sum(nbytes(t) for t in [*model.parameters(), *model.buffers()])
    model.to(torch.bfloat16)
    assert bf16.inference == sum(nbytes(t) for t in [*model.parameters(), *model.buffers()])
    assert bf16.training == bf16.inference + bf16.gradients + bf16.optimizer
    assert any("AdamW: 2 x 90,432 x 2 B" in line for line in bf16.arithmetic)


@pytest.mark.parametrize("arch_id", ["llama_tiny", "bert_tiny", "gpt2_tiny"])
def test_meta_round_trip_flags_what_no_load_restores(arch_id: str) -> None:
    trip = round_trip(arch_id)
    reference = direct(arch_id, "cpu")
    non_persistent = [
        f"{path}.{leaf}" if path else leaf
        for path, m in reference.named_modules()
        for leaf in m._non_persistent_buffers_set
    ]
    assert sorted(trip.not_restorable) == sorted(non_persistent)
    if arch_id == "llama_tiny":
        assert "model.rotary_emb.inv_freq" in trip.not_restorable
    # Redo it here: meta, to_empty, load, then the fix exactly as the report prints it.
    model = direct(arch_id)
    model.to_empty(device="cpu")
    everyone = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    assert sorted(trip.uninitialised) == sorted(everyone)
    model.load_state_dict(reference.state_dict())
    untied = [g for g in trip.tied_before if model.get_parameter(g[0]) is not model.get_parameter(g[1])]
    assert trip.tied_after_to_empty == [] and untied == trip.tied_before
    want = dict(reference.named_parameters(remove_duplicate=False)) | dict(reference.named_buffers())
    got = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    assert sorted(trip.unequal_after_load) == sorted(n for n in got if not torch.equal(got[n], want[n]))
    assert set(trip.unequal_after_load) <= set(trip.not_restorable)
    with torch.no_grad():
        exec(trip.fix_code, {"model": model, "not_restorable": trip.not_restorable})
    got = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    assert all(torch.equal(got[n], want[n]) for n in want) and trip.unequal_after_fix == []
    assert all(model.get_parameter(g[0]) is model.get_parameter(g[1]) for g in trip.tied_before)
    assert trip.tied_after_fix == trip.tied_before


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_configs_move_to_a_gpu() -> None:
    for arch_id in [a for a, arch in ARCHITECTURES.items() if arch.tiny]:
        model, reference = build(arch_id, "cuda:0"), direct(arch_id, "cpu")
        report = module_tree(model)
        assert {r.device for r in [*report.named_parameters, *report.named_buffers]} == {"cuda:0"}
        for name, t in model.state_dict().items():
            assert torch.equal(t.cpu(), reference.state_dict()[name]), (arch_id, name)
