"""The tensor tree for a terminal: numbered layers of one make folded, leaves with shape and dtype,
a depth past which nodes only say what they hold."""

from __future__ import annotations

import torch
import transformers

from app.doctor.describe import describe
from app.doctor.formats import Described, Found
from app.doctor.outline import outline
from app.doctor.report import TensorEntry


def entries(state: dict[str, torch.Tensor]) -> list[TensorEntry]:
    found = Found(state_dicts=[[]])
    for key, t in state.items():
        found.tensors.append(
            ([key], Described(list(t.shape), str(t.dtype).removeprefix("torch."), t.numel(), 0))
        )
    return describe("safetensors", found, {}, 0).tensors


def test_twelve_layers_are_one_node_and_the_depth_is_obeyed() -> None:
    config = transformers.GPT2Config(n_embd=8, n_layer=12, n_head=2, vocab_size=10, n_positions=4)
    with torch.device("meta"):
        state = transformers.GPT2LMHeadModel(config).state_dict()
    full, used = outline(entries(state), depth=None, most=200)
    assert used == 0
    layer = next(line for line in full if line.name.startswith("h."))
    assert (layer.name, layer.times) == ("h.{0..11}", 12)
    per_layer = sum(1 for k in state if k.startswith("transformer.h.0."))
    assert layer.detail.startswith(f"{per_layer} tensors") and layer.detail.endswith("each")
    assert any(line.name == "c_attn.weight" and line.detail == "[8, 24] float32" for line in full)
    assert any(line.name == "ln_1.{weight,bias}" and line.detail == "[8] float32" for line in full)
    shallow, used = outline(entries(state), depth=2)
    assert used == 2 and max(line.depth for line in shallow) == 1
    assert len(shallow) < len(full) and any(line.name == "h.{0..11}" for line in shallow)


def test_without_a_depth_the_deepest_tree_that_fits() -> None:
    state = {f"blocks.{i}.w{j}": torch.zeros(i + 1, j + 1) for i in range(6) for j in range(3)}  # none alike
    lines, used = outline(entries(state), most=8)
    assert len(lines) <= 8 and used >= 1
    # Three levels: "enc" and its three parts fit in 8 lines; the 18 leaves under them do not.
    parts = ("attn", "mlp", "norm")
    state = {
        f"enc.{n}.{m}.w{k}": torch.zeros(len(n) + k, len(m)) for n in parts for m in parts for k in (0, 1)
    }
    lines, used = outline(entries(state), most=8)
    assert used == 2 and [line.name for line in lines] == ["enc", *parts]
    assert len(outline(entries(state), depth=3)[0]) > 8


def test_a_tensor_whose_key_other_keys_go_on_from_is_shown_too() -> None:
    """bitsandbytes' 4-bit layers save weight beside weight.absmax and weight.quant_map: the weight
    itself was left out of the tree (its node was taken for a module)."""
    state = {
        "l.weight": torch.zeros(8, dtype=torch.uint8),
        "l.weight.absmax": torch.zeros(2),
        "l.weight.quant_map": torch.zeros(16),
        "l.bias": torch.zeros(4),
    }
    full, used = outline(entries(state))
    assert used == 0
    assert [(line.depth, line.name, line.detail) for line in full] == [
        (0, "l", "4 tensors, 30 elements"),
        (1, "weight", "[8] uint8"),
        (1, "weight.absmax", "[2] float32"),
        (1, "weight.quant_map", "[16] float32"),
        (1, "bias", "[4] float32"),
    ]
    assert [line.name for line in outline(entries({"a.b": torch.zeros(2), "a": torch.zeros(3)}))[0]] == [
        "a",
        "a.b",
    ]
