"""``mre``, the console script pyproject.toml installs, run as a program on checkpoints the real
libraries wrote: the corpus table (each file's exit status, verdict, headline, causes and patterns,
and its whole script run as printed), the fixed file it writes, its text (never markup, never
wrapped, the same under any hash seed, short) and its JSON (the API's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import transformers
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from app import cli
from app.main import create_app
from app.settings import Settings
from tests.support.checkpoints import Case, ref
from tests.support.corpus import Entry, disagreements, inspected, run, words
from tests.support.scripts import run_scripts

ROOT = Path(__file__).resolve().parents[1]


def mre(*args: object, columns: int = 200, **env: str) -> subprocess.CompletedProcess[str]:
    """The console script as pip writes it: import the entry point's function and exit with it,
    its output piped (as to a file or another program)."""
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["mre"]
    module, _, function = entry.partition(":")
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MRE_")}
    environment |= {"PYTHONPATH": str(ROOT), "COLUMNS": str(columns), **env}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def answers(corpus: dict[str, Entry]) -> dict[str, tuple[int, dict | None, str]]:
    """Every corpus file through `mre inspect --json`: (status, the JSON or None, stderr)."""
    found = {}
    for name, entry in corpus.items():
        found[name] = inspected(entry)
    return found


def test_the_corpus_table(corpus: dict[str, Entry], answers: dict) -> None:
    assert disagreements(corpus, answers) == {}
    assert len(corpus) >= 40


def test_each_whole_script_run_as_printed_gives_the_outcome_predicted(answers: dict) -> None:
    """The script each load prints, run with plain python: a fixed or loading file ends in
    load_state_dict(strict=True) taking it; one no fix helps fails with torch's words, as predicted."""
    loads = {n: r["load"] for n, (_, r, _) in answers.items() if r and r.get("load")}
    assert len(loads) >= 30
    ran = run_scripts([load["script"] for load in loads.values()], preload=("transformers",))
    wrong = {}
    for (name, load), done in zip(loads.items(), ran, strict=True):
        predicted = load["diagnosis"]["after_fixes"]
        if predicted == "ok":
            good = done.returncode == 0 and done.stdout.strip() == "<All keys matched successfully>"
        else:
            good = done.returncode == 1 and predicted in done.stderr
        if not good:
            wrong[name] = (predicted[:200], done.returncode, done.stdout[-300:], done.stderr[-600:])
    assert wrong == {}
    fails = [n for n, load in loads.items() if load["diagnosis"]["verdict"] == "fails"]
    assert {"optimizer", "other_width", "other_architecture", "lora", "missing_shard"} <= set(fails)
    for name in fails:  # no fix is offered that cannot work
        assert loads[name]["diagnosis"]["fixes"] == [] or name == "missing_shard", name


def test_a_fix_that_loads_nothing_is_never_ok(answers: dict) -> None:
    """Another model, an optimizer's state, an adapter: 0 of the module's tensors, said so, exit 1,
    and what the file is named."""
    for name, what in (
        ("optimizer", "optimizer_state"),
        ("other_architecture", "other_architecture"),
        ("lora", "adapter"),
        ("other_width", "other_width"),
        ("backbone", "backbone"),
    ):
        status, report, _ = answers[name]
        diagnosis = report["load"]["diagnosis"]
        assert status == cli.DOES_NOT and diagnosis["file_is"] == what
        module = diagnosis["module_tensors"]
        if what == "backbone":  # a backbone is put where it belongs: everything loads
            assert diagnosis["loaded_after_fixes"] == module == 29
        else:
            assert diagnosis["loaded_after_fixes"] == 0
            assert f"loads 0 of {module} tensors" in diagnosis["headline"]["en"]


def test_a_width_mismatch_is_one_grouped_cause_with_no_fix(answers: dict, corpus: dict[str, Entry]) -> None:
    _, report, _ = answers["other_width"]
    (cause,) = report["load"]["diagnosis"]["causes"]
    state = torch.load(corpus["other_width"].args[0], weights_only=True)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**_tiny("gpt2_tiny"))).state_dict()
    mismatched = [k for k in model if k in state and state[k].shape != model[k].shape]
    assert sorted(cause["keys"]) == sorted(mismatched) and cause["fix"] == ""
    assert sum(g["count"] for g in cause["groups"]) == len(mismatched) < 2 * len(cause["groups"]) * 2
    c_attn = next(g for g in cause["groups"] if g["pattern"] == "transformer.h.{0,1}.attn.c_attn.weight")
    key = "transformer.h.0.attn.c_attn.weight"
    assert (c_attn["checkpoint_shape"], c_attn["module_shape"]) == (
        list(state[key].shape),
        list(model[key].shape),
    )
    assert "n_embd" in cause["explanation"]["en"]  # the config field that holds the model's width


