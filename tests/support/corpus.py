"""The checkpoint doctor's corpus: checkpoints as torch, transformers, safetensors and huggingface_hub
write them (wrappers, Lightning, SWA, compiled submodules, sharded save_pretrained as safetensors and
as .bin, tied weights, BatchNorm statistics, other widths and depths, fp16, extra keys, another
architecture, optimizer states, EMA, DCP, a LoRA adapter, .pth.tar, renamed, truncated, empty, and
what users send instead of a checkpoint), each with what ``mre inspect`` must answer: its exit
status, the verdict and headline, the causes in order and the key patterns they name. Everything is
built here from configs: nothing is downloaded. Small models, so that the table stays fast.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import pathlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from huggingface_hub import save_torch_state_dict
from safetensors.torch import save_file, save_model
from torch import nn

from app import cli
from app.architectures.catalogue import ARCHITECTURES
from tests.support.checkpoints import ref

LOADS, DOES_NOT, BAD_INPUT = 0, 1, 2


class Config(collections.OrderedDict):
    """A training script's own dict subclass, pickled by reference to this module."""


class Unsafe:
    """An object of a class of the script: its pickle names a global off the allow-list."""

    def __init__(self) -> None:
        self.lr = 0.1


@dataclass(frozen=True)
class Entry:
    args: tuple[str, ...]  # after `mre inspect`: files or folders, then options
    exit: int
    verdict: str | None = None  # loads, fixed, partial, fails; None: nothing loaded (or refused)
    causes: tuple[str, ...] = ()
    headline: str = ""  # words of the English headline
    groups: tuple[str, ...] = ()  # patterns the causes name
    explains: str = ""  # words of some cause's explanation
    refused: str = ""  # words of the refusal (exit 2)


def run(*args: str) -> tuple[int, bytes, str]:
    """mre's main() in this process (no interpreter and torch import per run): status, stdout, stderr."""
    out, err = io.TextIOWrapper(io.BytesIO(), write_through=True), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(list(args))
    return status, out.buffer.getvalue(), err.getvalue()  # type: ignore[attr-defined]


def words(text: str) -> str:
    return " ".join(text.split())


def inspected(entry: Entry) -> tuple[int, dict | None, str]:
    """`mre inspect --json` on an entry: its status, the JSON (None when refused) and stderr."""
    status, out, err = run("inspect", *entry.args, "--json")
    return status, json.loads(out) if out.strip() else None, err


def disagreements(corpus: dict[str, Entry], answers: dict[str, tuple[int, dict | None, str]]) -> dict:
    """Each entry whose answer is not what the corpus says mre must answer: what was said instead."""
    wrong = {}
    for name, entry in corpus.items():
        status, report, err = answers[name]
        if entry.refused:
            got = (status, words(err))
            if status != entry.exit or words(entry.refused) not in got[1]:
                wrong[name] = got
            continue
        diagnosis = report["load"]["diagnosis"] if report and report["load"] else None
        said = {
            "exit": status,
            "verdict": diagnosis["verdict"] if diagnosis else None,
            "causes": tuple(c["id"] for c in diagnosis["causes"]) if diagnosis else (),
        }
        headline = diagnosis["headline"]["en"] if diagnosis else ""
        patterns = {g["pattern"] for c in (diagnosis or {}).get("causes", []) for g in c["groups"]}
        explained = " ".join(c["explanation"]["en"] for c in (diagnosis or {}).get("causes", []))
        if (
            said != {"exit": entry.exit, "verdict": entry.verdict, "causes": entry.causes}
            or entry.headline not in headline
            or not set(entry.groups) <= patterns
            or entry.explains not in explained
        ):
            wrong[name] = (said, headline, sorted(patterns)[:8])
    return wrong


def _gpt2(**changes: object) -> transformers.GPT2Config:
    return transformers.GPT2Config(**{**ARCHITECTURES["gpt2_tiny"].config, **changes})


def _seeded(build: object) -> nn.Module:
    torch.manual_seed(0)
    return build()  # type: ignore[operator]


