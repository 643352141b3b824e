"""Will it fit? Memory of training and inference per precision recipe, for a batch and a sequence
length (or an image size) the user picks, with the activations measured on the meta device and the
arithmetic shown; whether it fits on the usual GPU sizes and on this server's own, and the largest
batch that does.

What each recipe holds on the GPU during one step:

* weights, buffers: each parameter once (tied ones once), in the recipe's dtype;
* gradients: one per trainable parameter, in the parameter's dtype;
* AdamW states: ``exp_avg`` and ``exp_avg_sq`` per trainable parameter, in the parameter's dtype
  (torch.optim.AdamW keeps them so); its ``step`` counters are CPU tensors (not fused, not capturable);
* step temporaries: the foreach AdamW (torch's default on CUDA) makes ``sqrt(exp_avg_sq)`` for every
  parameter at once, one more state's worth while ``optimizer.step()`` runs;
* activations: measured (``app.architectures.activations``), what autograd saves plus logits and loss.

The total is an upper bound of the step's peak: weights + buffers + gradients + AdamW states +
max(activations, step temporaries). Activations and the step's temporaries are never alive together;
gradients are counted in full beside every activation, though backward frees activations as it makes
gradients. The largest batch uses how activations grow with the batch, measured at the batch asked
for and at one more sample.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from pydantic import BaseModel, Field
from torch import nn

from app.architectures.activations import (
    ModuleShape,
    accepts,
    flops_and_shapes,
    inference_forward,
    training_forward,
)
from app.architectures.catalogue import ArchitectureError
from app.langs import EN, ZH, Text

GIB = 1024**3
# GPU sizes as sold (24 GB: RTX 4090 / L4 / A10; 40 and 80 GB: A100, H100; 141 GB: H200). A card sold
# as N GB holds about N GiB; torch sees a little less (139.8 GiB of an H200), and the CUDA context
# takes a few hundred MB more.
CARDS = (24, 40, 80, 141)
MAX_BATCH = 4096
MAX_TOKENS = 131_072
MAX_IMAGE = 1024
DEFAULT_BATCH = 8
DEFAULT_TOKENS = 512
DEFAULT_CONTEXT = 8192


@dataclass(frozen=True)
class Recipe:
    id: str
    title: Text
    assumptions: Text
    dtype: torch.dtype  # the parameters' (and so gradients' and AdamW states') dtype
    training: bool
    autocast: torch.dtype | None = None


RECIPES = (
    Recipe(
        "fp32",
        Text("fp32 training"),
        Text("Weights, gradients and AdamW states in float32; activations as a float32 forward saves them."),
        torch.float32,
        True,
    ),
    Recipe(
        "bf16_mixed",
        Text("bf16 mixed precision"),
        Text(
            'torch.autocast("cuda", dtype=torch.bfloat16) over float32 weights: float32 master weights, '
            "gradients and AdamW states; activations as autocast saves them, the bf16 copies of the "
            "weights included."
        ),
        torch.float32,
        True,
        torch.bfloat16,
    ),
    Recipe(
        "bf16",
        Text("pure bf16 training"),
        Text(
            "model.to(torch.bfloat16): weights, gradients and AdamW states in bf16 (AdamW keeps its states "
            "in the parameters' dtype), no float32 master copy; activations in bf16."
        ),
        torch.bfloat16,
        True,
    ),
    Recipe(
        "infer_fp32",
        Text("fp32 inference"),
        Text(
            "Weights in float32; one forward over the context without grad, as generation's first step: "
            "the most it holds at once, the KV cache (decoders) and the next token's logits included."
        ),
        torch.float32,
        False,
    ),
    Recipe(
        "infer_bf16",
        Text("bf16 inference"),
        Text(
            "Weights in bf16; one forward over the context without grad, as generation's first step: "
            "the most it holds at once, the KV cache (decoders) and the next token's logits included."
        ),
        torch.bfloat16,
        False,
    ),
)


class PlanInput(BaseModel):
    batch: int
    tokens: int | None = Field(None, description="Sequence length of a training batch (text models).")
    image: int | None = Field(None, description="Image side in pixels (vision models).")
    context: int | None = Field(None, description="Inference context in tokens (models with a KV cache).")


class CardFit(BaseModel):
    name: str = Field(examples=["80 GB"], description='A GPU size ("24 GB" ...) or a device of this server.')
    capacity: int = Field(description="Bytes: N GiB for a card sold as N GB; torch's total_memory here.")
    fits: bool = Field(description="The batch asked for fits.")
    largest_batch: int = Field(description="The largest batch that fits (0: none).")
    arithmetic: str
    translations: dict[str, str] = Field(default_factory=dict, description="The arithmetic, e.g. in zh-CN.")


class RecipeWords(BaseModel):
    title: str
    assumptions: str
    arithmetic: list[str]


class RecipePlan(BaseModel):
    id: str = Field(examples=["bf16_mixed"])
    title: str
    assumptions: str
    training: bool
    weights: int
    buffers: int
    gradients: int
    optimizer: int = Field(description="AdamW exp_avg and exp_avg_sq (its step counters are on the CPU).")
    step_temporaries: int = Field(description="foreach AdamW's sqrt(exp_avg_sq), alive during step() only.")
    activations: int = Field(
        description="Training: saved for backward + logits and loss. Inference: the most bytes alive at once "
        "during the forward, KV cache and logits included."
    )
    saved: int = Field(description="Bytes autograd saves for backward (training).")
    outputs: int = Field(description="Logits and loss (training) or the logits returned (inference).")
    kv_cache: int = Field(description="Inference: the KV cache of the context (0 for encoders).")
    fixed: int = Field(description="What does not grow with the batch.")
    per_sample: int = Field(description="What one more sample adds, measured.")
    total: int = Field(description="The step's peak, bounded: see arithmetic.")
    arithmetic: list[str]
    cards: list[CardFit]
    translations: dict[str, RecipeWords] = Field(
        default_factory=dict, description="Its words, e.g. in zh-CN."
    )


class Plan(BaseModel):
    architecture: str
    class_name: str
    input: PlanInput
    kind: str = Field(examples=["text"], description='"text" (input_ids) or "vision" (pixel_values).')
    decoder: bool = Field(description="Returns a KV cache: the inference rows count it.")
    parameters: int
    trainable: int
    forward_flops: int = Field(description="FLOPs of one forward (torch.utils.flop_counter) of that batch.")
    recipes: list[RecipePlan]
    shapes: list[ModuleShape] = Field(description="Every module's output shapes for that input (eval mode).")


def gib(n: float) -> str:
    """GiB, the cards' unit; under a sixteenth of one (a tiny model) MiB, so it never reads 0.00."""
    if abs(n) < GIB / 16:
        return f"{n / 2**20:,.2f} MiB"
    return f"{n / GIB:,.2f} GiB"


