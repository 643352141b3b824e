"""The whole script's loading lines: run here, they give the state_dict the doctor examined."""

from __future__ import annotations

import argparse
import collections
import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
import transformers
from safetensors.torch import save_file

from app.architectures.catalogue import ARCHITECTURES
from app.doctor.script import Source, loading, script
from app.doctor.targets import read_config, target_module
from app.lab.spec import LabSpec
from tests.support.architectures import direct
from tests.support.checkpoints import ref, spec
from tests.support.scripts import ran


def loaded(source: Source) -> dict:
    imports, lines = loading(source)
    scope: dict = {}
    exec("\n".join(["import torch", *imports, *lines]), scope)
    return scope["state"]


def test_each_format_and_place_is_read_as_torch_reads_it(tmp_path: Path) -> None:
    state = {"a.weight": torch.randn(2, 3), "b": torch.arange(4)}
    save_file(state, tmp_path / "m.safetensors")
    assert loaded(Source((str(tmp_path / "m.safetensors"),), "safetensors")).keys() == state.keys()
    torch.save({"opt": {"state": {0: state}}}, tmp_path / "c.pt")
    got = loaded(Source((str(tmp_path / "c.pt"),), "torch_zip", ("opt", "state", 0)))  # an int key
    assert all(torch.equal(got[k], v) for k, v in state.items())
    torch.save(state, tmp_path / "renamed.safetensors")  # torch would read the name as safetensors
    assert loaded(Source((str(tmp_path / "renamed.safetensors"),), "torch_zip")).keys() == state.keys()
    save_file({"a.weight": state["a.weight"]}, tmp_path / "1.safetensors")
    save_file({"b": state["b"]}, tmp_path / "2.safetensors")
    shards = (str(tmp_path / "1.safetensors"), str(tmp_path / "2.safetensors"))
    assert loaded(Source(shards, "safetensors")).keys() == state.keys()


def test_the_globals_a_file_needed_are_allowed_in_the_script(tmp_path: Path) -> None:
    torch.save({"model": {"w": torch.ones(1)}, "args": argparse.Namespace(lr=1)}, tmp_path / "c.pt")
    source = Source((str(tmp_path / "c.pt"),), "torch_zip", ("model",), ("argparse.Namespace",))
    assert list(loaded(source)) == ["w"]


class Settings(dict):
    """A dict subclass a training script saved its state in (read back as an OrderedDict)."""


def test_a_dcp_folder_is_converted_and_read_back(tmp_path: Path) -> None:
    state = {"model": {"w": torch.randn(2, 2)}, "step": 3}
    with warnings.catch_warnings():  # one process saves it all
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(state, checkpoint_id=str(tmp_path / "ckpt"))
    got = loaded(Source((str(tmp_path / "ckpt"),), "torch_dcp", ("model",)))
    assert list(got) == ["w"] and torch.equal(got["w"], state["model"]["w"])


def test_torch_shards_are_merged_in_order(tmp_path: Path) -> None:
    torch.save({"a": torch.zeros(1), "b": torch.zeros(1)}, tmp_path / "1.pt")
    torch.save({"b": torch.ones(1), "c": torch.ones(1)}, tmp_path / "2.pt")  # a later shard wins
    got = loaded(Source((str(tmp_path / "1.pt"), str(tmp_path / "2.pt")), "torch_zip"))
    assert list(got) == ["a", "b", "c"] and got["b"].item() == 1.0


def test_shards_named_in_any_script_and_needing_globals_load_whole(tmp_path: Path) -> None:
    """The loop over the shards inside the allowance's block, and names kept as written (模型)."""
    names = [str(tmp_path / "模型-1.pt"), str(tmp_path / "模型-2.pt")]
    torch.save({"a": torch.zeros(1), "args": argparse.Namespace(lr=1)}, names[0])
    torch.save({"b": torch.ones(1)}, names[1])
    source = Source(tuple(names), "torch_zip", (), ("argparse.Namespace",))
    got = loaded(source)
    assert list(got) == ["a", "args", "b"] and got["b"].item() == 1.0
    assert f"for shard in {json.dumps(names, ensure_ascii=False)}:" in "\n".join(loading(source)[1])
    for name in names:
        save_file({Path(name).stem: torch.ones(1)}, name.replace(".pt", ".safetensors"))
    shards = tuple(n.replace(".pt", ".safetensors") for n in names)
    assert list(loaded(Source(shards, "safetensors"))) == ["模型-1", "模型-2"]
    assert "模型-1.safetensors" in "\n".join(loading(Source(shards, "safetensors"))[1])


