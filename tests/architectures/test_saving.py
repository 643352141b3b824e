"""What each save does with tied tensors, said from the model on meta, against each library saving
the same model built on the CPU for real: torch.save, safetensors' save_file and save_model,
transformers' save_pretrained."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file, save_model

from app.architectures import configs
from app.architectures.catalogue import build
from app.architectures.saving import saving
from tests.support.architectures import TINY


def tensor_bytes(path: Path) -> tuple[dict[str, int], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {
            k: f.get_tensor(k).numel() * f.get_tensor(k).element_size()
            for k in f.keys()  # noqa: SIM118 (safe_open is no dict)
        }, f.metadata() or {}


@pytest.mark.parametrize("arch_id", TINY)
def test_each_way_of_saving_does_what_the_page_says(arch_id: str, tmp_path: Path) -> None:
    said = {w.way.split("(")[0]: w for w in saving(build(arch_id, "meta")).ways}
    model = build(arch_id, "cpu")
    state = model.state_dict()
    # torch.save: the zip holds one data record per storage.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(buffer) as z:
        data = sum(i.file_size for i in z.infolist() if "/data/" in i.filename)
    assert said["torch.save"].bytes == data
    # save_file: refused exactly when tensors share memory.
    plain = said["safetensors.torch.save_file"]
    try:
        save_file(state, tmp_path / "plain.safetensors")
        assert plain.writes and plain.bytes == sum(tensor_bytes(tmp_path / "plain.safetensors")[0].values())
    except RuntimeError as refused:
        assert not plain.writes and "share memory" in str(refused) and plain.bytes == 0
    # save_model: the names it drops, and the one it keeps for each (its own metadata says so).
    deduped = said["safetensors.torch.save_model"]
    save_model(model, str(tmp_path / "model.safetensors"))
    written, metadata = tensor_bytes(tmp_path / "model.safetensors")
    assert set(written) == set(state) - set(deduped.dropped)
    assert {k: v for k, v in metadata.items() if k in state} == deduped.dropped
    assert deduped.bytes == sum(written.values())
    # save_pretrained: what transformers leaves out, and a strict load of that file reporting it.
    pretrained = said["model.save_pretrained"]
    model.save_pretrained(tmp_path / "pretrained")
    written, _ = tensor_bytes(tmp_path / "pretrained" / "model.safetensors")
    names = {pretrained.renamed.get(n, n) for n in state if n not in pretrained.dropped}
    assert set(written) == names
    assert pretrained.bytes == sum(written.values())
    if pretrained.dropped or pretrained.renamed:
        with safe_open(str(tmp_path / "pretrained" / "model.safetensors"), "pt") as f:
            loaded = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        with pytest.raises(RuntimeError, match="Missing key") as missing:
            build(arch_id, "cpu").load_state_dict(loaded)
        assert all(name in str(missing.value) for name in [*pretrained.dropped, *pretrained.renamed])


def test_the_figures_the_issue_names() -> None:
    gpt2 = {w.way.split("(")[0]: w for w in saving(build("gpt2", "meta")).ways}
    assert gpt2["torch.save"].bytes == 124_439_808 * 4  # the tied head once: about 498 MB
    assert "497.8 MB, not the 652.1 MB" in gpt2["torch.save"].says
    assert not gpt2["safetensors.torch.save_file"].writes
    assert gpt2["model.save_pretrained"].dropped == {"lm_head.weight": "transformer.wte.weight"}
    vit = {w.way.split("(")[0]: w for w in saving(build("vit_base", "meta")).ways}["model.save_pretrained"]
    assert (
        vit.renamed["vit.layers.0.attention.q_proj.weight"]
        == "vit.encoder.layer.0.attention.attention.query.weight"
    )


@pytest.mark.parametrize("arch_id", [*TINY, "gpt2", "vit_base"])
def test_each_ways_sentence_is_the_one_for_what_it_does(arch_id: str) -> None:
    model = build(arch_id, "meta")
    storages: dict[int, list[str]] = {}
    for name, t in model.state_dict().items():
        storages.setdefault(t.untyped_storage()._cdata, []).append(name)
    shared = [names for names in storages.values() if len(names) > 1]
    said = {w.way.split("(")[0]: w for w in saving(model).ways}
    for way in said.values():  # a way that writes every tensor says how much: its own bytes
        if way.says.startswith("Writes every tensor"):
            assert way.says.startswith(f"Writes every tensor: {way.bytes / 1e6:,.1f} MB"), way.way
    assert said["torch.save"].says.startswith(
        "Writes each storage once: " if shared else "Writes every tensor: "
    )
    refuses = "Refuses: tensors share memory (" + ", ".join(" = ".join(g) for g in shared) + ")"
    assert said["safetensors.torch.save_file"].says.startswith(refuses if shared else "Writes every tensor: ")
    dropped = said["safetensors.torch.save_model"].dropped
    assert bool(dropped) == bool(shared)
    if dropped:
        names = ", ".join(f"{n} (= {k})" for n, k in dropped.items())
        deduped = said["safetensors.torch.save_model"]
        assert deduped.says.startswith(
            f"Writes {deduped.bytes / 1e6:,.1f} MB, leaving out {names} (the name kept is the first"
        )
    else:
        assert said["safetensors.torch.save_model"].says.startswith("Writes every tensor: ")
    pretrained = said["model.save_pretrained"]
    if pretrained.dropped:  # every name it leaves out, said
        size = sum(
            t.numel() * t.element_size() for n, t in model.state_dict().items() if n not in pretrained.dropped
        )
        names = ", ".join(pretrained.dropped)
        assert pretrained.says.startswith(f"Writes {size / 1e6:,.1f} MB without {names}: "), pretrained.says
    else:
        assert pretrained.says.startswith("Writes every tensor: "), pretrained.says
    if pretrained.renamed:
        first, name = next(iter(pretrained.renamed.items()))
        assert (
            f"It writes {len(pretrained.renamed)} of them under the checkpoint's original names"
            in pretrained.says
        )
        assert f"e.g. {first} as {name})" in pretrained.says


MIXTRAL = {
    "model_type": "mixtral",
    "architectures": ["MixtralForCausalLM"],
    "vocab_size": 64,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "num_local_experts": 2,
    "num_experts_per_tok": 1,
    "max_position_embeddings": 32,
}


def test_experts_fused_in_memory_are_named_by_the_files_they_become(tmp_path: Path) -> None:
    """Mixtral holds its experts fused (experts.gate_up_proj); save_pretrained writes them apart
    under the original names (experts.0.w1.weight, ...): those names, each once, are what the way says."""
    config = configs.read(json.dumps(MIXTRAL))
    said = {w.way.split("(")[0]: w for w in saving(configs.build(config, "meta")).ways}[
        "model.save_pretrained"
    ]
    model = configs.build(config, "cpu")
    model.save_pretrained(tmp_path)
    written, _ = tensor_bytes(tmp_path / "model.safetensors")
    state = model.state_dict()
    made = set(written) - {said.renamed.get(n, n) for n in state if "," not in said.renamed.get(n, "")}
    fused = {n: v for n, v in said.renamed.items() if "," in v}
    assert fused and made and all(set(v.split(", ")) == made for v in fused.values())
    assert set(said.renamed) | set(written) >= set(state) - set(said.dropped)


def buffers(**named: torch.Tensor) -> torch.nn.Module:
    module = torch.nn.Module()
    for name, t in named.items():
        module.register_buffer(name, t)
    return module


WHOLE = torch.arange(12.0)
SHARING = {
    # "a" views the end of "b"'s storage and comes first by name: "b" covers it and is kept.
    "a view and its whole": lambda: (lambda w: buffers(b=w, a=w[2:]))(WHOLE.clone()),
    "two halves side by side": lambda: (lambda w: buffers(a=w[:6], b=w[6:]))(WHOLE.clone()),
    "two overlapping parts": lambda: (lambda w: buffers(a=w[:7], b=w[5:]))(WHOLE.clone()),
    "a lone slice": lambda: buffers(a=WHOLE.clone()[:4]),
    "a tied pair and a third": lambda: (lambda w: buffers(a=w, b=w, c=w[3:5]))(WHOLE.clone()),
    "rows of a matrix": lambda: (lambda w: buffers(m=w, r=w[1]))(WHOLE.clone().view(3, 4)),
    # Rows 0-1 of a 3x4 matrix end at element 8: a tail from element 6 overlaps them.
    "a matrix's first rows and a tail": lambda: (lambda w: buffers(a=w.view(3, 4)[:2], b=w[6:]))(
        WHOLE.clone()
    ),
    "nothing shared": lambda: buffers(a=WHOLE.clone(), b=WHOLE.clone()),
    # An empty storage is no memory shared: safetensors leaves it out of its groups.
    "an empty tensor twice": lambda: (lambda w: buffers(a=w, b=w))(torch.empty(0)),
}


@pytest.mark.parametrize("case", list(SHARING))
def test_safetensors_ways_say_what_safetensors_does_with_memory_shared(case: str, tmp_path: Path) -> None:
    said = {w.way.split("(")[0]: w for w in saving(SHARING[case]()).ways}
    state = SHARING[case]().state_dict()
    plain = said["safetensors.torch.save_file"]
    try:
        save_file(state, tmp_path / "plain.safetensors")
        assert plain.writes and plain.bytes == sum(tensor_bytes(tmp_path / "plain.safetensors")[0].values())
    except RuntimeError as refused:
        assert "share memory" in str(refused) and (plain.writes, plain.bytes) == (False, 0), case
    deduped = said["safetensors.torch.save_model"]
    try:
        save_model(SHARING[case](), str(tmp_path / "model.safetensors"))
    except RuntimeError as refused:
        assert "None is covering the entire storage" in str(refused), case
        assert (deduped.writes, deduped.bytes, deduped.dropped) == (False, 0, {}), case
        assert deduped.says.startswith("Refuses: none of "), deduped.says
        return
    written, metadata = tensor_bytes(tmp_path / "model.safetensors")
    assert deduped.writes and deduped.dropped == {k: v for k, v in metadata.items() if k in state}, case
    assert deduped.bytes == sum(written.values()) and set(written) == set(state) - set(deduped.dropped)
