"""The catalogue: each architecture built as transformers builds it (on meta, or a tiny one seeded
on the CPU and moved), and its refusals."""

from __future__ import annotations

import sys

import pytest
import torch
import transformers

from app.architectures.catalogue import (
    ARCHITECTURES,
    ArchitectureError,
    build,
    count_note,
    devices_for,
    get,
    real_bytes,
    transformers_module,
)
from app.architectures.module_tree import module_tree
from app.architectures.roundtrip import round_trip
from app.lab.devices import device_ids
from tests.support.architectures import TINY, check_against_torch, direct, nbytes
from tests.support.scripts import run_scripts


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
    with pytest.raises(ArchitectureError) as full:
        build("llama_8b", "cpu")
    assert full.value.status == 422 and str(full.value) == (
        "device: llama_8b is built on meta only here: its weights and buffers take 32.12 GB in float32, "
        "over the 2.00 GB of MRE_ARCHITECTURE_MAX_BYTES; its tiny config (llama_tiny) "
        f"builds on {', '.join(device_ids())}"
    )
    with pytest.raises(ArchitectureError, match="'cuda:9' is not a device here") as absent:
        build("llama_tiny", "cuda:9")
    assert absent.value.status == 422
    with pytest.raises(ArchitectureError) as twice:
        round_trip("llama_8b")
    assert twice.value.status == 422 and str(twice.value) == (
        "llama_8b is meta only here: the round trip needs it twice in real memory (32.12 GB each, over "
        "MRE_ARCHITECTURE_MAX_BYTES); try llama_tiny"
    )
    size = real_bytes("resnet50")  # 102 MB: a round trip within a budget of exactly that is made
    assert round_trip("resnet50", max_bytes=size).architecture == "resnet50"
    with pytest.raises(ArchitectureError, match=r"^resnet50 is meta only here"):
        round_trip("resnet50", max_bytes=size - 1)
    with pytest.raises(ArchitectureError, match=r"take 497.8 MB in float32, over the 100.0 MB"):
        build("gpt2", "cpu", max_bytes=100 * 10**6)
    # A size from a billion bytes on is said in GB, one byte under in MB.
    with pytest.raises(ArchitectureError, match=r"take 32\.12 GB in float32, over the 1\.00 GB"):
        build("llama_8b", "cpu", max_bytes=10**9)
    with pytest.raises(ArchitectureError, match=r"over the 1,000\.0 MB"):
        build("llama_8b", "cpu", max_bytes=10**9 - 1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_configs_move_to_a_gpu() -> None:
    for arch_id in [a for a, arch in ARCHITECTURES.items() if arch.tiny]:
        model, reference = build(arch_id, "cuda:0"), direct(arch_id, "cpu")
        report = module_tree(model)
        assert {r.device for r in [*report.named_parameters, *report.named_buffers]} == {"cuda:0"}
        for name, t in model.state_dict().items():
            assert torch.equal(t.cpu(), reference.state_dict()[name]), (arch_id, name)
    # Full sizes within MRE_ARCHITECTURE_MAX_BYTES are built with real values on the GPU too.
    for arch_id in ("gpt2", "bert_base", "resnet50", "vit_base"):
        model = build(arch_id, "cuda:0")
        assert {p.device.type for p in model.parameters()} == {"cuda"}, arch_id
        del model


def test_full_sizes_within_the_budget_build_with_real_values() -> None:
    # ResNet-50's float32 weights and buffers (102 MB) are within MRE_ARCHITECTURE_MAX_BYTES.
    assert real_bytes("resnet50") == sum(
        nbytes(t) for t in [*direct("resnet50").parameters(), *direct("resnet50").buffers()]
    )
    assert devices_for(get("resnet50")) == device_ids() and devices_for(get("llama_8b")) == ("meta",)
    model = build("resnet50", "cpu")
    check_against_torch(module_tree(model), direct("resnet50", "cpu"))
    assert not any(p.is_meta for p in model.parameters())


def test_berts_count_is_explained_from_the_models() -> None:
    config = transformers.BertConfig()
    with torch.device("meta"):
        base = transformers.BertModel(config)
    masked = direct("bert_base")
    said = count_note("bert_base")["en"]
    total = sum(p.numel() for p in masked.parameters())
    pooler = sum(p.numel() for p in base.pooler.parameters())
    # The head's own parameters: its output weight is the word embedding, counted there.
    head = sum(p.numel() for n, p in masked.named_parameters() if n.startswith("cls."))
    assert (total, sum(p.numel() for p in base.parameters())) == (109_514_298, 109_482_240)
    assert total == 109_482_240 - pooler + head
    for n in (total, 109_482_240, pooler, head):
        assert f"{n:,}" in said
    assert count_note("gpt2") is None


def test_every_build_script_runs_and_builds_what_the_page_shows() -> None:
    # Each architecture on meta, and on the CPU where it is built with real values here (the tiny
    # configs, and ResNet-50 for the full sizes within the budget: the others cost seconds each).
    cases = [(a, "meta") for a in ARCHITECTURES] + [(a, "cpu") for a in [*TINY, "resnet50"]]
    checks = (
        "\nprint(sum(p.numel() for p in model.parameters()), len(model.state_dict()),"
        " {str(t.device) for t in model.parameters()})\n"
    )
    ran = run_scripts([ARCHITECTURES[a].code(d) + checks for a, d in cases], preload=("transformers",))
    for (arch_id, device), result in zip(cases, ran, strict=True):
        assert result.returncode == 0, (arch_id, device, result.stderr[-2000:])
        model = direct(arch_id)
        said = f"{sum(p.numel() for p in model.parameters())} {len(model.state_dict())} {{'{device}'}}"
        assert result.stdout.strip().splitlines()[-1] == said, (arch_id, device)


def test_without_transformers_the_architectures_answer_503_naming_the_pin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server installed without transformers: a refusal that says what to install, not a crash."""
    monkeypatch.setitem(sys.modules, "transformers", None)  # what Python does for a missing package
    with pytest.raises(ArchitectureError) as refused:
        transformers_module()
    assert refused.value.status == 503
    assert refused.value.message.startswith("transformers is not installed here (")
    assert refused.value.message.endswith(f"); pip install transformers=={transformers.__version__}")