def _tiny(arch_id: str) -> dict:
    from app.architectures.catalogue import ARCHITECTURES

    return ARCHITECTURES[arch_id].config


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    uploads = tmp_path_factory.mktemp("uploads")
    with TestClient(create_app(Settings(checkpoint_tmp_dir=str(uploads)))) as client:
        yield client


def test_a_wrapped_checkpoint_does_not_load_and_the_text_says_why(cases: dict[str, Case]) -> None:
    case = cases["dp_compiled"]
    done = mre("inspect", case.file, "--into", case.preset)
    assert done.returncode == cli.DOES_NOT, done.stderr
    state = torch.load(case.file, weights_only=True)
    assert f"{len(state)} tensors, {sum(t.numel() for t in state.values())} elements" in done.stdout
    lines = done.stdout.splitlines()
    assert 'torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "module.")' in lines
    assert 'torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "_orig_mod.")' in lines
    assert lines[-1] == "print(model.load_state_dict(state, strict=True))"


def test_json_is_the_apis_and_a_loading_file_exits_0(api: TestClient, cases: dict[str, Case]) -> None:
    case = cases["no_pe"]
    styles = [f"--style={k}={v}" for k, v in case.styles.items()]
    status, out, _ = run("inspect", str(case.file), "--into", case.preset, *styles, "--json")
    answer = api.post(
        f"/api/checkpoints?{case.query}", files={"file": (case.file.name, case.file.read_bytes())}
    ).json()
    mine = json.loads(out)
    assert status == cli.LOADS and answer["load"]["strict"] == "ok"
    # the script names the file as each was given it: the path here, the upload's name there
    assert mine["load"].pop("script").replace(str(case.file), case.file.name) == answer["load"].pop("script")
    assert mine == answer


def test_compare_exits_1_when_they_differ_and_0_when_not(cases: dict[str, Case]) -> None:
    a, b = cases["data_parallel"].file, cases["compiled"].file
    status, out, _ = run("inspect", str(a), "--compare", str(b), "--json")
    comparison = json.loads(out)
    assert status == cli.DOES_NOT and not comparison["identical"]
    # each is the other with its wrapper's prefix: identical once it is removed, and said so
    assert (comparison["prefix_a"], comparison["prefix_b"]) == ("module.", "_orig_mod.")
    assert (
        comparison["identical_after_renaming"] and "identical after removing" in comparison["headline"]["en"]
    )
    assert run("inspect", str(a), "--compare", str(a))[0] == cli.LOADS
    status, _, err = run("inspect", str(a), "--compare", str(b), "--into", "testmodel")
    assert status == cli.BAD_INPUT and "--into and --style are for one checkpoint" in words(err)


