"""The doctor, through POST /api/checkpoints and its isolated child, on checkpoints written by the
libraries that write them: each cause found, and each fix line run here, with torch, on the file's
own state, giving exactly the outcome the doctor reported after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from app.main import create_app
from app.settings import Settings
from tests.support.checkpoints import Case
from tests.support.html import parse


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    uploads = tmp_path_factory.mktemp("uploads")
    with TestClient(create_app(Settings(checkpoint_tmp_dir=str(uploads)))) as client:
        yield client
    assert list(uploads.iterdir()) == []


def attempt(action: Callable[[], object]) -> str:
    try:
        action()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def loaded(case: Case, state: dict, strict: bool) -> str:
    return attempt(lambda: case.module().load_state_dict(state, strict=strict))


def state_of(case: Case, at: str) -> dict:
    """The state_dict as torch (or safetensors) itself reads it from the file."""
    if case.file.suffix == ".safetensors":
        return load_file(case.file)
    loaded = torch.load(case.file, weights_only=True)
    return loaded[at] if at else loaded


@pytest.mark.parametrize(
    "name",
    [
        "data_parallel",
        "compiled",
        "dp_compiled",
        "lightning",
        "tied",
        "no_stats",
        "persistent_pe",
        "no_pe",
        "wider_half",
    ],
)
def test_each_cause_and_its_fix_as_torch_sees_them(
    api: TestClient, cases: dict[str, Case], name: str
) -> None:
    case = cases[name]
    answer = api.post(
        f"/api/checkpoints?{case.query}", files={"file": (case.file.name, case.file.read_bytes())}
    )
    assert answer.status_code == 200, answer.text
    load = answer.json()["load"]
    diagnosis = load["diagnosis"]
    assert [c["id"] for c in diagnosis["causes"]] == case.causes
    state = state_of(case, load["state_dict"])
    told = attempt(lambda: case.module().load_state_dict(state))
    assert load["strict"] == told  # torch's message, word for word
    # pytorch#9530: what strict=False really copied, before any fix
    result = case.module().load_state_dict(dict(state), strict=False) if "size" not in told else None
    if result is not None:
        assert diagnosis["loaded_before"] == len(state) - len(result.unexpected_keys)
    strict = True
    for cause in diagnosis["causes"]:
        assert cause["title"]["en"] and cause["title"]["zh-CN"] and cause["explanation"]["zh-CN"]
        for line in cause["torch_says"]:
            assert line in told
        if cause["after_fix"] is None:  # nothing to fix: by design, or torch casts by itself
            assert cause["severity"] != "error"
            continue
        assert cause["torch_says"], cause["id"]
        exec(cause["fix"], {"torch": torch, "state": state, "model": case.module()})
        strict = strict and "strict=False" not in cause["fix"]
        assert loaded(case, state, strict) == cause["after_fix"]
    assert diagnosis["strict_after_fixes"] == strict
    assert diagnosis["after_fixes"] == loaded(case, state, strict)
    assert diagnosis["after_fixes"] == "ok"


def test_a_prefix_is_named_with_its_wrapper_and_silent_non_strict_load(
    api: TestClient, cases: dict[str, Case]
) -> None:
    case = cases["data_parallel"]
    answer = api.post(f"/api/checkpoints?{case.query}", files={"file": ("m.pt", case.file.read_bytes())})
    diagnosis = answer.json()["load"]["diagnosis"]
    (prefix,) = diagnosis["causes"]
    state = torch.load(case.file, weights_only=True)
    assert prefix["keys"] == list(state) and all(k.startswith("module.") for k in state)
    assert "DataParallel" in prefix["explanation"]["en"] and "silently" in prefix["explanation"]["en"]
    assert diagnosis["loaded_before"] == 0
    assert "consume_prefix_in_state_dict_if_present" in prefix["fix"]


def test_tied_alias_and_size_details(api: TestClient, cases: dict[str, Case]) -> None:
    tied = cases["tied"]
    answer = api.post(
        f"/api/checkpoints?{tied.query}", files={"file": ("t.safetensors", tied.file.read_bytes())}
    )
    (cause,) = answer.json()["load"]["diagnosis"]["causes"]
    kept = load_file(tied.file)
    assert "embed.weight" in kept and "head.weight" not in kept and cause["keys"] == ["head.weight"]
    assert cause["fix"] == 'state.update({"head.weight": state["embed.weight"]})'
    wider = cases["wider_half"]
    answer = api.post(f"/api/checkpoints?{wider.query}", files={"file": ("w.pt", wider.file.read_bytes())})
    causes = answer.json()["load"]["diagnosis"]["causes"]
    state, module = torch.load(wider.file, weights_only=True), wider.module().state_dict()
    for cause in causes[:2]:
        (detail,) = cause["details"]
        key = detail["key"]
        assert detail["checkpoint_shape"] == list(state[key].shape) and detail["module_shape"] == list(
            module[key].shape
        )
    dtype = causes[2]
    assert {d["key"] for d in dtype["details"]} == {
        k
        for k in state
        if k in module and state[k].dtype != module[k].dtype and state[k].shape == module[k].shape
    }
    assert all(
        d["checkpoint_dtype"] == "float16" and d["module_dtype"] == "float32" for d in dtype["details"]
    )


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_the_page_shows_each_cause_in_its_language_with_the_apis_fix(
    api: TestClient, cases: dict[str, Case], lang: str
) -> None:
    case = cases["dp_compiled"]
    body = case.file.read_bytes()
    told = api.post(f"/api/checkpoints?{case.query}", files={"file": ("m.pt", body)}).json()["load"]
    page = api.post(f"/checkpoints?lang={lang}", data={"preset": case.preset}, files={"file": ("m.pt", body)})
    assert page.status_code == 200
    items = parse(page.text).find(id="diagnosis").find_all("li", **{"data-cause": "prefix"})
    assert len(items) == 2
    for item, cause in zip(items, told["diagnosis"]["causes"], strict=True):
        assert item.find("h4").text.startswith(cause["title"][lang])
        assert item.find("pre", **{"class": "fix"}).text == cause["fix"]
    fixes = parse(page.text).find("pre", id="fixes").text.splitlines()
    assert fixes == [*told["diagnosis"]["fixes"], "model.load_state_dict(state)  # ok"]