def _llama(cls: type, tied: bool) -> nn.Module:
    config = transformers.LlamaConfig(
        **{**ARCHITECTURES["llama_tiny"].config, "tie_word_embeddings": tied}, architectures=[cls.__name__]
    )
    return _seeded(lambda: cls(config))


def make_corpus(root: Path) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    out |= _wrappers(root)
    out |= _training(root)
    out |= _lab(root)
    out |= _transformers(root)
    out |= _foreign(root)
    out |= _not_checkpoints(root)
    return out


def _wrappers(root: Path) -> dict[str, Entry]:
    model = ref("testmodel")
    state = model.state_dict()
    torch.save(nn.DataParallel(model).state_dict(), root / "data_parallel.pt")
    torch.save(torch.compile(model).state_dict(), root / "compiled.pt")
    torch.save(nn.DataParallel(torch.compile(model)).state_dict(), root / "dp_compiled.pt")
    lightning = {
        "epoch": 3,
        "global_step": 120,
        "state_dict": {f"model.{k}": v for k, v in state.items()},
        "hyper_parameters": {"lr": 0.01},
    }
    torch.save(lightning, root / "lightning.ckpt")
    swa = torch.optim.swa_utils.AveragedModel(model)
    swa.update_parameters(model)
    torch.save(swa.state_dict(), root / "swa.pt")
    partly = ref("testmodel")
    partly.linear = torch.compile(partly.linear)
    torch.save(partly.state_dict(), root / "compiled_submodule.pt")
    return {
        "data_parallel": Entry(
            (str(root / "data_parallel.pt"), "--into", "testmodel"),
            DOES_NOT,
            "fixed",
            ("prefix",),
            "all 5 tensors load",
            explains="DataParallel",
        ),
        "compiled": Entry(
            (str(root / "compiled.pt"), "--into", "testmodel"),
            DOES_NOT,
            "fixed",
            ("prefix",),
            explains="torch.compile",
        ),
        "dp_compiled": Entry(
            (str(root / "dp_compiled.pt"), "--into", "testmodel"), DOES_NOT, "fixed", ("prefix", "prefix")
        ),
        "lightning": Entry(
            (str(root / "lightning.ckpt"), "--into", "testmodel"),
            DOES_NOT,
            "fixed",
            ("prefix",),
            explains="Lightning",
        ),
        "swa": Entry(
            (str(root / "swa.pt"), "--into", "testmodel"),
            DOES_NOT,
            "fixed",
            ("prefix",),
            explains="AveragedModel",
        ),
        "compiled_submodule": Entry(
            (str(root / "compiled_submodule.pt"), "--into", "testmodel"),
            DOES_NOT,
            "fixed",
            ("compiled_submodule",),
            groups=("linear._orig_mod.{weight,bias}",),
        ),
    }


