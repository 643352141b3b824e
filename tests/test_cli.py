"""``mre inspect``, the console script pyproject.toml installs, run as a program on checkpoints the
real libraries wrote: its tables, its JSON (the API's, byte for byte) and its exit status."""

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
from fastapi.testclient import TestClient

from app import cli
from app.main import create_app
from app.settings import Settings
from tests.support.checkpoints import Case

ROOT = Path(__file__).resolve().parents[1]


def mre(*args: object) -> subprocess.CompletedProcess[str]:
    """The console script as pip writes it: import the entry point's function and exit with it."""
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["mre"]
    module, _, function = entry.partition(":")
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MRE_")}
    env |= {"PYTHONPATH": str(ROOT), "COLUMNS": "200"}  # the checkout's app; a wide terminal
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    uploads = tmp_path_factory.mktemp("uploads")
    with TestClient(create_app(Settings(checkpoint_tmp_dir=str(uploads)))) as client:
        yield client


def test_a_wrapped_checkpoint_does_not_load_and_the_tables_say_why(cases: dict[str, Case]) -> None:
    case = cases["dp_compiled"]
    run = mre("inspect", case.file, "--into", case.preset)
    assert run.returncode == cli.DOES_NOT, run.stderr
    state = torch.load(case.file, weights_only=True)
    assert f"{len(state)} ({sum(t.numel() for t in state.values())} elements)" in run.stdout
    assert 'consume_prefix_in_state_dict_if_present(state, "module.")' in run.stdout
    assert 'consume_prefix_in_state_dict_if_present(state, "_orig_mod.")' in run.stdout
    assert run.stdout.rstrip().endswith("model.load_state_dict(state)  # ok")


def test_json_is_the_apis_and_a_loading_file_exits_0(
    api: TestClient, cases: dict[str, Case], capsys: pytest.CaptureFixture[str]
) -> None:
    """In this process from here on: the same main() the script calls, without a new interpreter
    (and its torch import) per run."""
    case = cases["no_pe"]
    styles = [f"--style={k}={v}" for k, v in case.styles.items()]
    assert cli.main(["inspect", str(case.file), "--into", case.preset, *styles, "--json"]) == cli.LOADS
    answer = api.post(
        f"/api/checkpoints?{case.query}", files={"file": (case.file.name, case.file.read_bytes())}
    )
    assert json.loads(capsys.readouterr().out) == answer.json()
    assert answer.json()["load"]["strict"] == "ok"


def test_compare_exits_1_when_they_differ_and_0_when_not(
    cases: dict[str, Case], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    a, b = cases["data_parallel"].file, cases["compiled"].file
    assert cli.main(["inspect", str(a), "--compare", str(b)]) == cli.DOES_NOT
    out = capsys.readouterr().out
    assert all(key in out for key in torch.load(a, weights_only=True)) and "only_in_b" in out
    assert cli.main(["inspect", str(a), "--compare", str(a), "--json"]) == cli.LOADS
    assert json.loads(capsys.readouterr().out)["identical"] is True


def test_bad_input_exits_2(
    cases: dict[str, Case], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    assert cli.main(["inspect", str(garbage)]) == cli.BAD_INPUT
    assert "not a safetensors or torch checkpoint" in capsys.readouterr().err
    assert cli.main(["inspect", str(tmp_path / "absent.pt")]) == cli.BAD_INPUT
    assert cli.main(["inspect", str(cases["tied"].file), "--into", "no_such_preset"]) == cli.BAD_INPUT
    assert "unknown preset 'no_such_preset'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["inspect"])
    assert usage.value.code == cli.BAD_INPUT


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
    assert helped.returncode == 0 and "inspect" in helped.stdout