def kind_of(model: nn.Module) -> str:
    name = getattr(model, "main_input_name", "input_ids")
    if name == "pixel_values":
        return "vision"
    if name == "input_ids":
        return "text"
    raise ArchitectureError(
        422,
        Text(
            "the planner makes input_ids or pixel_values; this model's input is {name}",
            name=name,
        ),
    )


@dataclass(frozen=True)
class Facts:
    """What the planner's input is checked against, read once from a model."""

    kind: str  # "text" or "vision"
    max_tokens: int  # the model's positions (text)
    image: int | None  # the only image size it takes (vision), None: any


def facts(model: nn.Module) -> Facts:
    config = model.config
    most = MAX_TOKENS
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            most = min(value, MAX_TOKENS)
            break
    size = getattr(config, "image_size", None)
    return Facts(kind_of(model), most, size if isinstance(size, int) else None)


def checked(
    facts: Facts, batch: int, tokens: int | None = None, image: int | None = None, context: int | None = None
) -> PlanInput:
    """The input asked for, checked against the model (refusals name the field), defaults filled."""
    if not 1 <= batch <= MAX_BATCH:
        raise ArchitectureError(
            422, Text("batch: from 1 to {most}, not {batch}", most=MAX_BATCH, batch=batch)
        )
    if facts.kind == "vision":
        image = image or facts.image or 224
        if facts.image is not None and image != facts.image:
            raise ArchitectureError(
                422, Text("image: this model takes {fixed}x{fixed} images only", fixed=facts.image)
            )
        if not 32 <= image <= MAX_IMAGE:
            raise ArchitectureError(
                422, Text("image: from 32 to {most} pixels, not {image}", most=MAX_IMAGE, image=image)
            )
        return PlanInput(batch=batch, image=image)
    most = facts.max_tokens
    tokens = tokens or min(DEFAULT_TOKENS, most)
    context = context or min(DEFAULT_CONTEXT, most)
    for name, value in (("tokens", tokens), ("context", context)):
        if not 1 <= value <= most:
            raise ArchitectureError(
                422,
                Text(
                    "{name}: from 1 to {most} tokens (the model's positions), not {value}",
                    name=name,
                    most=most,
                    value=value,
                ),
            )
    return PlanInput(batch=batch, tokens=tokens, context=context)


