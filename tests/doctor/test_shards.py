"""Sharded checkpoints as transformers writes them (``save_pretrained(max_shard_size=...)``): the
shards and index in one request, one report, every disagreement between them named; and the
doctor on a real GPT-2 (the tied lm_head that save_pretrained leaves out)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import transformers
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from app import cli
from app.doctor.diagnosis import diagnose
from app.doctor.examine import inspect_files
from app.doctor.report import CheckpointError, CheckpointTooLarge
from app.doctor.shards import MAX_SHARDS
from app.main import create_app
from app.settings import Settings
from tests.support.checkpoints import LIMITS
from tests.support.faces import FACES, Faces
from tests.support.html import parse

INDEX = "model.safetensors.index.json"


def config() -> object:
    return transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16, bos_token_id=0, eos_token_id=0
    )


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config()).save_pretrained(folder, max_shard_size="40KB")
    return folder


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    uploads = tmp_path_factory.mktemp("uploads")
    with TestClient(create_app(Settings(checkpoint_tmp_dir=str(uploads)))) as client:
        yield client
    assert list(uploads.iterdir()) == []


def parts(files: list[Path]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("file", (f.name, f.read_bytes())) for f in files]


def shard_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("model-*.safetensors"))


def reported(api: TestClient, files: list[Path], where: str) -> dict:
    """The report on ``files`` through the API (read in its isolated child), or read in this process
    (where mutation testing sees which test reads which line of the shards' reader)."""
    if where == "in_process":
        return inspect_files(files, [f.name for f in files], LIMITS).model_dump(mode="json")
    answer = api.post("/api/checkpoints", files=parts(files))
    assert answer.status_code == 200, answer.text
    return answer.json()


WHERE = ["api", "in_process"]


@pytest.mark.parametrize("where", WHERE)
def test_the_shards_and_index_are_one_report(api: TestClient, shards: Path, where: str) -> None:
    files = [*shard_files(shards), shards / INDEX]
    assert len(files) > 2  # really sharded
    report = reported(api, files, where)
    index = json.loads((shards / INDEX).read_text())
    held = {f.name: load_file(f) for f in shard_files(shards)}
    assert report["shards"]["problems"] == []
    assert {t["name"] for t in report["tensors"]} == set(index["weight_map"])
    assert report["shards"]["total_size"] == index["metadata"]["total_size"]
    assert report["shards"]["tensor_bytes"] == sum(
        t.numel() * t.element_size() for state in held.values() for t in state.values()
    )
    assert [(f["name"], f["tensors"]) for f in report["shards"]["files"]] == [
        (n, len(s)) for n, s in held.items()
    ]
    page = parse(api.post("/checkpoints", files=parts(files)).text)
    assert len(page.find("ul", id="shard-files").find_all("li")) == len(held)


@pytest.mark.parametrize("where", WHERE)
def test_each_disagreement_is_named(api: TestClient, shards: Path, tmp_path: Path, where: str) -> None:
    """A shard left out, a key the index invents and one it forgets, a key in two shards, a wrong
    total_size: each expected from the files as safetensors and json read them."""
    files = shard_files(shards)
    held = {f.name: load_file(f) for f in files}
    index = json.loads((shards / INDEX).read_text())
    left_out, first = files[-1].name, files[0].name
    forgotten = next(iter(held[files[1].name]))
    twice = next(iter(held[first]))
    index["weight_map"]["ghost.weight"] = first
    del index["weight_map"][forgotten]
    index["metadata"]["total_size"] += 1
    (tmp_path / INDEX).write_text(json.dumps(index))
    save_file({twice: held[first][twice]}, tmp_path / "extra.safetensors")
    sent = [*files[:-1], tmp_path / "extra.safetensors", tmp_path / INDEX]
    problems = {(p["kind"], p["key"]) for p in reported(api, sent, where)["shards"]["problems"]}
    present = {k: n for n in [f.name for f in files[:-1]] for k in held[n]}
    expected = {("shard_not_uploaded", left_out), ("missing_from_shards", "ghost.weight"), ("total_size", "")}
    expected |= {("missing_from_shards", k) for k, n in index["weight_map"].items() if n == left_out}
    expected |= {("not_in_index", forgotten), ("in_two_shards", twice)}
    assert problems == expected
    assert all(k in present for kind, k in problems if kind in ("not_in_index", "in_two_shards"))


@pytest.fixture(params=FACES)
def face(request: pytest.FixtureRequest, tmp_path: Path) -> Faces:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    return Faces(request.param, uploads)


def test_in_this_process_the_shards_are_read_under_the_same_caps(shards: Path, tmp_path: Path) -> None:
    """The boundaries the faces hold, in this process, where mutation testing sees them."""

    def read(files: list[Path], **limits: int) -> object:
        return inspect_files(files, [f.name for f in files], replace(LIMITS, **limits))

    files = shard_files(shards)
    total = sum(f.stat().st_size for f in files)
    assert read(files, max_bytes=total).shards.files
    with pytest.raises(CheckpointTooLarge, match=f"^{total} bytes in all, over the cap of {total - 1} bytes"):
        read(files, max_bytes=total - 1)
    three = many_shards(tmp_path / "three", 3)
    assert len(read(three[:-1], max_entries=3).tensors) == 3
    with pytest.raises(CheckpointTooLarge, match=r"^more than 2 tensors in the shards"):
        read(three[:-1], max_entries=2)
    with pytest.raises(CheckpointTooLarge, match=f"^{INDEX}: 3 keys; at most 2"):
        read(three, max_entries=2)
    most = many_shards(tmp_path / "most", MAX_SHARDS + 1)  # 257 shards and their index
    with pytest.raises(CheckpointTooLarge, match=f"^{MAX_SHARDS + 1} shards; .* at most {MAX_SHARDS}"):
        read(most)
    kept = [*most[: MAX_SHARDS - 1], most[MAX_SHARDS]]  # 256 of them: the last shard left out
    assert len(read(kept).shards.files) == MAX_SHARDS


def test_the_byte_cap_is_on_the_shards_together(face: Faces, shards: Path) -> None:
    """Each shard far under the cap, all together at it: read; one byte less: refused. mre has no
    upload layer in front to count the bytes for it: the shards' reader must add them up."""
    files = shard_files(shards)
    total = sum(f.stat().st_size for f in files)
    assert max(f.stat().st_size for f in files) < total // 2
    assert face.inspect(files, checkpoint_max_bytes=total).accepted
    assert face.inspect(files, checkpoint_max_bytes=total - 1).refused(f"over the cap of {total - 1} bytes")


def test_the_cap_of_tensors_is_on_the_shards_together(face: Faces, tmp_path: Path) -> None:
    files = many_shards(tmp_path / "three", 3)[:-1]  # one tensor each, no index
    assert face.inspect(files, checkpoint_max_entries=3).accepted
    assert face.inspect(files, checkpoint_max_entries=2).refused("more than 2 tensors in the shards")


def test_the_cap_of_keys_holds_for_the_index(face: Faces, tmp_path: Path) -> None:
    files = many_shards(tmp_path / "three", 3)
    assert face.inspect(files, checkpoint_max_entries=3).accepted
    assert face.inspect(files, checkpoint_max_entries=2).refused(f"{INDEX}: 3 keys; at most 2")


def test_an_index_of_the_header_cap_is_read_and_one_byte_more_refused(face: Faces, tmp_path: Path) -> None:
    files = many_shards(tmp_path / "three", 3)
    size = files[-1].stat().st_size  # the index, larger than each shard's own header
    assert face.inspect(files, checkpoint_header_max_bytes=size).accepted
    refused = face.inspect(files, checkpoint_header_max_bytes=size - 1)
    assert refused.refused(f"an index of {size} bytes, over the cap of {size - 1}")


def test_will_this_gpt2_checkpoint_load_into_gpt2(shards: Path) -> None:
    """The doctor on transformers' own GPT-2: save_pretrained keeps one name of the tied embedding,
    so a strict load_state_dict misses lm_head.weight; the fix is the alias, and torch agrees."""
    state: dict = {}
    for f in shard_files(shards):
        state |= load_file(f)
    model = lambda: transformers.GPT2LMHeadModel(config())  # noqa: E731
    try:
        model().load_state_dict(state)
        told = "ok"
    except RuntimeError as exc:
        told = f"RuntimeError: {exc}"
    diagnosis = diagnose(state, model, told)
    tied = next(c for c in diagnosis.causes if c.id == "tied_weights")
    assert tied.keys == ["lm_head.weight"] and "lm_head.weight" not in state
    assert tied.fix == 'state.update({"lm_head.weight": state["transformer.wte.weight"]})'
    assert all(c.severity != "error" for c in diagnosis.causes if c is not tied)
    exec(tied.fix, {"state": state})
    fixed = model()
    fixed.load_state_dict(state)  # strict: torch takes it now
    assert diagnosis.after_fixes == tied.after_fix == "ok"
    assert torch.equal(fixed.lm_head.weight, state["transformer.wte.weight"])


def test_a_gpt2_checkpoint_is_loaded_into_the_gpt2_architecture(api: TestClient, tmp_path: Path) -> None:
    """ "Will this GPT-2 checkpoint load into GPT-2?": the architecture preset, by id, through the API
    and mre, against transformers' own model built here from the same config."""
    from app import cli
    from app.architectures.catalogue import ARCHITECTURES

    config = transformers.GPT2Config(**ARCHITECTURES["gpt2_tiny"].config)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    file = tmp_path / "model.safetensors"
    state = load_file(file)
    try:
        transformers.GPT2LMHeadModel(config).load_state_dict(state)
        torch_says = "ok"
    except RuntimeError as exc:
        torch_says = f"RuntimeError: {exc}"
    assert torch_says != "ok"  # save_pretrained kept one name of the tied embedding

    answer = api.post("/api/checkpoints", params={"architecture": "gpt2_tiny"}, files=parts([file]))
    assert answer.status_code == 200, answer.text
    load = answer.json()["load"]
    assert (load["architecture"], load["spec"], load["strict"]) == ("gpt2_tiny", None, torch_says)
    assert load["missing_keys"] == ["lm_head.weight"]
    tied = next(c for c in load["diagnosis"]["causes"] if c["id"] == "tied_weights")
    exec(tied["fix"], {"state": state})
    transformers.GPT2LMHeadModel(config).load_state_dict(state)  # strict: torch takes it after the fix
    assert load["diagnosis"]["after_fixes"] == "ok"

    html = api.post("/checkpoints", data={"preset": "gpt2_tiny"}, files=parts([file])).text
    assert '<option value="gpt2_tiny" selected>' in html
    page = parse(html)
    assert "gpt2_tiny" in next(h.text for h in page.find_all("h3") if "Loaded into" in h.text)
    assert cli.main(["inspect", str(file), "--into", "gpt2_tiny"]) == cli.DOES_NOT
    assert cli.main(["inspect", str(file), "--into", "gpt2_tiny", "--style", "a=buffer"]) == cli.BAD_INPUT
    both = api.post("/api/checkpoints?architecture=gpt2_tiny&preset=testmodel", files=parts([file]))
    unknown = api.post("/api/checkpoints?architecture=gpt5", files=parts([file]))
    assert (both.status_code, unknown.status_code) == (422, 404) and "gpt2_tiny" in unknown.json()["detail"]
    off = TestClient(create_app(Settings(architectures=False)))  # refused before any upload or inspector
    refused = off.post("/api/checkpoints?architecture=gpt2_tiny", files=parts([file]))
    assert refused.status_code == 404 and "MRE_ARCHITECTURES=false" in refused.json()["detail"]
    assert 'value="gpt2_tiny"' not in off.get("/checkpoints").text


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("index_not_json", "not a JSON index"),
        ("index_without_weight_map", 'an index is an object with "weight_map"'),
        ("two_indexes", "two index files"),
        ("same_name_twice", "two files are called"),
        ("index_alone", "an index and no shard"),
        ("mixed_formats", "the shards mix formats"),
        ("bad_total_size", "metadata.total_size must be a non-negative integer"),
    ],
)
def test_a_malformed_sharded_checkpoint_is_a_422_saying_what(
    api: TestClient, shards: Path, what: str, message: str
) -> None:
    files = shard_files(shards)
    index = (shards / INDEX).read_bytes()
    real = [(f.name, f.read_bytes()) for f in files]
    torch_shard = ("pytorch_model-00009.bin", saved({"extra.weight": torch.ones(2)}))
    sent = {
        "index_not_json": [*real, (INDEX, b"{not json")],
        "index_without_weight_map": [*real, (INDEX, b'{"metadata": {}}')],
        "two_indexes": [*real, (INDEX, index), ("other.index.json", index)],
        "same_name_twice": [real[0], real[0], (INDEX, index)],
        "index_alone": [(INDEX, index)],
        "mixed_formats": [*real, torch_shard, (INDEX, index)],
        "bad_total_size": [*real, (INDEX, b'{"metadata": {"total_size": "12"}, "weight_map": {}}')],
    }[what]
    answer = api.post("/api/checkpoints", files=[("file", part) for part in sent])
    assert answer.status_code == 422 and message in answer.json()["detail"], answer.text


