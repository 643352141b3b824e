"""Will it fit: each recipe's rows against torch doing the step for real (gradients, AdamW states,
the foreach step's temporaries), its total against its formula, the largest batch against the
arithmetic, and the input's refusals naming the field."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from app.architectures.activations import inference_forward, training_forward
from app.architectures.catalogue import ArchitectureError, build
from app.architectures.planner import (
    CARDS,
    MAX_BATCH,
    MAX_TOKENS,
    RECIPES,
    PlanInput,
    card_fits,
    checked,
    facts,
    inference_inputs,
    kind_of,
    plan,
    training_inputs,
)
from app.langs import ZH
from tests.support.architectures import TINY, direct, nbytes

SPEC = {"text": PlanInput(batch=2, tokens=16, context=32), "vision": PlanInput(batch=2, image=32)}


class Made(TorchDispatchMode):
    """Bytes of the tensors (more than one element) that out-of-place ops make."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func._schema.is_mutable:
            self.bytes += sum(
                nbytes(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.numel() > 1
            )
        return out


def mib(n: int) -> str:
    """A tiny model's bytes as the arithmetic writes them."""
    assert n < 2**30 / 16
    return f"{n / 2**20:,.2f} MiB"


def spec_of(arch_id: str) -> PlanInput:
    return SPEC[facts(build(arch_id, "meta")).kind]


@pytest.mark.parametrize("arch_id", TINY)
def test_each_recipe_is_what_torch_holds_for_it(arch_id: str) -> None:
    spec = spec_of(arch_id)
    found = {r.id: r for r in plan(arch_id, build(arch_id, "meta"), spec).recipes}
    for recipe in RECIPES:
        row = found[recipe.id]
        model = build(arch_id, "cpu", dtype=recipe.dtype)
        weights = sum(nbytes(p) for p in model.parameters())
        buffers = sum(nbytes(b) for b in model.buffers())
        assert (row.weights, row.buffers) == (weights, buffers), recipe.id
        if not recipe.training:
            assert (row.gradients, row.optimizer, row.step_temporaries) == (0, 0, 0)
            meta = build(arch_id, "meta", dtype=recipe.dtype)
            assert row.activations == inference_forward(meta, inference_inputs(meta, spec.batch, spec)).peak
            assert row.total == weights + buffers + row.activations
            more = inference_forward(meta, inference_inputs(meta, spec.batch + 1, spec)).peak
            assert row.per_sample == more - row.activations, recipe.id
            assert row.arithmetic[-1] == f"total = weights + buffers + forward peak = {mib(row.total)}"
            continue
        # One real step, twice (AdamW makes its states on the first): gradients, states, temporaries.
        inputs = training_inputs(model, spec.batch, spec)
        optimizer = torch.optim.AdamW(model.parameters(), foreach=True)
        for _ in range(2):
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=recipe.autocast or torch.float32, enabled=bool(recipe.autocast)):
                loss = model(**inputs).loss
            loss.backward()
            made = Made()
            with made:
                optimizer.step()
        grads = sum(nbytes(p.grad) for p in model.parameters())
        states = sum(nbytes(s[k]) for s in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq"))
        assert (row.gradients, row.optimizer, row.step_temporaries) == (grads, states, made.bytes), recipe.id
        meta = build(arch_id, "meta", dtype=recipe.dtype)
        activations = training_forward(meta, training_inputs(meta, spec.batch, spec), recipe.autocast)
        assert row.activations == activations.activations
        assert row.total == weights + buffers + grads + states + max(row.activations, made.bytes)
        more = training_forward(meta, training_inputs(meta, spec.batch + 1, spec), recipe.autocast)
        assert row.per_sample == more.activations - activations.activations, recipe.id
        assert row.arithmetic[-1].endswith(f"= {mib(row.total)}")


def test_gradients_and_adamw_states_count_the_trainable_parameters_only() -> None:
    # A model with frozen parameters: a whole layer and the final norm (the tied embedding and head
    # stay trainable). What torch's AdamW holds after real steps is the reference.
    frozen = ("model.layers.0.", "model.norm.")

    def freeze(model: torch.nn.Module) -> torch.nn.Module:
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith(frozen))
        return model

    spec = SPEC["text"]
    found = {r.id: r for r in plan("llama_tiny", freeze(build("llama_tiny", "meta")), spec).recipes}
    model = freeze(direct("llama_tiny", "cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), foreach=True)
    for _ in range(2):
        optimizer.zero_grad()
        model(**training_inputs(model, spec.batch, spec)).loss.backward()
        optimizer.step()
    grads = sum(nbytes(p.grad) for p in model.parameters() if p.grad is not None)
    states = sum(nbytes(s[k]) for s in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq"))
    every = sum(nbytes(p) for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < grads < every  # some frozen, some not
    row = found["fp32"]
    assert (row.gradients, row.optimizer, row.step_temporaries) == (grads, states, grads)
    assert row.weights == every and f"gradients: {trainable:,} trainable x 4 B" in row.arithmetic[2]
    assert found["bf16"].gradients == grads // 2 and found["bf16"].optimizer == states // 2


def test_the_batch_grows_activations_linearly_and_the_largest_batch_is_the_arithmetics() -> None:
    spec = SPEC["text"]
    found = plan("llama_tiny", build("llama_tiny", "meta"), spec, [("cuda:0 test card", 3 * 10**6)])
    meta = build("llama_tiny", "meta")
    for row in found.recipes[:1]:  # fp32 training
        far = training_forward(meta, training_inputs(meta, 7, spec)).activations
        static = row.weights + row.buffers + row.gradients + row.optimizer
        assert row.fixed + 7 * row.per_sample == static + far  # measured at 7: on the line
        assert [c.name for c in row.cards] == [f"{n} GB" for n in CARDS] + ["cuda:0 test card"]
        for card in row.cards:
            b = card.largest_batch
            assert row.fixed + b * row.per_sample <= card.capacity or b == 0
            assert row.fixed + (b + 1) * row.per_sample > card.capacity or b == 4096 * 1000
            assert card.fits == (row.total <= card.capacity)
        small = row.cards[-1]
        assert small.largest_batch == (3 * 10**6 - row.fixed) // row.per_sample
        assert small.arithmetic.startswith(f"({3 * 10**6 / 2**20:,.2f} MiB - ")  # under 1/16 GiB: MiB


def test_each_cards_arithmetic_says_why_its_batch_is_what_it_is() -> None:
    mib2, cards = 2**20, [("small", 10 * 2**20), ("big", 60 * 2**20)]
    grows = card_fits(cards, total=50 * mib2, fixed=8 * mib2, per_sample=3 * mib2, floor=0)
    assert [(c.largest_batch, c.fits) for c in grows] == [(0, False), (17, True)]
    assert grows[0].arithmetic == "11.00 MiB for one sample > 10.00 MiB"  # fixed + one sample
    assert grows[1].arithmetic == "(60.00 MiB - 8.00 MiB) / 3.00 MiB per sample = 17"
    assert grows[0].translations[ZH] == "一个样本就需 11.00 MiB > 10.00 MiB"
    # The step's temporaries (the floor) over the card, though fixed + one sample is under it.
    floored = card_fits(cards[:1], total=0, fixed=1 * mib2, per_sample=1 * mib2, floor=12 * mib2)
    assert floored[0].arithmetic == "12.00 MiB for one sample > 10.00 MiB"
    flat = card_fits(cards, total=9 * mib2, fixed=9 * mib2, per_sample=0, floor=0)
    assert [(c.largest_batch, c.arithmetic) for c in flat] == [
        (MAX_BATCH * 1000, "nothing grows with the batch")
    ] * 2


def test_a_full_size_plan_on_meta() -> None:
    found = plan("gpt2", build("gpt2", "meta"), PlanInput(batch=8, tokens=512, context=1024))
    mixed = next(r for r in found.recipes if r.id == "bf16_mixed")
    assert mixed.weights == 4 * found.parameters and mixed.gradients == 4 * found.trainable
    assert found.decoder and found.forward_flops > 2 * found.parameters * 8 * 512
    assert mixed.arithmetic[-1].startswith("total = weights + buffers + gradients + AdamW + max(")
    assert found.shapes[0].path == "" and [8, 512, 50257] in found.shapes[0].shapes


def test_the_input_is_checked_and_refusals_name_the_field() -> None:
    gpt2, vit = facts(build("gpt2", "meta")), facts(build("vit_base", "meta"))
    assert checked(gpt2, 4) == PlanInput(batch=4, tokens=512, context=1024)
    assert checked(vit, 4) == PlanInput(batch=4, image=224)
    cases = [
        (lambda: checked(gpt2, 0), "batch: from 1 to 4096, not 0"),
        (lambda: checked(gpt2, 1, tokens=2048), "tokens: from 1 to 1024 tokens"),
        (lambda: checked(gpt2, 1, context=5000), "context: from 1 to 1024 tokens"),
        (lambda: checked(vit, 1, image=256), "image: this model takes 224x224 images only"),
        (lambda: checked(facts(build("resnet50", "meta")), 1, image=4096), "image: from 32 to 1024"),
    ]
    for call, says in cases:
        with pytest.raises(ArchitectureError, match=says.replace("(", r"\(")) as refused:
            call()
        assert refused.value.status == 422


@pytest.mark.parametrize(
    ("config", "most"),
    [
        ({"max_position_embeddings": 1}, 1),  # one position: one token, the least a model has
        ({"max_position_embeddings": 0, "n_positions": 7}, 7),  # 0 names none: the next name is read
        ({"max_position_embeddings": None, "max_seq_len": 9}, 9),
        ({"max_position_embeddings": 5, "n_positions": 7, "seq_length": 3}, 5),  # the first name read
        ({"n_positions": 2 * MAX_TOKENS}, MAX_TOKENS),  # the planner's own cap
        ({"seq_length": "long"}, MAX_TOKENS),
        ({}, MAX_TOKENS),
    ],
)
def test_a_models_positions_bound_its_tokens(config: dict, most: int) -> None:
    model = SimpleNamespace(config=SimpleNamespace(**config), main_input_name="input_ids")
    found = facts(model)  # type: ignore[arg-type]
    assert (found.kind, found.max_tokens, found.image) == ("text", most, None)
    assert checked(found, 1, tokens=most, context=most).tokens == most
    with pytest.raises(ArchitectureError, match=f"tokens: from 1 to {most} tokens"):
        checked(found, 1, tokens=most + 1)


def test_a_model_fed_neither_token_ids_nor_pixels_is_refused_naming_its_input() -> None:
    with pytest.raises(ArchitectureError, match="this model's input is input_values") as refused:
        kind_of(SimpleNamespace(main_input_name="input_values"))  # type: ignore[arg-type]
    assert refused.value.status == 422


@pytest.mark.parametrize("channels", [None, 1, 4])
def test_pixels_have_the_configs_channels_and_three_where_it_names_none(channels: int | None) -> None:
    """A vision model whose config has no num_channels: the RGB images a 3-channel stem takes; else
    as many channels as its config names (a grey-scale or an RGBA model)."""

    class Pixels(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            named = {} if channels is None else {"num_channels": channels}
            self.config = SimpleNamespace(image_size=32, **named)
            self.stem = torch.nn.Conv2d(channels or 3, 2, 3)

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.stem(pixel_values)

    model = Pixels()
    inputs = training_inputs(model, 2, PlanInput(batch=2, image=32))
    assert list(inputs) == ["pixel_values"] and inputs["pixel_values"].shape == (2, channels or 3, 32, 32)
    assert model(**inputs).shape == (2, 2, 30, 30)  # torch takes them


@pytest.mark.parametrize("arch_id", [a for a in TINY if facts(build(a, "meta")).kind == "text"])
def test_generation_asks_for_the_cache_and_the_next_tokens_logits_where_the_model_takes_them(
    arch_id: str,
) -> None:
    model = build(arch_id, "meta")
    takes = inspect.signature(model.forward).parameters
    inputs = inference_inputs(model, 2, SPEC["text"])
    assert ("use_cache" in inputs) == ("use_cache" in takes)
    assert ("logits_to_keep" in inputs) == ("logits_to_keep" in takes)
    assert inputs.get("logits_to_keep", 1) == 1 and inputs.get("use_cache", True) is True
    assert "logits_to_keep" in inputs or arch_id != "llama_tiny"


def test_each_input_field_at_its_bounds() -> None:
    """The batch from 1 to 4096, the image from 32 to 1024 pixels, tokens and context from 1 to the
    model's positions: each end accepted, one past it refused naming the field."""
    gpt2, resnet = facts(build("gpt2", "meta")), facts(build("resnet50", "meta"))
    positions = build("gpt2", "meta").config.n_positions
    assert checked(gpt2, 4096, tokens=positions, context=1).batch == 4096
    assert checked(gpt2, 1, tokens=1, context=positions).context == positions
    assert [checked(resnet, 1, image=size).image for size in (32, 1024)] == [32, 1024]
    for call, field in (
        (lambda: checked(gpt2, 4097), "batch"),
        (lambda: checked(gpt2, 1, tokens=positions + 1), "tokens"),
        (lambda: checked(gpt2, 1, context=positions + 1), "context"),
        (lambda: checked(resnet, 1, image=31), "image"),
        (lambda: checked(resnet, 1, image=1025), "image"),
    ):
        with pytest.raises(ArchitectureError, match=f"^{field}: ") as refused:
            call()
        assert refused.value.status == 422


@pytest.mark.parametrize("arch_id", ["llama_tiny", "bert_tiny", "vit_tiny"])
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_the_batch_is_made_on_the_models_device(arch_id: str, device: str) -> None:
    model = build(arch_id, device)
    spec = spec_of(arch_id)
    for made in (training_inputs(model, 2, spec), inference_inputs(model, 2, spec)):
        assert {t.device.type for t in made.values() if isinstance(t, torch.Tensor)} == {device}, made