def _training(root: Path) -> dict[str, Entry]:
    model = ref("testmodel")
    state = model.state_dict()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    ema = {k: v.clone() * 0.99 for k, v in state.items()}
    torch.save(
        {"model": state, "ema": ema, "optimizer": optimizer.state_dict(), "epoch": 9}, root / "train.pt"
    )
    torch.save(optimizer.state_dict(), root / "optimizer.pt")
    torch.save({**state, "aux.weight": torch.ones(2)}, root / "extra_keys.pt")
    torch.save({k: v.half() for k, v in state.items()}, root / "fp16.pt")
    wider = ref("testmodel")
    wider.linear = nn.Linear(3, 5)
    torch.save(wider.half().state_dict(), root / "wider.pt")
    torch.save({**state, "linear.weight": state["linear.weight"].to_sparse()}, root / "sparse.pt")
    quantized = torch.quantize_per_tensor(state["linear.weight"], 0.01, 0, torch.qint8)
    torch.save({**state, "linear.weight": quantized}, root / "quantized.pt")
    with torch.device("meta"):  # built on meta and saved before its weights were loaded
        torch.save(ref("testmodel").state_dict(), root / "saved_on_meta.pt")
    torch.save({"state_dict": state, "epoch": 3, "arch": "TestModel"}, root / "checkpoint.pth.tar")
    torch.save(state, root / "renamed.safetensors")  # a torch file with safetensors' name
    torch.save(state, root / "legacy.pt", _use_new_zipfile_serialization=False)
    benign = {
        "state_dict": state,
        "args": argparse.Namespace(lr=0.1, epochs=3),
        "best": np.float64(0.93),
        "history": np.arange(3.0),
        "output_dir": pathlib.PurePosixPath("/runs/7"),
        "config": Config(depth=2, width=3),
    }
    torch.save(benign, root / "benign.pt")
    torch.save({"state_dict": state, "hp": {"opt": Unsafe()}}, root / "unsafe.pt")
    torch.save(nn.Sequential(nn.Linear(3, 3)), root / "whole_model.pt")
    into = ("--into", "testmodel")
    return {
        "ema_and_model": Entry((str(root / "train.pt"), *into), LOADS, "loads", headline="all 5 tensors"),
        "ema_asked": Entry((str(root / "train.pt"), *into, "--state-dict", "ema"), LOADS, "loads"),
        "optimizer": Entry(
            (str(root / "optimizer.pt"), *into),
            DOES_NOT,
            "fails",
            ("optimizer_state",),
            "loads 0 of 5 tensors; the file is an optimizer's state_dict",
        ),
        "extra_keys": Entry(
            (str(root / "extra_keys.pt"), *into), DOES_NOT, "fixed", ("unexpected",), groups=("aux.weight",)
        ),
        "fp16": Entry((str(root / "fp16.pt"), *into), LOADS, "loads", ("dtype_change",)),
        "wider": Entry(
            (str(root / "wider.pt"), *into),
            DOES_NOT,
            "partial",
            ("size_mismatch", "dtype_change"),
            "loads 3 of 5 tensors",
            groups=("linear.weight", "linear.bias"),
        ),
        "sparse": Entry(
            (str(root / "sparse.pt"), *into), DOES_NOT, "fixed", ("sparse",), explains="sparse layout"
        ),
        "quantized": Entry(
            (str(root / "quantized.pt"), *into), DOES_NOT, "fixed", ("quantized",), explains="torch.qint8"
        ),
        "saved_on_meta": Entry(
            (str(root / "saved_on_meta.pt"), *into),
            DOES_NOT,
            "partial",
            ("meta_values",),
            "loads 0 of 5 tensors",
            groups=("{parameter1,parameter2,buffer2}", "linear.weight", "linear.bias"),
        ),
        "pth_tar": Entry((str(root / "checkpoint.pth.tar"), *into), LOADS, "loads"),
        "renamed": Entry((str(root / "renamed.safetensors"), *into), LOADS, "loads"),
        "legacy": Entry((str(root / "legacy.pt"), *into), LOADS, "loads"),
        "benign": Entry((str(root / "benign.pt"), *into), LOADS, "loads"),
        "unsafe": Entry(
            (str(root / "unsafe.pt"),),
            BAD_INPUT,
            refused="the file holds an object of tests.support.corpus.Unsafe at hp.opt",
        ),
        "whole_model": Entry(
            (str(root / "whole_model.pt"),),
            BAD_INPUT,
            refused="torch.nn.modules.container.Sequential at (the top)",
        ),
    }


def _lab(root: Path) -> dict[str, Entry]:
    save_model(ref("tied_weights"), str(root / "tied.safetensors"))  # keeps one name of the pair
    norm = ref("batchnorm")
    norm.bn = nn.BatchNorm1d(3, track_running_stats=False)
    torch.save(norm.state_dict(), root / "no_stats.pt")
    torch.save(ref("positional_encoding").state_dict(), root / "persistent_pe.pt")
    torch.save(ref("positional_encoding", pe="non_persistent_buffer").state_dict(), root / "no_pe.pt")
    pe = ("--into", "positional_encoding", "--style", "pe=non_persistent_buffer")
    return {
        "tied": Entry(
            (str(root / "tied.safetensors"), "--into", "tied_weights"),
            DOES_NOT,
            "fixed",
            ("tied_weights",),
            groups=("head.weight",),
        ),
        "no_stats": Entry(
            (str(root / "no_stats.pt"), "--into", "batchnorm"),
            DOES_NOT,
            "partial",
            ("batchnorm_stats",),
            "keep the module's initial values",
        ),
        "persistent_pe": Entry(
            (str(root / "persistent_pe.pt"), *pe), DOES_NOT, "fixed", ("non_persistent_saved",)
        ),
        "no_pe": Entry((str(root / "no_pe.pt"), *pe), LOADS, "loads", ("non_persistent_absent",)),
    }


