"""The whole script's loading lines: run here, they give the state_dict the doctor examined."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from app.doctor.script import Source, loading


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
