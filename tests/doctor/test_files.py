"""What a set of files is, told by their content: a model folder's files, an index that brings its
shards, a config.json under any name, and what is none of these, left out and named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.doctor.files import classify, gather
from app.doctor.report import CheckpointError
from tests.support.checkpoints import LIMITS


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    save_file({"a": torch.ones(2)}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"b": torch.ones(2)}, tmp_path / "model-00002-of-00002.safetensors")
    index = {
        "metadata": {"total_size": 16},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "settings.json").write_text(
        json.dumps({"model_type": "gpt2", "n_layer": 1})
    )  # a config, by content
    (tmp_path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {}}))
    (tmp_path / "README.md").write_text("# a model\n")
    (tmp_path / "sub").mkdir()
    return tmp_path


def test_a_folder_is_its_files_and_each_is_told_by_content(folder: Path) -> None:
    paths = gather([folder])
    assert paths == sorted(p for p in folder.iterdir() if p.is_file())
    files = classify(paths, [p.name for p in paths], LIMITS)
    assert [n for _, n in files.weights] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert files.index is not None and files.index[1] == "model.safetensors.index.json"
    assert files.config is not None and files.config[1] == "settings.json"
    assert sorted(files.ignored) == ["README.md", "tokenizer.json"]


def test_an_index_alone_brings_its_shards_and_a_list_of_files_is_kept(folder: Path) -> None:
    index = folder / "model.safetensors.index.json"
    assert gather([index]) == [index, *sorted(folder.glob("model-*.safetensors"))]
    one = folder / "model-00001-of-00002.safetensors"
    assert gather([one, index]) == [one, index]  # the second shard left out on purpose stays out


def test_files_with_no_checkpoint_say_what_the_first_is(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"")
    (tmp_path / "b.txt").write_text("hello")
    paths = [tmp_path / "a.txt", tmp_path / "b.txt"]
    with pytest.raises(CheckpointError, match=r"no checkpoint among these files; a\.txt: the file is empty"):
        classify(paths, ["a.txt", "b.txt"], LIMITS)