def _transformers(root: Path) -> dict[str, Entry]:
    transformers.logging.set_verbosity_error()
    lm = _seeded(lambda: transformers.GPT2LMHeadModel(_gpt2()))
    hf = root / "gpt2_folder"
    lm.save_pretrained(hf, max_shard_size="100KB")
    bins = root / "gpt2_bin"
    bins.mkdir()
    save_torch_state_dict(lm.state_dict(), bins, safe_serialization=False, max_shard_size="100KB")
    lm.config.save_pretrained(bins)
    missing = root / "gpt2_missing_shard"
    shutil.copytree(hf, missing)
    shards = sorted(missing.glob("model-*.safetensors"))
    shards[-1].unlink()
    truncated = root / "gpt2_truncated_shard"
    shutil.copytree(hf, truncated)
    cut = sorted(truncated.glob("model-*.safetensors"))[1]
    cut.write_bytes(cut.read_bytes()[:-100])
    save_file(_seeded(lambda: transformers.GPT2Model(_gpt2())).state_dict(), root / "backbone.safetensors")
    torch.save(
        _seeded(lambda: transformers.GPT2LMHeadModel(_gpt2(n_embd=32))).state_dict(), root / "narrow.pt"
    )
    torch.save(
        _seeded(lambda: transformers.GPT2LMHeadModel(_gpt2(n_layer=3))).state_dict(), root / "deeper.pt"
    )
    torch.save(
        _seeded(lambda: transformers.GPT2LMHeadModel(_gpt2(n_layer=1))).state_dict(), root / "shallow.pt"
    )
    resnet = transformers.ResNetConfig(**{**ARCHITECTURES["resnet_tiny"].config, "num_labels": 5})
    torch.save(
        _seeded(lambda: transformers.ResNetForImageClassification(resnet)).state_dict(), root / "head5.pt"
    )
    llama = root / "llama_folder"
    _llama(transformers.LlamaForCausalLM, tied=True).save_pretrained(llama)
    mistral_config = transformers.MistralConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=128,
        architectures=["MistralForCausalLM"],
    )
    mistral = root / "mistral_folder"
    _seeded(lambda: transformers.MistralForCausalLM(mistral_config)).save_pretrained(mistral)
    bert = root / "bert_folder"
    bert_config = transformers.BertConfig(
        **ARCHITECTURES["bert_tiny"].config, architectures=["BertForMaskedLM"]
    )
    _seeded(lambda: transformers.BertForMaskedLM(bert_config)).save_pretrained(bert)
    gpt2 = ("--into", "gpt2_tiny")
    h = "transformer.h.{0,1}"
    return {
        "hf_folder": Entry(
            (str(hf),),
            DOES_NOT,
            "fixed",
            ("tied_weights",),
            "all 29 tensors load",
            groups=("lm_head.weight",),
        ),
        "hf_index_alone": Entry(
            (str(hf / "model.safetensors.index.json"), "--into", str(hf / "config.json")),
            DOES_NOT,
            "fixed",
            ("tied_weights",),
        ),
        "hf_bin_shards": Entry((str(bins),), LOADS, "loads", headline="all 29 tensors"),
        "missing_shard": Entry(
            (str(missing),),
            DOES_NOT,
            "fails",
            ("missing_shard", "tied_weights"),
            f"the index names {shards[-1].name}, which is not here",
        ),
        "truncated_shard": Entry((str(truncated),), BAD_INPUT, refused=f"{cut.name}: "),
        "backbone": Entry(
            (str(root / "backbone.safetensors"), *gpt2),
            DOES_NOT,
            "fixed",
            ("backbone", "tied_weights"),
            "backbone for the model's transformer. submodule",
        ),
        "other_width": Entry(
            (str(root / "narrow.pt"), *gpt2),
            DOES_NOT,
            "fails",
            ("other_width",),
            "loads 0 of 29 tensors",
            groups=(f"{h}.attn.c_attn.weight",),
            explains="32 in the file where the model has 64",
        ),
        "deeper": Entry(
            (str(root / "deeper.pt"), *gpt2),
            DOES_NOT,
            "fixed",
            ("unexpected",),
            groups=("transformer.h.2.{ln_1,ln_2}.{weight,bias}",),
        ),
        "shallower": Entry(
            (str(root / "shallow.pt"), *gpt2), DOES_NOT, "partial", ("missing",), "loads 17 of 29 tensors"
        ),
        "new_head": Entry(
            (str(root / "head5.pt"), "--into", "resnet_tiny"),
            DOES_NOT,
            "partial",
            ("size_mismatch",),
            groups=("classifier.1.weight",),
        ),
        "llama_config": Entry(
            (str(llama / "model.safetensors"), "--into", str(llama / "config.json")),
            DOES_NOT,
            "fixed",
            ("tied_weights", "non_persistent_absent"),
        ),
        "mistral_folder": Entry((str(mistral),), LOADS, "loads", ("non_persistent_absent",)),
        "bert_folder": Entry((str(bert),), DOES_NOT, "fixed", ("tied_weights", "non_persistent_absent")),
    }


