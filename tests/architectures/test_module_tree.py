"""An architecture's module tree against the transformers model read directly here: every count, byte
total, tied group, buffer persistence and device; the memory estimate against a real AdamW step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from app.architectures.catalogue import ARCHITECTURES, build
from app.architectures.module_tree import Repeat, collapsed, grouped, module_tree, runs
from app.architectures.treemap import treemap
from tests.support.architectures import check_against_torch, direct, nbytes


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


def test_the_cast_estimate_keeps_an_integer_buffers_size() -> None:
    # BERT's position_ids are int64: model.to(bfloat16) leaves them 8 bytes an element.
    model = build("bert_tiny", "cpu")
    bf16 = module_tree(model).memory[1]
    assert any(b.dtype == torch.int64 for b in model.buffers())
    model.to(torch.bfloat16)
    assert bf16.inference == sum(nbytes(t) for t in [*model.parameters(), *model.buffers()])


def test_the_estimate_names_a_unit_from_exactly_one_of_it() -> None:
    """1,000,000 bytes of weights: 1.00 MB, not 1,000.00 kB (decimal units, as disks and GPUs say)."""
    model = torch.nn.Embedding(1000, 250)  # 250,000 float32: 1,000,000 bytes
    f32 = module_tree(model).memory[0]
    assert f32.weights == sum(nbytes(p) for p in model.parameters()) == 10**6
    assert f32.arithmetic[0] == "weights: 250,000 parameters x 4 B = 1.00 MB"
    assert f32.arithmetic[2] == "gradients: 250,000 trainable x 4 B = 1.00 MB"


def test_the_totals_count_frozen_and_trainable_elements_apart() -> None:
    model = direct("bert_tiny", "cpu")
    model.bert.embeddings.requires_grad_(False)
    totals = module_tree(model).totals
    assert totals.frozen == sum(p.numel() for p in model.parameters() if not p.requires_grad) > 0
    assert totals.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0


@pytest.mark.parametrize("arch_id", ["llama_8b", "resnet50", "bert_base"])
def test_identical_numbered_blocks_are_one_run_with_the_counts_of_all(arch_id: str) -> None:
    model = direct(arch_id)
    report = module_tree(build(arch_id))
    rows = {r.name: r for r in [*report.named_parameters, *report.named_buffers]}

    def walk(node):
        found = runs(node.children, rows)
        # Every child once, in order, alone or in a run.
        assert [n.path for item in found for n in getattr(item, "nodes", [item])] == [
            c.path for c in node.children
        ]
        for item in found:
            if isinstance(item, Repeat):
                blocks = [model.get_submodule(n.path) for n in item.nodes]
                assert len(blocks) >= 2 and len({type(b) for b in blocks}) == 1
                indices = [int(n.path.rpartition(".")[2]) for n in item.nodes]
                assert indices == list(range(indices[0], indices[0] + len(indices)))
                assert item.name == f"{{{indices[0]}..{indices[-1]}}}"
                shapes = {tuple((k, tuple(v.shape)) for k, v in b.state_dict().items()) for b in blocks}
                assert len(shapes) == 1  # the same tensors, shapes and names
                assert item.total.trainable == sum(p.numel() for b in blocks for p in b.parameters())
                assert item.total.buffers == sum(1 for b in blocks for _ in b.buffers())
                held = [t for b in blocks for t in [*b.parameters(), *b.buffers()]]
                by_dtype = {
                    str(d)[6:]: sum(nbytes(t) for t in held if t.dtype == d) for d in {t.dtype for t in held}
                }
                assert item.total.bytes_by_dtype == by_dtype and item.total.bytes == sum(map(nbytes, held))
                walk(item.first)
            else:
                walk(item)

    walk(report.root)
    if arch_id == "llama_8b":
        layers = runs(report.root.children[0].children[1].children, rows)[0]
        assert isinstance(layers, Repeat) and layers.path == "model.layers.{0..31}"


def test_buffer_counts_are_tensors_and_elements_apart() -> None:
    model = direct("llama_tiny")
    rotary = module_tree(build("llama_tiny")).root.children[0].children[-1]
    assert rotary.path == "model.rotary_emb"
    buffers = dict(model.get_submodule("model.rotary_emb").named_buffers())
    assert (rotary.total.buffers, rotary.total.non_persistent_buffers, rotary.total.persistent_buffers) == (
        len(buffers),
        len(buffers),
        0,
    )
    assert rotary.total.non_persistent == sum(b.numel() for b in buffers.values())


def test_table_groups_of_identical_blocks_collapse_and_spell_out_again() -> None:
    report = module_tree(build("bert_base"))
    groups = grouped(report.state_dict)
    folded = collapsed(groups)
    assert len(folded) == len(groups) - 11
    assert sum(g.count for g in folded) == len(report.state_dict)
    repeat = next(g for g in folded if g.repeat > 1)
    assert (repeat.prefix, repeat.repeat) == ("bert.encoder.layer.{0..11}", 12)
    assert repeat.count == repeat.repeat * len(repeat.rows)
    assert all(r.name.startswith("bert.encoder.layer.{0..11}.") for r in repeat.rows)
    spelt = sorted(n for r in repeat.rows for n in repeat.names(r))
    assert spelt == sorted(r.name for r in report.state_dict if r.name.startswith("bert.encoder.layer."))


def test_identical_blocks_that_end_the_table_collapse_too() -> None:
    """A model whose last tensors are its blocks (nothing after the run)."""
    model = torch.nn.Module()
    model.embed = torch.nn.Embedding(10, 4)
    model.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3))
    report = module_tree(model)
    folded = collapsed(grouped(report.state_dict))
    assert [(g.prefix, g.repeat) for g in folded] == [("embed", 1), ("layers.{0..2}", 3)]
    spelt = sorted(n for g in folded for r in g.rows for n in g.names(r))
    assert spelt == sorted(model.state_dict())


def test_frozen_parameters_and_both_kinds_of_buffer_are_counted_apart_at_every_level() -> None:
    model = direct("bert_tiny", "cpu")
    for name, p in model.named_parameters():  # the embeddings and the first layer frozen, as in fine-tuning
        p.requires_grad_(not (name.startswith("bert.embeddings.") or ".layer.0." in name))
    model.bert.embeddings.register_buffer("seen", torch.zeros(3, dtype=torch.long))  # a persistent one
    report = module_tree(model)
    check_against_torch(report, model)
    embeddings = report.root.children[0].children[0]
    assert embeddings.path == "bert.embeddings" and embeddings.total.trainable == 0
    assert embeddings.total.persistent_buffers == 1 and embeddings.total.non_persistent_buffers >= 1


def test_a_run_of_the_models_own_children_is_named_without_a_leading_dot() -> None:
    # nn.Sequential's children are "0", "1", ...: their run sits at the top, with no parent path.
    model = torch.nn.Sequential(*(torch.nn.Linear(4, 4) for _ in range(3)), torch.nn.ReLU())
    report = module_tree(model)
    rows = {r.name: r for r in [*report.named_parameters, *report.named_buffers]}
    found = runs(report.root.children, rows)
    assert isinstance(found[0], Repeat) and (found[0].path, found[0].name) == ("{0..2}", "{0..2}")
    assert [n.path for n in found[0].nodes] == ["0", "1", "2"] and found[1].path == "3"