def _labels(model: nn.Module, batch: int, tokens: int | None, device: torch.device) -> torch.Tensor:
    # One label per sample: a sequence's class, or an image's (no tokens: a vision model).
    per_sample = type(model).__name__.endswith("ForSequenceClassification")
    if per_sample or tokens is None:
        return torch.zeros(batch, dtype=torch.long, device=device)
    return torch.zeros(batch, tokens, dtype=torch.long, device=device)


def training_inputs(model: nn.Module, batch: int, spec: PlanInput) -> dict[str, torch.Tensor]:
    """The batch a training step feeds: token ids (or pixels) and labels, on the model's device."""
    device = next(model.parameters()).device
    if spec.image is not None:
        channels = getattr(model.config, "num_channels", 3)
        inputs = {"pixel_values": torch.zeros(batch, channels, spec.image, spec.image, device=device)}
        dtype = next(model.parameters()).dtype
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    else:
        inputs = {"input_ids": torch.zeros(batch, spec.tokens, dtype=torch.long, device=device)}
    if accepts(model, "labels"):
        inputs["labels"] = _labels(model, batch, spec.tokens, device)
    return inputs


def inference_inputs(model: nn.Module, batch: int, spec: PlanInput) -> dict[str, object]:
    """Generation's first step: the whole context, the cache filled, the next token's logits only."""
    if spec.image is not None:
        return {k: v for k, v in training_inputs(model, batch, spec).items() if k != "labels"}
    device = next(model.parameters()).device
    ids = torch.zeros(batch, spec.context, dtype=torch.long, device=device)
    inputs: dict[str, object] = {"input_ids": ids}
    if accepts(model, "use_cache"):
        inputs["use_cache"] = True
    if accepts(model, "logits_to_keep"):
        inputs["logits_to_keep"] = 1
    return inputs