def test_a_dict_subclass_is_read_as_an_ordered_dict_beside_the_globals_allowed(tmp_path: Path) -> None:
    saved = {"model": Settings(w=torch.ones(1)), "args": argparse.Namespace(lr=1)}
    torch.save(saved, tmp_path / "c.pt")
    with pytest.raises(pickle.UnpicklingError):  # what the script's allowance is for
        torch.load(tmp_path / "c.pt", weights_only=True)
    name = f"{Settings.__module__}.Settings"
    got = loaded(Source((str(tmp_path / "c.pt"),), "torch_zip", ("model",), ("argparse.Namespace",), (name,)))
    assert type(got) is collections.OrderedDict and list(got) == ["w"]
    imports, lines = loading(Source(("c.pt",), "torch_zip", (), (), (name,)))
    assert imports == ["import collections"]
    assert lines[0] == f'with torch.serialization.safe_globals([(collections.OrderedDict, "{name}")]):'


def test_a_files_name_stays_inside_the_scripts_comment_and_its_literals(tmp_path: Path) -> None:
    name = str(tmp_path / 'a "b"\nprint("injected")\r.pt')
    torch.save(ref("testmodel").state_dict(), name)
    text = script(Source((name,), "torch_zip"), spec("testmodel"), [], "loads", "TestModel")
    first, second = text.split("\n")[:2]
    assert first == "# mre: " + name.replace("\n", " ").replace("\r", " ") + " into TestModel"
    assert second == "# predicted: loads"
    assert ran(text) == "<All keys matched successfully>\n"


def test_shards_are_named_by_the_first_and_a_count() -> None:
    text = script(Source(("1.pt", "2.pt", "3.pt"), "torch_zip"), spec("testmodel"), [], "loads", "TestModel")
    assert text.startswith("# mre: 1.pt and 2 more shards into TestModel\n")


def test_a_presets_script_applies_the_fixes_in_order_before_the_strict_load(tmp_path: Path) -> None:
    state = {f"model.{k}": v for k, v in ref("testmodel").state_dict().items()}
    torch.save(state, tmp_path / "m.pt")
    fixes = [
        'state = {k.removeprefix("model."): v for k, v in state.items()}',
        "print(sorted(state)[:1])",
    ]
    text = script(Source((str(tmp_path / "m.pt"),), "torch_zip"), spec("testmodel"), fixes, "h", "TestModel")
    assert (
        "# the fixes, in order\n"
        + "\n".join(fixes)
        + "\n\nprint(model.load_state_dict(state, strict=True))\n"
        in text
    )
    assert ran(text) == f"{sorted(ref('testmodel').state_dict())[:1]}\n<All keys matched successfully>\n"
    assert "the fixes" not in script(Source(("m.pt",), "torch_zip"), spec("testmodel"), [], "h", "TestModel")


def test_a_custom_members_helper_is_in_the_script(tmp_path: Path) -> None:
    target = LabSpec(preset="custom", device="cpu")
    torch.save(target_module(target).state_dict(), tmp_path / "m.pt")
    text = script(Source((str(tmp_path / "m.pt"),), "torch_zip"), target, [], "h", "Custom")
    assert ran(text) == "<All keys matched successfully>\n"


@pytest.mark.parametrize(("arch_id", "assign"), [("gpt2_tiny", ""), ("gpt2", ", assign=True")])
def test_an_architectures_script_builds_it_where_the_doctor_did(
    tmp_path: Path, arch_id: str, assign: str
) -> None:
    state = direct(arch_id, "meta").state_dict()
    torch.save({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in state.items()}, tmp_path / "m.pt")
    text = script(Source((str(tmp_path / "m.pt"),), "torch_zip"), arch_id, [], "h", arch_id)
    assert text.endswith(f"print(model.load_state_dict(state, strict=True{assign}))\n")
    assert text.count("import torch\n") == 1 and ('torch.device("meta")' in text) == bool(assign)
    if not assign:  # a full size is built on meta and assigned 500 MB of zeros: the tiny one is run
        assert ran(text) == "<All keys matched successfully>\n"


@pytest.mark.parametrize(
    ("names", "built"), [(["LlamaForCausalLM"], "LlamaForCausalLM"), (None, "AutoModel")]
)
def test_a_configs_script_reads_the_config_and_assigns_the_files_tensors(
    tmp_path: Path, names: list[str] | None, built: str
) -> None:
    config = transformers.LlamaConfig(**ARCHITECTURES["llama_tiny"].config, architectures=names)
    config.save_pretrained(tmp_path)
    target = read_config((tmp_path / "config.json").read_bytes(), str(tmp_path / "config.json"))
    module = target_module(target)
    torch.save(
        {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in module.state_dict().items()}, tmp_path / "m.pt"
    )
    text = script(Source((str(tmp_path / "m.pt"),), "torch_zip"), target, [], "h", "x")
    assert f"from transformers import AutoConfig, {built}\n" in text
    assert ran(text) == "<All keys matched successfully>\n"
