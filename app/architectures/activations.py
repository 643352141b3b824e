"""What one forward holds, measured: the bytes autograd saves for backward, the outputs (logits and
loss), the KV cache of an inference forward, the FLOPs, and each module's output shape.

Every figure is read from a forward of the live model, on the meta device for the full sizes (shapes
and dtypes, no values, no memory), as a GPU would run it (``app.architectures.emulation``). The same
functions run on real tensors, which is how the tests check them: the bytes counted on meta are the
bytes counted on the CPU.

Bytes are counted per storage, each once: a view of a saved tensor costs nothing more, a slice keeps
its whole storage, and the storages of the model's own parameters and buffers are left out (they
are counted as weights). A storage is told apart by its ``StorageImpl`` (``_cdata``), which meta
storages have too, held alive while counting so no address is reused.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from app.architectures.emulation import on_gpu

MAX_DEPTH = 6  # how deep an output or a cache object is searched for tensors


@dataclass
class Forward:
    """One forward, measured."""

    saved: int = 0  # bytes autograd keeps for backward, parameters and buffers left out
    saved_storages: int = 0
    outputs: int = 0  # bytes of the outputs (logits, loss) not among the saved
    kv_cache: int = 0  # bytes of the key/value cache an inference forward returns
    peak: int = 0  # inference: the most bytes alive at once during the forward (the cache included)
    output_names: list[str] = field(default_factory=list)

    @property
    def activations(self) -> int:
        return self.saved + self.outputs


@dataclass(frozen=True)
class ModuleShape:
    path: str
    class_name: str
    shapes: list[list[int]]  # each tensor it returns, in order
    dtypes: list[str]
    bytes: int


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _tensors(value: object, depth: int = 0) -> Iterator[torch.Tensor]:
    """Tensors in an output or a cache: a model output (a dict), tuples, lists, plain objects."""
    if isinstance(value, torch.Tensor):
        yield value
        return
    if depth >= MAX_DEPTH or value is None or isinstance(value, (str, bytes, int, float, bool)):
        return
    if isinstance(value, Mapping):
        items = list(value.values())
    elif isinstance(value, (list, tuple)):
        items = list(value)
    elif hasattr(value, "__dict__") and not isinstance(value, (nn.Module, type)):
        items = list(vars(value).values())
    else:
        return
    for item in items:
        yield from _tensors(item, depth + 1)


def _model_storages(model: nn.Module) -> set[int]:
    return {_key(t) for t in [*model.parameters(), *model.buffers()]}


def accepts(model: nn.Module, name: str) -> bool:
    """Whether the model's forward takes an argument of this name."""
    return name in inspect.signature(model.forward).parameters


def training_forward(
    model: nn.Module, inputs: Mapping[str, torch.Tensor], autocast: torch.dtype | None = None
) -> Forward:
    """A training forward (train mode, as a GPU runs it): the bytes autograd saves for backward and
    the outputs beside them. ``autocast``: the bf16/fp16 of torch.autocast("cuda") over the model."""
    model.train()
    own = _model_storages(model)
    held: list[torch.Tensor] = []
    sizes: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        held.append(t)
        key = _key(t)
        if key not in own:
            sizes[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), on_gpu(autocast):
        out = model(**inputs)
    found = Forward(saved=sum(sizes.values()), saved_storages=len(sizes))
    outputs: dict[int, int] = {}
    for t in _tensors(out):
        key = _key(t)
        if key not in own and key not in sizes:
            outputs[key] = t.untyped_storage().nbytes()
    found.outputs = sum(outputs.values())
    found.output_names = [k for k, v in (out.items() if isinstance(out, Mapping) else []) if v is not None]
    del out
    held.clear()
    return found


class LiveBytes(TorchDispatchMode):
    """The bytes alive while a forward runs: every storage an op makes, from its first tensor until
    its last tensor is gone (the model's own storages left out); ``peak`` is the most at once."""

    def __init__(self, own: set[int]) -> None:
        super().__init__()
        self.own = own
        self.live = 0
        self.peak = 0
        self.storages: dict[int, list[int]] = {}  # storage -> [its tensors alive, its bytes]

    def _gone(self, key: int) -> None:
        entry = self.storages[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self.storages[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = _key(t)
            if key in self.own:
                continue
            if key not in self.storages:
                size = t.untyped_storage().nbytes()
                self.storages[key] = [0, size]
                self.live += size
                self.peak = max(self.peak, self.live)
            self.storages[key][0] += 1
            weakref.finalize(t, self._gone, key)
        return out


def inference_forward(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> Forward:
    """An inference forward (eval mode, no grad) that fills the key/value cache, as generation's
    first step does: the most bytes alive at once during it, and the cache's and the returned
    logits' bytes at its end."""
    model.eval()
    own = _model_storages(model)
    live = LiveBytes(own)
    with torch.no_grad(), on_gpu(), live:
        out = model(**inputs)
    cache = out.get("past_key_values") if isinstance(out, Mapping) else None
    kv = {_key(t): t.untyped_storage().nbytes() for t in _tensors(cache) if _key(t) not in own}
    # A model output's fields but its cache; a module that returns a tensor (or a tuple) returns it all.
    fields = out.items() if isinstance(out, Mapping) else [("", out)]
    rest = {
        _key(t): t.untyped_storage().nbytes()
        for name, value in fields
        if name != "past_key_values"
        for t in _tensors(value)
        if _key(t) not in own and _key(t) not in kv
    }
    return Forward(kv_cache=sum(kv.values()), outputs=sum(rest.values()), peak=live.peak)


def _flash_flops(query: torch.Size, key: torch.Size, value: torch.Size, *_: object, **__: object) -> int:
    # As torch counts its CUDA fused kernels (given shapes): the query's heads against every key,
    # grouped key/value heads counted once per query head that reads them.
    heads = query[1]
    return sdpa_flop_count(query, (*key[:1], heads, *key[2:]), (*value[:1], heads, *value[2:]))


def _flop_mapping() -> dict:
    return {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _flash_flops}


def flops_and_shapes(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> tuple[int, list[ModuleShape]]:
    """FLOPs of one forward as torch.utils.flop_counter counts them (matrix products, convolutions,
    attention), and every module's output shapes, from one eval-mode forward without grad."""
    model.eval()
    shapes: dict[str, ModuleShape] = {}
    names = {id(m): n for n, m in model.named_modules()}

    def hook(module: nn.Module, _args: object, output: object) -> None:
        path = names[id(module)]
        if path in shapes:  # a module called twice (a tied head) keeps its first call
            return
        found = list(_tensors(output, MAX_DEPTH - 1))
        shapes[path] = ModuleShape(
            path,
            type(module).__name__,
            [list(t.shape) for t in found],
            [str(t.dtype).removeprefix("torch.") for t in found],
            sum(t.numel() * t.element_size() for t in found),
        )

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    counter = FlopCounterMode(display=False, custom_mapping=_flop_mapping())
    try:
        with torch.no_grad(), on_gpu(), counter:
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    order = [n for n, _ in model.named_modules()]
    return counter.get_total_flops(), [shapes[n] for n in order if n in shapes]
