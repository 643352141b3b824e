"""A GPU played on meta: the autocast policy is torch's own list of ops, the casts are torch's, and
what autograd saves under it is what torch's real autocast and its fused attention save."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from app.architectures.catalogue import build
from app.architectures.emulation import CUDA_POLICY, _overload, on_gpu
from tests.support.architectures import FUSED_ON_CPU, TINY, cpu_policy, saved_and_outputs, tiny_inputs


def registered(key: str) -> set[str]:
    return {r.removeprefix("aten::") for r in torch._C._dispatch_get_registrations_for_dispatch_key(key)}


def test_the_cuda_policy_names_exactly_the_ops_torch_autocasts_on_cuda() -> None:
    assert set(CUDA_POLICY) == registered("AutocastCUDA")
    # The lower-precision list holds the matrix products, the fp32 one the norms and losses.
    assert CUDA_POLICY["linear"] == CUDA_POLICY["scaled_dot_product_attention"] == "lower_precision_fp"
    assert CUDA_POLICY["layer_norm"] == CUDA_POLICY["nll_loss"] == "fp32"
    assert CUDA_POLICY["softmax.int"] == "fp32_set_opt_dtype"


def test_the_cpu_policy_of_the_tests_names_exactly_the_ops_torch_autocasts_on_cpu() -> None:
    policy = cpu_policy()
    assert set(policy) == registered("AutocastCPU")
    assert {"linear", "matmul", "bmm", "conv2d", "scaled_dot_product_attention"} <= {
        op for op, category in policy.items() if category == "lower_precision_fp"
    }


def test_no_op_of_the_policies_takes_a_tensor_by_keyword_only() -> None:
    # The emulation casts positional tensors only: a torch that adds a keyword-only tensor to one of
    # these ops fails here, not silently in a plan.
    for name in CUDA_POLICY:
        try:
            op = _overload(name)
        except (AttributeError, RuntimeError):  # an op this torch does not have
            continue
        keyword_only = [a.name for a in op._schema.arguments if a.kwarg_only and "Tensor" in str(a.type)]
        assert keyword_only == [], name


def test_promoted_ops_take_the_widest_type_where_torch_alone_refuses_a_mix() -> None:
    # dot, index_put and scatter_add take one dtype only; under autocast they run in the widest one.
    a, b = torch.randn(5), torch.randn(5).bfloat16()
    grid, index = torch.zeros(3, 5), torch.tensor([[0, 1, 2, 0, 1]])
    with on_gpu(torch.bfloat16):
        dot, dot_back = torch.dot(a, b), torch.dot(b, a)  # the widest found whichever comes first
        put = grid.index_put((torch.tensor([1]),), b)
        added = grid.scatter_add(0, index, b.unsqueeze(0))
    assert (dot.dtype, dot_back.dtype, put.dtype, added.dtype) == (torch.float32,) * 4
    torch.testing.assert_close(dot, torch.dot(a, b.float()))
    torch.testing.assert_close(dot_back, torch.dot(b.float(), a))
    torch.testing.assert_close(put, grid.index_put((torch.tensor([1]),), b.float()))
    torch.testing.assert_close(added, grid.scatter_add(0, index, b.float().unsqueeze(0)))
    with pytest.raises(RuntimeError, match="dtype"):
        torch.dot(a, b)  # without autocast: torch refuses the mix


def test_casts_follow_the_policy_on_meta() -> None:
    x = torch.empty(4, 8, device="meta")
    weight = torch.nn.Parameter(torch.empty(16, 8, device="meta"))
    with on_gpu(torch.bfloat16):
        y = F.linear(x, weight)
        z = F.linear(x, weight)
        norm = F.layer_norm(y, (16,))
        soft = torch.softmax(y, -1)
        kept = torch.softmax(y, -1, dtype=torch.float16)
        added = torch.addcmul(norm, y, y)
    assert (y.dtype, norm.dtype, soft.dtype, kept.dtype, added.dtype) == (
        torch.bfloat16,
        torch.float32,
        torch.float32,
        torch.float16,
        torch.float32,
    )

    # The weight is cast once per forward, as torch's autocast cache does: both products read one copy.
    def cast_of_weight(out: torch.Tensor) -> object:
        node = out.grad_fn
        while type(node).__name__ != "ToCopyBackward0":
            node = next(
                n
                for n, _ in node.next_functions
                if n is not None and "AccumulateGrad" not in type(n).__name__
            )
        return node

    assert cast_of_weight(y) is cast_of_weight(z)
    # Outside, nothing is cast: meta tensors never are by torch.autocast.
    assert F.linear(x, weight).dtype == torch.float32


@pytest.mark.parametrize("arch_id", FUSED_ON_CPU)
def test_fused_attention_saves_what_torchs_own_cpu_choice_saves(arch_id: str) -> None:
    # Without dropout, torch's CPU kernel choice is its fused kernel: plain torch on real tensors
    # and the emulation on real tensors save the same bytes.
    model = build(arch_id, "cpu")
    plain = saved_and_outputs(model, tiny_inputs(arch_id, "cpu"), contextlib.nullcontext())
    emulated = saved_and_outputs(model, tiny_inputs(arch_id, "cpu"), on_gpu())
    assert plain == emulated


@pytest.mark.parametrize("arch_id", FUSED_ON_CPU)
def test_the_emulated_autocast_saves_what_torchs_real_autocast_saves(arch_id: str) -> None:
    # The emulation run with torch's CPU policy, on real CPU tensors, against torch.autocast("cpu"):
    # the same casts, the same cached weights, the same bytes saved.
    model = build(arch_id, "cpu")
    real = saved_and_outputs(model, tiny_inputs(arch_id, "cpu"), torch.autocast("cpu", dtype=torch.bfloat16))
    emulated = saved_and_outputs(model, tiny_inputs(arch_id, "cpu"), on_gpu(torch.bfloat16, cpu_policy()))
    assert real == emulated


@pytest.mark.parametrize("arch_id", TINY)
def test_the_emulation_saves_on_meta_what_it_saves_on_real_tensors(arch_id: str) -> None:
    for autocast in (None, torch.bfloat16):
        on_cpu = saved_and_outputs(build(arch_id, "cpu"), tiny_inputs(arch_id, "cpu"), on_gpu(autocast))
        meta = build(arch_id, "meta")
        ids = tiny_inputs(arch_id, "meta")
        own = {t.untyped_storage()._cdata for t in [*meta.parameters(), *meta.buffers()]}
        sizes: dict[int, int] = {}
        held = []

        def pack(t: torch.Tensor, own: set = own, sizes: dict = sizes, held: list = held) -> torch.Tensor:
            held.append(t)
            if t.untyped_storage()._cdata not in own:
                sizes[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
            return t

        meta.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), on_gpu(autocast):
            meta(**ids)
        assert sum(sizes.values()) == on_cpu[0], (arch_id, autocast)


def test_it_is_this_threads_only_and_not_reentrant() -> None:
    with on_gpu(), pytest.raises(RuntimeError, match="already running"), on_gpu():
        pass
    x = torch.empty(2, 2, device="meta")
    with on_gpu(torch.bfloat16):
        assert torch.mm(x, x).dtype == torch.bfloat16
    assert torch.mm(x, x).dtype == torch.float32


def test_fused_attention_takes_the_callers_mask_scale_and_causality() -> None:
    # Real tensors: under the emulation, each way of calling scaled_dot_product_attention gives what
    # torch gives outside it (a boolean mask, an additive one, a scale, causal), positionally or by name.
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 8, generator=gen) for _ in range(3))
    allowed = torch.rand(5, 5, generator=gen) > 0.4
    allowed[:, 0] = True  # every query row sees one key at least
    additive = torch.randn(1, 2, 5, 5, generator=gen)
    calls = [
        ((q, k, v), {"attn_mask": allowed}),
        ((q, k, v, allowed), {}),
        ((q, k, v), {"attn_mask": additive}),
        ((q, k, v), {"scale": 0.05}),
        ((q, k, v), {"is_causal": True, "scale": 3.0}),
    ]
    plain = F.scaled_dot_product_attention(q, k, v)
    for args, kwargs in calls:
        expected = F.scaled_dot_product_attention(*args, **kwargs)
        assert not torch.allclose(expected, plain, atol=1e-3)  # each call differs from the bare one
        with on_gpu():
            got = F.scaled_dot_product_attention(*args, **kwargs)
        torch.testing.assert_close(got, expected, msg=lambda m, kw=kwargs: f"{sorted(kw)}: {m}")