def _bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes as the model holds them, cast to its recipe's dtype (``plan`` casts it first): floating
    tensors in that dtype, others (int64 counters) as they are."""
    return sum(t.numel() * t.element_size() for t in tensors)


def _largest(capacity: int, fixed: int, per_sample: int, floor: int) -> int:
    """The largest batch b with fixed + b x per_sample <= capacity (and the floor, what needs room
    whatever the batch: the step's temporaries), capped at MAX_BATCH x 1000."""
    if floor > capacity or fixed + per_sample > capacity:
        return 0
    if per_sample <= 0:
        return MAX_BATCH * 1000
    return min((capacity - fixed) // per_sample, MAX_BATCH * 1000)


def _cards(devices: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(f"{n} GB", n * GIB) for n in CARDS] + list(devices)


def card_fits(
    cards: list[tuple[str, int]], total: int, fixed: int, per_sample: int, floor: int
) -> list[CardFit]:
    found = []
    for name, capacity in cards:
        most = _largest(capacity, fixed, per_sample, floor)
        if most and per_sample > 0:
            words = Text(
                "({capacity} - {fixed}) / {per_sample} per sample = {most}",
                capacity=gib(capacity),
                fixed=gib(fixed),
                per_sample=gib(per_sample),
                most=f"{most:,}",
            )
        elif most:
            words = Text("nothing grows with the batch")
        else:
            words = Text(
                "{one} for one sample > {capacity}",
                one=gib(max(fixed + per_sample, floor)),
                capacity=gib(capacity),
            )
        fits = total <= capacity
        found.append(
            CardFit(
                name=name,
                capacity=capacity,
                fits=fits,
                largest_batch=most,
                arithmetic=words[EN],
                translations={ZH: words[ZH]},
            )
        )
    return found


def recipe_plan(
    recipe: Recipe,
    model: nn.Module,
    at: tuple[int, int],
    measured: tuple[int, int],
    saved: int,
    outputs: int,
    kv_cache: int,
    cards: list[tuple[str, int]],
) -> RecipePlan:
    """One recipe's rows and arithmetic, from the model's tensors and two measured forwards
    (``measured``: activations, or the forward's peak, at batches ``at``)."""
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    size = torch.empty((), dtype=recipe.dtype).element_size()
    n_params = f"{sum(p.numel() for p in params):,}"
    n_train = f"{sum(p.numel() for p in trainable):,}"
    weights = _bytes(params)
    buffers = _bytes(model.buffers())
    grads = _bytes(trainable) if recipe.training else 0
    optimizer = 2 * grads
    temporaries = grads
    (b, b1), (a, a1) = at, measured
    per_sample = (a1 - a) // (b1 - b)
    growing = a - b * per_sample  # what the measured part holds whatever the batch
    static = weights + buffers + grads + optimizer
    lines = [
        Text("weights: {n} parameters x {size} B = {bytes}", n=n_params, size=size, bytes=gib(weights)),
        Text("buffers: {bytes}", bytes=gib(buffers)),
    ]
    measured_at = {"b": b, "b1": b1, "a1": gib(a1), "per_sample": gib(per_sample)}
    if recipe.training:
        total = static + max(a, temporaries)
        lines += [
            Text("gradients: {n} trainable x {size} B = {bytes}", n=n_train, size=size, bytes=gib(grads)),
            Text(
                "AdamW exp_avg + exp_avg_sq: 2 x {n} x {size} B = {bytes} "
                "(its step counters are CPU tensors)",
                n=n_train,
                size=size,
                bytes=gib(optimizer),
            ),
            Text(
                "activations at batch {b}: {saved} saved for backward + {outputs} outputs (logits, loss, "
                "what the model returns) = {bytes} (measured on meta; batch {b1}: {a1}, so {per_sample} "
                "per sample)",
                saved=gib(saved),
                outputs=gib(outputs),
                bytes=gib(a),
                **measured_at,
            ),
            Text(
                "AdamW step temporaries: sqrt(exp_avg_sq), {n} x {size} B = {bytes} (foreach, the default on "
                "CUDA; alive during step() only)",
                n=n_train,
                size=size,
                bytes=gib(temporaries),
            ),
            Text(
                "total = weights + buffers + gradients + AdamW + max(activations, step temporaries) "
                "= {bytes}",
                bytes=gib(total),
            ),
        ]
        floor = static + temporaries
    else:
        total = static + a
        lines += [
            Text(
                "forward at batch {b}: at most {bytes} alive at once, of which the KV cache ({kv}) and the "
                "logits ({outputs}) stay (measured on meta; batch {b1}: {a1}, so {per_sample} per sample)",
                bytes=gib(a),
                kv=gib(kv_cache),
                outputs=gib(outputs),
                **measured_at,
            ),
            Text("total = weights + buffers + forward peak = {bytes}", bytes=gib(total)),
        ]
        floor = static
    fixed = static + growing
    return RecipePlan(
        id=recipe.id,
        title=recipe.title[EN],
        assumptions=recipe.assumptions[EN],
        training=recipe.training,
        weights=weights,
        buffers=buffers,
        gradients=grads,
        optimizer=optimizer,
        step_temporaries=temporaries if recipe.training else 0,
        activations=a,
        saved=saved,
        outputs=outputs,
        kv_cache=kv_cache,
        fixed=fixed,
        per_sample=per_sample,
        total=total,
        arithmetic=[line[EN] for line in lines],
        cards=card_fits(cards, total, fixed, per_sample, floor),
        translations={
            ZH: RecipeWords(
                title=recipe.title[ZH],
                assumptions=recipe.assumptions[ZH],
                arithmetic=[line[ZH] for line in lines],
            )
        },
    )


def plan(arch_id: str, model: nn.Module, spec: PlanInput, devices: Iterable[tuple[str, int]] = ()) -> Plan:
    """The plan for a float32 model built on meta (it is cast to bf16 on the way: pass a fresh one)."""
    cards = _cards(devices)
    b, b1 = spec.batch, spec.batch + 1
    rows: dict[str, RecipePlan] = {}
    flops, shapes = flops_and_shapes(model, training_inputs(model, b, spec))
    decoder = False
    for recipe in sorted(RECIPES, key=lambda r: r.dtype != torch.float32):  # fp32 ones before the cast
        model.to(recipe.dtype)
        if recipe.training:
            first = training_forward(model, training_inputs(model, b, spec), recipe.autocast)
            second = training_forward(model, training_inputs(model, b1, spec), recipe.autocast)
            measured = (first.activations, second.activations)
        else:
            first = inference_forward(model, inference_inputs(model, b, spec))
            second = inference_forward(model, inference_inputs(model, b1, spec))
            measured = (first.peak, second.peak)
            decoder = decoder or first.kv_cache > 0
        rows[recipe.id] = recipe_plan(
            recipe, model, (b, b1), measured, first.saved, first.outputs, first.kv_cache, cards
        )
    params = list(model.parameters())
    return Plan(
        architecture=arch_id,
        class_name=type(model).__name__,
        input=spec,
        kind=kind_of(model),
        decoder=decoder,
        parameters=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in params if p.requires_grad),
        forward_flops=flops,
        recipes=[rows[r.id] for r in RECIPES],
        shapes=shapes,
    )