def test_bad_input_exits_2(cases: dict[str, Case], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    status, _, err = run("inspect", str(garbage))
    assert status == cli.BAD_INPUT and "not a safetensors or torch checkpoint" in err
    assert run("inspect", str(tmp_path / "absent.pt"))[0] == cli.BAD_INPUT
    status, _, err = run("inspect", str(cases["tied"].file), "--into", "no_such_preset")
    from app.architectures.catalogue import ARCHITECTURES
    from app.lab.presets import PRESETS

    told = words(err)
    assert status == cli.BAD_INPUT and "no preset, architecture or config.json of that name" in told
    assert all(p in told for p in PRESETS) and all(a in told for a in ARCHITECTURES)
    with pytest.raises(SystemExit) as usage:
        cli.main(["inspect"])
    assert usage.value.code == cli.BAD_INPUT


def test_messages_are_printed_as_they_are_never_as_markup(corpus: dict[str, Entry], tmp_path: Path) -> None:
    """rich would read "[argparse.Namespace]" as a tag and drop it, and fail on "[/x]"."""
    status, _, err = run("inspect", *corpus["unsafe"].args)
    assert status == cli.BAD_INPUT
    assert "torch.serialization.safe_globals([tests.support.corpus.Unsafe])" in words(err)
    folder = tmp_path / "run a[" / "x] [bold]"  # the path holds "[/x]"
    folder.mkdir(parents=True)
    path = folder / "m.pt"
    torch.save({"[/x]": torch.ones(2), "w[red]": torch.ones(1)}, path)
    done = mre("inspect", path, "--into", "testmodel")
    assert done.returncode == cli.DOES_NOT and "Traceback" not in done.stderr, done.stderr
    assert "[/x]" in done.stdout and "w[red]" in done.stdout and "[/x] [bold]" in str(path)


def test_printed_code_is_never_wrapped_at_80_columns_nor_in_a_file(
    answers: dict, corpus: dict[str, Entry]
) -> None:
    done = mre("inspect", *corpus["compiled_submodule"].args, columns=80)
    lines = done.stdout.splitlines()
    script = answers["compiled_submodule"][1]["load"]["script"]
    assert max(map(len, script.splitlines())) > 80  # there is something to wrap
    assert all(line in lines for line in script.splitlines() if line)
    alone = mre("inspect", *corpus["compiled_submodule"].args, "--script", columns=40)
    assert alone.stdout == script and alone.returncode == cli.DOES_NOT


def test_the_output_is_the_same_under_any_hash_seed(corpus: dict[str, Entry]) -> None:
    """BERT's and Llama's non-persistent buffers live in a set: their order followed the seed."""
    for name in ("bert_folder", "llama_config"):
        args = [*corpus[name].args, "--json"]
        one, two = (mre("inspect", *args, PYTHONHASHSEED=seed) for seed in ("1", "2"))
        assert one.stdout == two.stdout and one.stdout, name


def test_mre_fix_writes_a_file_that_loads_strictly(corpus: dict[str, Entry], tmp_path: Path) -> None:
    folder = Path(corpus["hf_folder"].args[0])
    out = tmp_path / "fixed.safetensors"
    status, _, err = run("fix", str(folder), "-o", str(out))
    assert status == cli.LOADS, err
    state = load_file(out)
    config = transformers.AutoConfig.from_pretrained(folder)
    model = transformers.GPT2LMHeadModel(config)
    model.load_state_dict(state, strict=True)  # torch takes the file as written
    saved = {}
    for shard in folder.glob("model-*.safetensors"):
        saved |= load_file(shard)
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert torch.equal(state["lm_head.weight"], saved["transformer.wte.weight"])  # the tie, as a copy
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # still tied

    wrapped = Path(corpus["data_parallel"].args[0])
    status, _, err = run("fix", str(wrapped), "--into", "testmodel", "-o", str(tmp_path / "dp.safetensors"))
    assert status == cli.LOADS, err
    original = {k.removeprefix("module."): v for k, v in torch.load(wrapped, weights_only=True).items()}
    fixed = load_file(tmp_path / "dp.safetensors")
    assert fixed.keys() == original.keys() and all(torch.equal(fixed[k], v) for k, v in original.items())
    ref("testmodel").load_state_dict(fixed, strict=True)

    for name in ("wider", "optimizer", "other_width"):  # some tensors would not come from the file
        status, _, err = run("fix", *corpus[name].args, "-o", str(tmp_path / f"{name}.safetensors"))
        assert status == cli.DOES_NOT and "not written" in err, name
        assert not (tmp_path / f"{name}.safetensors").exists()


def test_the_tensor_tree_folds_layers_and_takes_a_depth(corpus: dict[str, Entry]) -> None:
    folder = corpus["hf_folder"].args[0]
    shallow = mre("inspect", folder, "--depth", "2")
    assert "h.{0,1} x2  12 tensors, " in shallow.stdout and "c_attn" not in shallow.stdout
    deep = mre("inspect", folder, "--depth", "9")
    assert "c_attn.weight  [64, 192] float32" in deep.stdout
    trained = mre("inspect", corpus["ema_and_model"].args[0])
    assert "state dicts: model (5), ema (5)" in trained.stdout


def test_a_real_size_gpt2_of_another_width_is_told_in_40_lines(tmp_path: Path) -> None:
    """GPT-2's real layout (12 layers, 50,257 tokens, 1,024 positions) at another width, checked
    against the real GPT-2 (built on meta): one cause, its patterns, and no fix, on one screen."""
    config = transformers.GPT2Config(n_embd=48, n_head=4, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    path = tmp_path / "narrow_gpt2.pt"
    torch.save(transformers.GPT2LMHeadModel(config).state_dict(), path)
    done = mre("inspect", path, "--into", "gpt2", columns=80)
    lines = done.stdout.splitlines()
    assert done.returncode == cli.DOES_NOT, done.stderr
    on_screen = sum(max(1, -(-len(line) // 80)) for line in lines)  # a longer line takes two rows
    assert on_screen <= 40, done.stdout
    assert "loads 0 of 149 tensors" in words(done.stdout)
    assert "48 in the file where the model has 768" in words(done.stdout)
    assert "   transformer.h.{0..11}.attn.c_attn.weight: file [48, 144], model [768, 2304]" in lines


def test_the_cli_loads_no_web_stack() -> None:
    # mre is for people who never open a browser: FastAPI, Starlette, the multipart parser, Jinja and
    # uvicorn stay out of its process, and --help does not even import torch.
    code = (
        "import sys, app.cli\n"
        "web = ['fastapi', 'starlette', 'python_multipart', 'jinja2', 'uvicorn', 'torch']\n"
        "print(' '.join(m for m in web if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert loaded.stdout.split() == []
    helped = subprocess.run(
        [sys.executable, "-m", "app.cli", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert helped.returncode == 0 and "inspect" in helped.stdout and "fix" in helped.stdout
