"""Whose keys a file's are, asked of transformers: each catalogue family built on meta."""

from __future__ import annotations

import torch
import transformers

from app.architectures.catalogue import ARCHITECTURES
from app.doctor.likeness import closest, layout


def test_a_files_keys_are_named_by_the_family_whose_layout_holds_them() -> None:
    assert (
        layout("encoder.layer.11.attention.self.query.weight")
        == "encoder.layer.#.attention.self.query.weight"
    )
    config = transformers.BertConfig(**{**ARCHITECTURES["bert_tiny"].config, "num_hidden_layers": 5})
    with torch.device("meta"):
        bert = transformers.BertModel(config).state_dict()  # another head, other depth: still BERT
        llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(**ARCHITECTURES["llama_tiny"].config))
    assert closest(list(bert)) == "bert"
    assert closest(list(llama.state_dict())) == "llama"
    assert closest(["my.own.layer.weight", "other.bias"]) is None