def _foreign(root: Path) -> dict[str, Entry]:
    bert = transformers.BertConfig(**ARCHITECTURES["bert_tiny"].config)
    torch.save(_seeded(lambda: transformers.BertForMaskedLM(bert)).state_dict(), root / "bert.pt")
    adapter = root / "lora_adapter"
    adapter.mkdir()
    lora = {}
    for i in range(2):
        base = f"base_model.model.transformer.h.{i}.attn.c_attn"
        lora[f"{base}.lora_A.weight"] = torch.zeros(8, 64)
        lora[f"{base}.lora_B.weight"] = torch.zeros(192, 8)
    save_file(lora, adapter / "adapter_model.safetensors")
    (adapter / "adapter_config.json").write_text(
        json.dumps(
            {"peft_type": "LORA", "base_model_name_or_path": "gpt2", "r": 8, "target_modules": ["c_attn"]}
        )
    )
    import torch.distributed.checkpoint as dcp

    dcp_folder = root / "dcp_folder"
    dcp.save(dict(ref("testmodel").state_dict()), checkpoint_id=str(dcp_folder))
    return {
        "other_architecture": Entry(
            (str(root / "bert.pt"), "--into", "gpt2_tiny"),
            DOES_NOT,
            "fails",
            ("other_architecture",),
            "another architecture (its keys are bert's)",
        ),
        "lora": Entry(
            (str(adapter), "--into", "gpt2_tiny"),
            DOES_NOT,
            "fails",
            ("adapter",),
            "PEFT LoRA adapter for base_model.model.* (2 of its 2 target modules",
        ),
        "dcp": Entry((str(dcp_folder), "--into", "testmodel"), LOADS, "loads"),
        "distcp_alone": Entry(
            (str(next(dcp_folder.glob("*.distcp"))),), BAD_INPUT, refused="torch.distributed.checkpoint (DCP)"
        ),
    }


def _not_checkpoints(root: Path) -> dict[str, Entry]:
    whole = root / "whole.pt"
    torch.save(ref("testmodel").state_dict(), whole)
    (root / "truncated.pt").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (root / "empty.pt").write_bytes(b"")
    (root / "lfs.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 548105171\n"
    )
    (root / "html.bin").write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n")
    (root / "model.gguf").write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    return {
        "truncated": Entry((str(root / "truncated.pt"),), BAD_INPUT, refused="not a readable zip"),
        "empty": Entry((str(root / "empty.pt"),), BAD_INPUT, refused="the file is empty"),
        "lfs_pointer": Entry(
            (str(root / "lfs.safetensors"),),
            BAD_INPUT,
            refused="a Git LFS pointer, not the file: a small text that stands for a file of 548105171 bytes",
        ),
        "html": Entry((str(root / "html.bin"),), BAD_INPUT, refused="an HTML page, not a checkpoint"),
        "gguf": Entry(
            (str(root / "model.gguf"),), BAD_INPUT, refused="a GGUF file (llama.cpp's format, version 3)"
        ),
    }
