"""What a GPU would run, played on the meta device, so that what autograd saves there is what it
would save on the GPU.

Two things differ between meta and a CUDA device when a model runs forward:

* **Attention.** On meta, ``scaled_dot_product_attention`` takes its math path, which keeps the whole
  attention matrix (and its dropout mask) for backward. A GPU takes a fused kernel (flash,
  memory-efficient, cuDNN), which keeps only query, key, value, the output and one float32
  log-sum-exp per query row. Here the call goes to torch's fused CPU kernel
  (``_scaled_dot_product_flash_attention_for_cpu``), which has a meta implementation and keeps exactly
  that set. Dropout inside fused attention keeps only an RNG seed and offset (16 bytes a layer), so
  the kernel is called without it. Grouped-query attention stays grouped, as the fused kernels take it.
* **Autocast.** ``torch.autocast("cuda")`` casts by device: meta tensors are never cast. The same policy
  (torch's lists for CUDA, each op's category below) is applied here by kernels registered on an
  autocast dispatch key no backend of this process uses (``AutocastPrivateUse1``), turned on for this
  thread only while a model runs. The kernels sit where torch's own do, above autograd, so autograd
  records the casts and saves the cast tensors; fp32 leaf parameters are cast once per forward, as
  torch's autocast cache does.

The CUDA policy is written out (torch keeps it in C++); a test checks that it names exactly the ops
this torch registers for AutocastCUDA, so a new torch that changes the lists fails it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch._C import DispatchKey, DispatchKeySet

LOWER = "lower_precision_fp"  # cast floating inputs to the autocast dtype (bf16/fp16)
FP32 = "fp32"  # cast floating inputs to float32
FP32_SET_OPT_DTYPE = "fp32_set_opt_dtype"  # run with dtype=float32 unless a dtype is given
FP32_APPEND_DTYPE = "fp32_append_dtype"  # norm: the overload that takes a dtype, with float32
PROMOTE = "promote"  # cast floating inputs to the widest floating type among them
BANNED = "banned"  # torch refuses it under autocast

# torch 2.13's CUDA autocast policy (aten/src/ATen/autocast_mode.h and .cpp), op by op.
CUDA_POLICY: dict[str, str] = {
    **dict.fromkeys(
        (
            "_convolution",
            "_convolution.deprecated",
            "conv1d",
            "conv2d",
            "conv3d",
            "conv_tbc",
            "conv_transpose1d",
            "conv_transpose2d.input",
            "conv_transpose3d.input",
            "convolution",
            "cudnn_convolution",
            "cudnn_convolution_transpose",
            "prelu",
            "addmm",
            "addmv",
            "addr",
            "matmul",
            "einsum",
            "mm",
            "mv",
            "linalg_vecdot",
            "linear",
            "addbmm",
            "baddbmm",
            "bmm",
            "chain_matmul",
            "linalg_multi_dot",
            "_thnn_fused_lstm_cell",
            "_thnn_fused_gru_cell",
            "lstm_cell",
            "gru_cell",
            "rnn_tanh_cell",
            "rnn_relu_cell",
            "_scaled_dot_product_flash_attention",
            "scaled_dot_product_attention",
        ),
        LOWER,
    ),
    **dict.fromkeys(
        (
            "acos",
            "asin",
            "cosh",
            "erfinv",
            "exp",
            "expm1",
            "log",
            "log10",
            "log2",
            "log1p",
            "reciprocal",
            "rsqrt",
            "sinh",
            "tan",
            "pow.Tensor_Scalar",
            "pow.Tensor_Tensor",
            "pow.Scalar",
            "softplus",
            "layer_norm",
            "native_layer_norm",
            "group_norm",
            "rms_norm",
            "frobenius_norm.dim",
            "nuclear_norm",
            "nuclear_norm.dim",
            "cosine_similarity",
            "poisson_nll_loss",
            "cosine_embedding_loss",
            "nll_loss",
            "nll_loss2d",
            "hinge_embedding_loss",
            "kl_div",
            "l1_loss",
            "smooth_l1_loss",
            "huber_loss",
            "mse_loss",
            "margin_ranking_loss",
            "multilabel_margin_loss",
            "soft_margin_loss",
            "triplet_margin_loss",
            "multi_margin_loss",
            "binary_cross_entropy_with_logits",
            "dist",
            "pdist",
            "cdist",
            "renorm",
            "logsumexp",
            "upsample_nearest1d",
            "upsample_nearest2d",
            "upsample_nearest3d",
            "_upsample_nearest_exact1d",
            "_upsample_nearest_exact2d",
            "_upsample_nearest_exact3d",
            "upsample_linear1d",
            "upsample_bilinear2d",
            "_upsample_bilinear2d_aa",
            "upsample_trilinear3d",
            "upsample_bicubic2d",
            "_upsample_bicubic2d_aa",
        ),
        FP32,
    ),
    **dict.fromkeys(
        (
            "prod",
            "prod.dim_int",
            "softmax.int",
            "log_softmax.int",
            "cumprod",
            "cumsum",
            "linalg_vector_norm",
            "linalg_matrix_norm",
            "linalg_matrix_norm.str_ord",
            "sum",
            "sum.dim_IntList",
        ),
        FP32_SET_OPT_DTYPE,
    ),
    **dict.fromkeys(("norm.Scalar", "norm.ScalarOpt_dim"), FP32_APPEND_DTYPE),
    **dict.fromkeys(
        (
            "addcdiv",
            "addcmul",
            "atan2",
            "bilinear",
            "cross",
            "dot",
            "grid_sampler",
            "index_put",
            "scatter_add",
            "tensordot",
            "vdot",
        ),
        PROMOTE,
    ),
    "binary_cross_entropy": BANNED,
}

SDPA = "scaled_dot_product_attention"
_KEY = DispatchKey.AutocastPrivateUse1
_KEYSET = DispatchKeySet(_KEY)
_registered: set[str] = set()
_libraries: list[torch.library.Library] = []  # kept alive: a Library unregisters when collected
_lock = threading.Lock()
_local = threading.local()  # the policy running in this thread, if any


class _Running:
    def __init__(self, policy: Mapping[str, str], dtype: torch.dtype | None) -> None:
        self.policy = policy
        self.dtype = dtype  # None: no autocast, attention only
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _overload(name: str) -> torch._ops.OpOverload:
    base, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, base), overload or "default")


def _eligible(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64


def _cast(value: object, dtype: torch.dtype, running: _Running) -> object:
    """As torch's cached_cast: floating tensors (not float64) cast; an fp32 leaf that requires grad
    (a parameter) cast once per forward to the lower precision and kept."""
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype, running) for v in value)
    if not _eligible(value) or value.dtype == dtype:  # type: ignore[union-attr]
        return value
    assert isinstance(value, torch.Tensor)
    cacheable = (
        dtype == running.dtype
        and value.dtype == torch.float32
        and value.requires_grad
        and value.is_leaf
        and not value._is_view()
    )
    if cacheable and id(value) in running.cache:
        return running.cache[id(value)][1]
    cast = value.to(dtype)
    if cacheable:
        running.cache[id(value)] = (value, cast)  # the source kept: its id stays its own
    return cast


def _floating(values: tuple) -> Iterator[torch.Tensor]:
    for value in values:
        if isinstance(value, (list, tuple)):
            yield from _floating(tuple(value))
        elif _eligible(value):
            yield value  # type: ignore[misc]


def _first_tensor(values: tuple) -> torch.Tensor | None:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, (list, tuple)):
            found = _first_tensor(tuple(value))
            if found is not None:
                return found
    return None


def _autocast(name: str, op: torch._ops.OpOverload, running: _Running, args: tuple, kwargs: dict) -> tuple:
    """The arguments as torch's autocast would pass them on (and the op, for norm's dtype form)."""
    category = running.policy.get(name) if running.dtype is not None else None
    dtype = running.dtype
    assert dtype is not None or category is None
    # Tensors come positionally: no op of the policy takes one by keyword only (a test checks it).
    if category == LOWER:
        return op, _cast(args, dtype, running), kwargs  # type: ignore[arg-type]
    if category == FP32:
        return op, _cast(args, torch.float32, running), kwargs
    if category == PROMOTE:
        widest = dtype
        for t in _floating(args):
            widest = torch.promote_types(widest, t.dtype)  # type: ignore[arg-type]
        return op, _cast(args, widest, running), kwargs  # type: ignore[arg-type]
    first = _first_tensor(args)
    if category == FP32_SET_OPT_DTYPE and first is not None and _eligible(first):
        names = [a.name for a in op._schema.arguments]
        at = names.index("dtype")
        if at < len(args):
            args = (*args[:at], args[at] if args[at] is not None else torch.float32, *args[at + 1 :])
        elif kwargs.get("dtype") is None:
            kwargs = {**kwargs, "dtype": torch.float32}
    if category == FP32_APPEND_DTYPE and first is not None and _eligible(first):
        norm = torch.ops.aten.norm
        op = norm.ScalarOpt_dtype if name == "norm.Scalar" else norm.ScalarOpt_dim_dtype
        kwargs = {**kwargs, "dtype": torch.float32}
    if category == BANNED:
        raise RuntimeError(f"torch.nn.functional.{name} is unsafe to autocast (torch refuses it in autocast)")
    return op, args, kwargs


def _fused_attention(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """scaled_dot_product_attention as a GPU's fused kernel keeps it for backward, or None where
    that kernel does not take the call (not 4-D)."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")
    given = dict(zip(names, args, strict=False)) | kwargs
    query, key, value = given["query"], given["key"], given["value"]
    if not all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in (query, key, value)):
        return None
    mask = given.get("attn_mask")
    if mask is not None and mask.dtype == torch.bool:
        # As torch does before any fused kernel: a boolean mask becomes an additive one.
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=mask.device).masked_fill(
            mask.logical_not(), float("-inf")
        )
    out, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query,
        key,
        value,
        0.0,
        bool(given.get("is_causal", False)),
        attn_mask=mask,
        scale=given.get("scale"),
    )
    return out


