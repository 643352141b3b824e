"""One forward measured: the bytes counted on meta are the bytes counted on real CPU tensors, for
every tiny config and every precision recipe; the KV cache, the logits, the FLOPs and the output
shapes are the ones torch gives directly."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from app.architectures.activations import flops_and_shapes, inference_forward, training_forward
from app.architectures.catalogue import build
from app.architectures.emulation import on_gpu
from tests.support.architectures import TINY, CudaStatistics, saved_and_outputs, tiny_inputs

RECIPES = [(torch.float32, None), (torch.float32, torch.bfloat16), (torch.bfloat16, None)]


@pytest.mark.parametrize("arch_id", TINY)
@pytest.mark.parametrize(("dtype", "autocast"), RECIPES)
def test_activation_bytes_on_meta_equal_those_on_real_cpu_tensors(
    arch_id: str, dtype: torch.dtype, autocast: torch.dtype | None
) -> None:
    meta = training_forward(build(arch_id, "meta", dtype=dtype), tiny_inputs(arch_id, "meta"), autocast)
    cpu = build(arch_id, "cpu", dtype=dtype)
    inputs = tiny_inputs(arch_id, "cpu")
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        meta = training_forward(
            build(arch_id, "meta", dtype=dtype),
            {**tiny_inputs(arch_id, "meta"), "pixel_values": inputs["pixel_values"].to("meta")},
            autocast,
        )
    with CudaStatistics():  # norms' statistics in float32, as on a GPU and on meta
        saved, outputs = saved_and_outputs(cpu, inputs, on_gpu(autocast))
    assert (meta.saved, meta.outputs) == (saved, outputs)
    assert meta.activations == saved + outputs > 0
    assert set(meta.output_names) >= {"loss", "logits"}


def test_the_count_leaves_the_weights_out_and_counts_a_storage_once() -> None:
    layer = torch.nn.Linear(8, 8, device="meta")
    found = training_forward(layer, {"input": torch.empty(4, 8, device="meta")})
    # Linear keeps its input (4x8 float32); its weight is a parameter, not an activation.
    assert (found.saved, found.saved_storages) == (4 * 8 * 4, 1)


def test_inference_counts_a_plain_modules_returned_tensor_and_no_cache() -> None:
    """A module that returns a tensor (not a model output): that tensor is its output's bytes."""
    layer, x = torch.nn.Linear(8, 3), torch.ones(4, 8)
    meta = inference_forward(torch.nn.Linear(8, 3, device="meta"), {"input": x.to("meta")})
    with torch.no_grad():
        out = layer(x)
    assert inference_forward(layer, {"input": x}) == meta
    assert (meta.kv_cache, meta.outputs) == (0, out.numel() * out.element_size())


@pytest.mark.parametrize("arch_id", ["llama_tiny", "gpt2_tiny"])
def test_inference_measures_the_kv_cache_the_logits_and_the_peak(arch_id: str) -> None:
    inputs = {"input_ids": torch.zeros(2, 32, dtype=torch.long), "use_cache": True, "logits_to_keep": 1}
    meta = inference_forward(build(arch_id, "meta"), {**inputs, "input_ids": inputs["input_ids"].to("meta")})
    model = build(arch_id, "cpu").eval()
    assert inference_forward(model, inputs) == meta
    with torch.no_grad():
        out = model(**inputs)
    cache = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
    assert meta.kv_cache == sum(t.numel() * t.element_size() for t in cache) > 0
    assert meta.outputs == out.logits.numel() * out.logits.element_size()
    assert list(out.logits.shape) == [2, 1, 256]  # the next token's only
    assert meta.peak > meta.kv_cache + meta.outputs  # a layer's work comes and goes on top


@pytest.mark.parametrize("arch_id", TINY)
def test_flops_and_shapes_are_torchs_own(arch_id: str) -> None:
    flops, shapes = flops_and_shapes(build(arch_id, "meta"), tiny_inputs(arch_id, "meta"))
    model = build(arch_id, "cpu").eval()
    inputs = tiny_inputs(arch_id, "cpu")
    # torch's counter on real tensors, attention through its math path (two batched products).
    counter = FlopCounterMode(display=False)
    seen: dict[str, list[int]] = {}
    names = {id(m): n for n, m in model.named_modules()}

    def hook(module: torch.nn.Module, _: object, out: object) -> None:
        first = (
            out
            if isinstance(out, torch.Tensor)
            else next(iter(out.values() if hasattr(out, "values") else out))
        )
        seen.setdefault(names[id(module)], list(first.shape))

    hooks = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        out = model(**inputs)
    for hook in hooks:
        hook.remove()
    assert flops == counter.get_total_flops() > 0
    by_path = {s.path: s for s in shapes}
    assert set(by_path) == set(seen)
    for path, shape in seen.items():
        if by_path[path].shapes:
            assert by_path[path].shapes[0] == shape or shape in by_path[path].shapes, path
    assert list(out.logits.shape) in by_path[""].shapes


def test_a_modules_output_shapes_are_the_tensors_it_returns_not_those_in_a_cache_it_returns() -> None:
    class Inner(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    class Nested(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Inner()

        def forward(self, x: torch.Tensor) -> dict:
            y = self.inner(x)
            # As a transformers model returns them: its output, and a cache of lists of tensors.
            return {"out": y[:, :1], "cache": [y.sum(0), [y[:1]]]}

    _, shapes = flops_and_shapes(Nested(), {"x": torch.ones(2, 3)})
    by_path = {s.path: s for s in shapes}
    assert by_path[""].shapes == [[2, 1]] and by_path[""].bytes == 2 * 4
    assert by_path["inner"].shapes == [[2, 3]] and by_path["inner"].dtypes == ["float32"]


def test_returned_tensors_are_found_six_containers_deep_and_no_deeper() -> None:
    class Deep(torch.nn.Module):
        def __init__(self, depth: int) -> None:
            super().__init__()
            self.depth = depth

        def forward(self, x: torch.Tensor) -> object:
            out: object = x * 2
            for _ in range(self.depth):
                out = [out]
            return out

    x = torch.ones(4, 8)
    assert inference_forward(Deep(6), {"x": x}).outputs == 4 * 8 * 4
    assert inference_forward(Deep(7), {"x": x}).outputs == 0  # past the search's depth