def saved(obj: object) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_mre_reads_the_shards_as_one_checkpoint(shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app import cli

    files = [*shard_files(shards), shards / INDEX]
    assert cli.main(["inspect", *map(str, files), "--json"]) == cli.LOADS
    report = json.loads(capsys.readouterr().out)
    index = json.loads((shards / INDEX).read_text())
    assert report["shards"]["problems"] == [] and {t["name"] for t in report["tensors"]} == set(
        index["weight_map"]
    )
    assert cli.main(["inspect", *map(str, files[1:])]) == cli.DOES_NOT  # the first shard left out
    assert "shard_not_uploaded" in capsys.readouterr().out  # and the table names what is missing


def many_shards(folder: Path, count: int) -> list[Path]:
    """``count`` one-tensor safetensors shards and their index, as save_pretrained names them."""
    folder.mkdir(exist_ok=True)
    names = [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
    for i, name in enumerate(names):
        save_file({f"layer{i}.weight": torch.zeros(1)}, folder / name)
    index = {
        "metadata": {"total_size": 4 * count},
        "weight_map": {f"layer{i}.weight": n for i, n in enumerate(names)},
    }
    (folder / INDEX).write_text(json.dumps(index))
    return [*(folder / n for n in names), folder / INDEX]


@pytest.mark.parametrize(("count", "status"), [(MAX_SHARDS, 200), (MAX_SHARDS + 1, 413)])
def test_the_shard_cap_counts_shards_not_their_index(
    api: TestClient, tmp_path: Path, count: int, status: int
) -> None:
    files = many_shards(tmp_path / "many", count)
    answer = api.post("/api/checkpoints", files=parts(files))
    assert answer.status_code == status, answer.text[:300]
    if status == 200:
        assert (
            len(answer.json()["shards"]["files"]) == MAX_SHARDS and answer.json()["shards"]["problems"] == []
        )
    else:
        assert f"{count} shards" in answer.json()["detail"]
    # mre has no upload layer in front: the same cap holds there.
    code = cli.main(["inspect", *map(str, files), "--json"])
    assert code == (0 if status == 200 else 2)


@pytest.mark.parametrize("where", WHERE)
def test_a_bin_sharded_checkpoint_with_tied_weights_agrees_with_its_index(
    api: TestClient, tmp_path: Path, where: str
) -> None:
    """huggingface_hub's .bin shards keep both names of a tied weight in one shard, and its index
    counts their storage once: no false alarm."""
    from huggingface_hub import save_torch_state_dict

    torch.manual_seed(0)
    state = transformers.GPT2LMHeadModel(config()).state_dict()
    save_torch_state_dict(state, tmp_path, safe_serialization=False, max_shard_size="40KB")
    files = sorted(tmp_path.glob("pytorch_model*"))
    index = json.loads((tmp_path / "pytorch_model.bin.index.json").read_text())
    per_key = sum(t.numel() * t.element_size() for t in state.values())
    assert index["metadata"]["total_size"] < per_key  # the tie counted once by the saver
    report = reported(api, files, where)
    assert report["shards"]["problems"] == [] and report["shards"]["tensor_bytes"] == per_key


def test_a_shard_not_here_is_named_as_the_cause_not_given_a_fix(api: TestClient, shards: Path) -> None:
    files = [*shard_files(shards)[:-1], shards / INDEX, shards / "config.json"]  # loaded into its config
    left_out = shard_files(shards)[-1].name
    answer = api.post("/api/checkpoints", files=parts(files))
    diagnosis = answer.json()["load"]["diagnosis"]
    cause = diagnosis["causes"][0]
    index = json.loads((shards / INDEX).read_text())["weight_map"]
    assert cause["id"] == "missing_shard" and cause["fix"] == ""
    assert set(cause["keys"]) == {k for k, f in index.items() if f == left_out}
    assert (
        diagnosis["verdict"] == "fails"
        and f"the index names {left_out}, which is not here" in diagnosis["headline"]["en"]
    )


def _written(folder: Path, sent: list[tuple[str, bytes]]) -> tuple[list[Path], list[str]]:
    """Files as an upload keeps them: each in a folder of its own, under the name it was sent as."""
    paths = []
    for i, (_, data) in enumerate(sent):
        (folder / str(i)).mkdir(parents=True)
        (folder / str(i) / "f").write_bytes(data)
        paths.append(folder / str(i) / "f")
    return paths, [name for name, _ in sent]


def test_a_malformed_sharded_checkpoint_is_refused_in_so_many_words_in_this_process(
    shards: Path, tmp_path: Path
) -> None:
    files = shard_files(shards)
    index = (shards / INDEX).read_bytes()
    real = [(f.name, f.read_bytes()) for f in files]
    first = files[0].name
    with pytest.raises(ValueError) as parsers:
        json.loads("{not json")
    flat = [
        (first, saved({"w": torch.ones(1), "nested": {"x": torch.ones(1)}})),
        ("b.bin", saved({"v": torch.ones(1)})),
    ]
    cases = {
        "index_not_json": (
            [*real, (INDEX, b"{not json")],
            f"{INDEX}: not a JSON index or config: {parsers.value}",
        ),
        "index_without_weight_map": (
            [*real, (INDEX, b'{"metadata": {}}')],
            f'{INDEX}: an index is an object with "weight_map": {{key: shard file name}}',
        ),
        "weight_map_of_numbers": (
            [*real, (INDEX, b'{"weight_map": {"a": 1}}')],
            f'{INDEX}: an index is an object with "weight_map": {{key: shard file name}}',
        ),
        "two_indexes": (
            [*real, (INDEX, index), ("other.index.json", index)],
            f"two index files: '{INDEX}' and 'other.index.json'; send one checkpoint at a time",
        ),
        "same_name_twice": (
            [real[0], real[0], (INDEX, index)],
            f"two files are called '{first}': the index names shards by file name",
        ),
        "same_name_in_two_folders": (
            [(f"a/{first}", real[0][1]), (f"b/{first}", real[0][1])],
            f"two files are called '{first}': the index names shards by file name",
        ),
        "index_alone": ([(INDEX, index)], "an index and no shard: send the shard files with it"),
        "mixed_formats": (
            [*real, ("pytorch_model-00009.bin", saved({"extra.weight": torch.ones(2)})), (INDEX, index)],
            "the shards mix formats (safetensors, torch_zip); a checkpoint uses one",
        ),
        "bad_total_size": (
            [*real, (INDEX, b'{"metadata": {"total_size": "12"}, "weight_map": {}}')],
            f"{INDEX}: metadata.total_size must be a non-negative integer, not '12'",
        ),
        "negative_total_size": (
            [*real, (INDEX, b'{"metadata": {"total_size": -1}, "weight_map": {}}')],
            f"{INDEX}: metadata.total_size must be a non-negative integer, not -1",
        ),
        "shard_not_flat": (
            flat,
            f"{first}: a shard is one flat dict of tensors; this file holds other things",
        ),
        "shard_unreadable": (
            [*real[:-1], (files[-1].name, (100).to_bytes(8, "little") + b"{")],
            f"{files[-1].name}: truncated: the header says 100 bytes, the file has 1 after it",
        ),
        "nothing_to_read": (
            [("a.txt", b"hello"), ("b.txt", b"")],
            "no checkpoint among these files; a.txt: not a safetensors or torch checkpoint",
        ),
    }
    for what, (sent, message) in cases.items():
        paths, names = _written(tmp_path / what, sent)
        with pytest.raises(CheckpointError) as refused:
            inspect_files(paths, names, LIMITS)
        assert str(refused.value).startswith(message), (what, str(refused.value))
    # a shard's own refusal keeps its kind (a cap is 413) and gains the shard's name
    paths, names = _written(tmp_path / "over", [*real[:-1], (files[-1].name, b"\x01" * 8 + b"{")])
    with pytest.raises(CheckpointTooLarge) as over:
        inspect_files(paths, names, LIMITS)
    assert over.value.status == 413 and str(over.value).startswith(
        f"{files[-1].name}: safetensors header of "
    )


def test_an_index_may_leave_out_its_total_size(shards: Path, tmp_path: Path) -> None:
    files = shard_files(shards)
    index = json.loads((shards / INDEX).read_text())
    for metadata in ({}, None, {"total_size": None}, "not a map"):
        (tmp_path / INDEX).write_text(json.dumps({**index, "metadata": metadata}))
        report = inspect_files([*files, tmp_path / INDEX], [f.name for f in files] + [INDEX], LIMITS)
        assert report.shards is not None and report.shards.total_size is None
        assert report.shards.tensor_bytes == sum(t.bytes for t in report.tensors)


def test_a_key_the_index_puts_in_a_shard_here_that_lacks_it_is_named(shards: Path, tmp_path: Path) -> None:
    files = shard_files(shards)
    index = json.loads((shards / INDEX).read_text())
    index["weight_map"]["ghost.weight"] = files[0].name
    (tmp_path / INDEX).write_text(json.dumps(index))
    report = inspect_files([*files, tmp_path / INDEX], [f.name for f in files] + [INDEX], LIMITS)
    assert [p.model_dump() for p in report.shards.problems] == [  # type: ignore[union-attr]
        {
            "kind": "missing_from_shards",
            "key": "ghost.weight",
            "detail": f"the index says {files[0].name}, which does not hold it",
        }
    ]


def test_a_sharded_checkpoints_bytes_are_its_shards_and_its_index(shards: Path) -> None:
    files = [*shard_files(shards), shards / INDEX]
    report = inspect_files(files, [f.name for f in files], LIMITS)
    assert report.file_bytes == sum(f.stat().st_size for f in files)
    alone = shard_files(shards)  # without the index
    assert inspect_files(alone, [f.name for f in alone], LIMITS).file_bytes == sum(
        f.stat().st_size for f in alone
    )


def test_in_this_process_a_set_is_sized_whole_and_loaded_for_the_fixed_file(shards: Path) -> None:
    """Its size counts every shard and the index; its load keeps the state (for the fixed file), and
    the script opens the shards by the names the user gave them."""
    from app.doctor.load import Kept
    from app.doctor.targets import read_config

    files = [*shard_files(shards), shards / INDEX]
    target = read_config((shards / "config.json").read_bytes(), "config.json")
    kept = Kept()
    report = inspect_files(files, [f"mine/{f.name}" for f in files], LIMITS, target, None, kept)
    assert report.file_bytes == sum(f.stat().st_size for f in files)
    held = {k: v for f in shard_files(shards) for k, v in load_file(f).items()}
    assert report.unique_bytes == sum(t.numel() * t.element_size() for t in held.values()) > 0
    assert set(held) <= set(kept.state) and kept.target is target
    assert all(torch.equal(kept.state[k], v) for k, v in held.items())
    assert report.load is not None
    assert all(f"mine/{f.name}" in report.load.script for f in shard_files(shards))