def _kernel(name: str) -> Callable[..., object]:
    op = _overload(name)

    def kernel(*args: object, **kwargs: object) -> object:
        running: _Running | None = getattr(_local, "running", None)
        with torch._C._ExcludeDispatchKeyGuard(_KEYSET):
            if running is None:
                return op(*args, **kwargs)
            call, args, kwargs = _autocast(name, op, running, args, kwargs)  # type: ignore[assignment]
            if name == SDPA:
                out = _fused_attention(args, kwargs)  # type: ignore[arg-type]
                if out is not None:
                    return out
            return call(*args, **kwargs)

    return kernel


def _register(names: set[str]) -> None:
    with _lock:
        if not _libraries:
            fallback = torch.library.Library("_", "IMPL", "AutocastPrivateUse1")
            fallback.fallback(torch.library.fallthrough_kernel)
            _libraries.append(fallback)
        missing = sorted(names - _registered)
        if missing:
            lib = torch.library.Library("aten", "IMPL", "AutocastPrivateUse1")
            for name in missing:
                lib.impl(name, _kernel(name))
            _libraries.append(lib)
            _registered.update(missing)


@contextmanager
def on_gpu(autocast: torch.dtype | None = None, policy: Mapping[str, str] = CUDA_POLICY) -> Iterator[None]:
    """Run what is inside as a CUDA device would: fused attention, and with ``autocast`` (bf16 or
    fp16) torch's autocast ``policy`` (CUDA's by default). This thread only; not re-entrant."""
    _register({SDPA, *policy})
    if getattr(_local, "running", None) is not None:
        raise RuntimeError("on_gpu is already running in this thread")
    _local.running = _Running(policy, autocast)
    included = torch._C._dispatch_tls_is_dispatch_key_included(_KEY)
    excluded = torch._C._dispatch_tls_is_dispatch_key_excluded(_KEY)
    torch._C._dispatch_tls_set_dispatch_key_included(_KEY, True)
    torch._C._dispatch_tls_set_dispatch_key_excluded(_KEY, False)
    try:
        yield
    finally:
        torch._C._dispatch_tls_set_dispatch_key_included(_KEY, included)
        torch._C._dispatch_tls_set_dispatch_key_excluded(_KEY, excluded)
        _local.running = None
