"""POST /api/checkpoints/compare and the page's comparison: every row checked against the two
files as torch and safetensors read them, the differences computed here directly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from app.doctor import isolated
from app.main import create_app
from app.settings import Settings
from tests.support.checkpoints import in_process_async
from tests.support.faces import FACES, Faces
from tests.support.html import parse
from tests.support.reference import TUTORIAL_DEFAULTS, reference

CAP = 12  # elements: a tensor with more is compared by shape and dtype only


@pytest.fixture(scope="module", params=["child", "here"])
def api(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """The API with its comparisons made in the inspector's child, and made in this process (where
    mutation testing sees the comparing code run)."""
    uploads = tmp_path_factory.mktemp("uploads")
    settings = Settings(checkpoint_tmp_dir=str(uploads), checkpoint_compare_max_elements=CAP)
    with pytest.MonkeyPatch.context() as patch, TestClient(create_app(settings)) as client:
        if request.param == "here":
            patch.setattr(isolated, "run_isolated", in_process_async)
        yield client
    assert list(uploads.iterdir()) == []


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """a: a model's state_dict as safetensors; b: the same model after a few things happened to it,
    as torch.save writes it (with two of its tensors made one)."""
    folder = tmp_path_factory.mktemp("compare")
    model = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"])
    a = {k: v.detach().clone() for k, v in model.state_dict().items()}
    a |= {"table": torch.arange(20.0), "x": torch.ones(3), "y": torch.ones(3), "gone": torch.zeros(2)}
    save_file(a, folder / "a.safetensors")
    b = {k: v.clone() for k, v in a.items() if k != "gone"}
    b["linear.weight"][0, 0] += 0.25  # trained a little
    b["parameter1"] = torch.tensor([float("nan"), float("inf"), a["parameter1"][2].item()])
    b["buffer2"] = a["buffer2"].half()  # saved in half precision
    b["linear.bias"] = torch.zeros(4)  # another width
    b["table"] = a["table"] + 1  # over the cap: not compared
    b["y"] = b["x"]  # tied: one storage
    b["new"] = torch.ones(1)
    torch.save({**b, "c": torch.tensor([1 + 1j, 2j])}, folder / "complex_b.pt")
    save_file({"c": torch.tensor([1 + 0j, 2j])}, folder / "complex_a.safetensors")
    torch.save(b, folder / "b.pt")
    return folder / "a.safetensors", folder / "b.pt"


def expected(a: torch.Tensor, b: torch.Tensor) -> dict:
    """The differences, written out with torch on the whole tensors."""
    x, y = a.double().reshape(-1), b.double().reshape(-1)
    finite = x.isfinite() & y.isfinite()
    diff = (x - y).abs()
    scale = torch.maximum(x.abs(), y.abs())
    rel = torch.where(scale > 0, diff / scale.clamp_min(torch.finfo(torch.float64).tiny), 0)
    same = (finite & (diff == 0)) | (x.isnan() & y.isnan()) | (x.isinf() & (x == y))
    return {
        "max_abs_diff": float(diff[finite].max()),
        "max_rel_diff": float(rel[finite].max()),
        "differing": int((~same).sum()),
        "nan": [int(x.isnan().sum()), int(y.isnan().sum())],
        "inf": [int(x.isinf().sum()), int(y.isinf().sum())],
    }


def test_every_difference_as_torch_computes_it(api: TestClient, pair: tuple[Path, Path]) -> None:
    a_path, b_path = pair
    files = [("file", (a_path.name, a_path.read_bytes())), ("other", (b_path.name, b_path.read_bytes()))]
    answer = api.post("/api/checkpoints/compare", files=files)
    assert answer.status_code == 200, answer.text
    told = answer.json()
    a, b = load_file(a_path), torch.load(b_path, weights_only=True)
    rows = {row["key"]: row for row in told["rows"]}
    assert told["identical"] is False and (told["a"], told["b"]) == (["a.safetensors"], ["b.pt"])
    for key in a.keys() | b.keys():
        changes = []
        if key not in b:
            changes = ["only_in_a"]
        elif key not in a:
            changes = ["only_in_b"]
        else:
            changes += ["shape"] if a[key].shape != b[key].shape else []
            changes += ["dtype"] if a[key].dtype != b[key].dtype else []
            tied = b[key].untyped_storage().data_ptr() in {
                v.untyped_storage().data_ptr() for k, v in b.items() if k != key
            }
            changes += ["sharing"] if tied else []
            if a[key].shape == b[key].shape and a[key].numel() > CAP:
                changes.append("not_compared")
            elif a[key].shape == b[key].shape:
                values = expected(a[key], b[key])
                if key in rows:  # a row for it (a value or dtype change): its numbers are torch's
                    assert {k: rows[key][k] for k in values} == values, key
                changes += ["values"] if values["differing"] else []
        assert rows.get(key, {"changes": []})["changes"] == changes, key
        if changes in (["only_in_a"], ["only_in_b"]):  # the side that has it is described, the other not
            there = a[key] if key in a else b[key]
            label = f"{list(there.shape)} {str(there.dtype).removeprefix('torch.')}"
            assert (rows[key]["a"], rows[key]["b"]) == ((label, None) if key in a else (None, label)), key
    summary = told["summary"]
    assert (summary["only_in_a"], summary["only_in_b"], summary["common"]) == (1, 1, len(a) - 1)
    assert summary["nan_b"] == 1 and summary["inf_b"] == 1 and summary["not_compared"] == 1
    assert summary["sharing_changes"] == 2 and rows["x"]["shared_b"] == ["y"] and rows["x"]["shared_a"] == []
    assert summary["max_abs_diff"] == max(r["max_abs_diff"] or 0 for r in told["rows"])


def test_the_page_gives_the_summary_first_then_the_rows(api: TestClient, pair: tuple[Path, Path]) -> None:
    a_path, b_path = pair
    files = [("file", (a_path.name, a_path.read_bytes())), ("other", (b_path.name, b_path.read_bytes()))]
    told = api.post("/api/checkpoints/compare", files=files).json()
    page = parse(api.post("/checkpoints", files=files).text)
    summary = page.find("dl", id="compare-summary")
    assert summary.find("dd", **{"data-field": "only_in_a"}).text == str(told["summary"]["only_in_a"])
    keys = [tr.attrs["data-key"] for tr in page.find("table", id="compare-rows").find("tbody").find_all("tr")]
    assert keys == [row["key"] for row in told["rows"]]


def test_a_missing_second_file_is_a_422_naming_the_part(api: TestClient, pair: tuple[Path, Path]) -> None:
    answer = api.post("/api/checkpoints/compare", files={"file": ("a", pair[0].read_bytes())})
    assert answer.status_code == 422 and "'other'" in answer.json()["detail"]


def test_complex_values_compare_by_modulus(api: TestClient, pair: tuple[Path, Path]) -> None:
    a, b = pair[0].with_name("complex_a.safetensors"), pair[1].with_name("complex_b.pt")
    files = [("file", (a.name, a.read_bytes())), ("other", (b.name, b.read_bytes()))]
    rows = {r["key"]: r for r in api.post("/api/checkpoints/compare", files=files).json()["rows"]}
    x, y = load_file(a)["c"], torch.load(b, weights_only=True)["c"]
    assert rows["c"]["max_abs_diff"] == float((x - y).abs().max()) == 1.0
    assert rows["c"]["differing"] == 1 and rows["c"]["changes"] == ["values"]


def test_a_prefix_on_one_side_is_removed_and_said(tmp_path: Path) -> None:
    """A Lightning checkpoint (state_dict.model.*) against the plain state_dict: identical after
    removing the prefix; with --state-dict on each side, the state_dicts themselves."""
    from app.doctor.compare import compare_checkpoints
    from tests.support.checkpoints import LIMITS

    state = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"]).state_dict()
    torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in state.items()}}, tmp_path / "l.ckpt")
    save_file(dict(state), tmp_path / "p.safetensors")
    a, b = [tmp_path / "l.ckpt"], [tmp_path / "p.safetensors"]
    found = compare_checkpoints(a, ["l.ckpt"], b, ["p.safetensors"], LIMITS, CAP)
    assert (found.prefix_a, found.prefix_b) == ("state_dict.model.", "")
    assert not found.identical and found.identical_after_renaming and found.rows == []
    assert found.headline["en"].startswith("identical after removing 'state_dict.model.' from a")
    asked = compare_checkpoints(a, ["l.ckpt"], b, ["p.safetensors"], LIMITS, CAP, at_a="state_dict")
    assert (asked.state_dict_a, asked.prefix_a) == ("state_dict", "model.")
    changed = {k: v + 1 if k.startswith("linear.") else v for k, v in state.items()}
    save_file(changed, tmp_path / "c.safetensors")
    differ = compare_checkpoints(a, ["l.ckpt"], [tmp_path / "c.safetensors"], ["c"], LIMITS, CAP)
    assert [(g.pattern, g.count, g.changes, g.a) for g in differ.groups] == [
        ("linear.weight", 1, ["values"], "[3, 3] float32"),
        ("linear.bias", 1, ["values"], "[3] float32"),
    ]
    assert "they differ in 2 of 5 keys" in differ.headline["en"]


def test_no_largest_difference_is_told_when_no_values_were_compared(api: TestClient, tmp_path: Path) -> None:
    """Null (and "—" on the page) when nothing was compared, never 0.0, which says "compared, equal"."""
    a = {"w": torch.ones(2, 3), "big": torch.arange(20.0)}  # another shape; over the cap of elements
    b = {"w": torch.ones(3, 2), "big": torch.arange(20.0) + 1}
    same = {"s": torch.zeros(2)}  # compared, and equal
    for name, state in (("a", a), ("b", b), ("a_same", a | same), ("b_same", b | same)):
        save_file(state, tmp_path / f"{name}.safetensors")

    def compared(x: str, y: str) -> tuple[dict, object]:
        files = [
            ("file", (f"{x}.safetensors", (tmp_path / f"{x}.safetensors").read_bytes())),
            ("other", (f"{y}.safetensors", (tmp_path / f"{y}.safetensors").read_bytes())),
        ]
        answer = api.post("/api/checkpoints/compare", files=files)
        assert answer.status_code == 200, answer.text
        page = parse(api.post("/checkpoints", files=files).text)
        return answer.json()["summary"], page.find("dd", **{"data-field": "max_abs_diff"})

    summary, shown = compared("a", "b")
    largest = (summary["max_abs_diff"], summary["max_rel_diff"])
    assert summary["values_compared"] == 0 and largest == (None, None)
    assert shown.text.startswith("—")
    summary, shown = compared("a_same", "b_same")
    largest = (summary["max_abs_diff"], summary["max_rel_diff"])
    assert summary["values_compared"] == 1 and largest == (0.0, 0.0)
    assert shown.text.startswith("0 ")


@pytest.mark.parametrize("face", FACES)
def test_a_tensor_of_the_cap_in_elements_is_compared_and_one_more_is_not(face: str, tmp_path: Path) -> None:
    """MRE_CHECKPOINT_COMPARE_MAX_ELEMENTS on the API and on mre: 12 elements compared, 13 not."""
    a = {"at": torch.zeros(CAP), "over": torch.zeros(CAP + 1)}
    b = {"at": torch.ones(CAP), "over": torch.ones(CAP + 1)}
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    answer = Faces(face, uploads).compare(
        [tmp_path / "a.safetensors"], [tmp_path / "b.safetensors"], checkpoint_compare_max_elements=CAP
    )
    rows = {row["key"]: row for row in json.loads(answer.said)["rows"]}
    assert rows["at"]["changes"] == ["values"] and rows["at"]["differing"] == CAP
    assert rows["over"]["changes"] == ["not_compared"] and rows["over"]["max_abs_diff"] is None


def test_the_top_of_a_file_asked_for_by_name_keeps_every_key_whole(tmp_path: Path) -> None:
    """--state-dict "" is the file itself: its keys compared as they are, none cut at a dot."""
    from app.doctor.compare import compare_checkpoints
    from tests.support.checkpoints import LIMITS

    state = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"]).state_dict()
    torch.save(dict(state), tmp_path / "a.pt")
    save_file(dict(state), tmp_path / "b.safetensors")
    a, b = [tmp_path / "a.pt"], [tmp_path / "b.safetensors"]
    found = compare_checkpoints(a, ["a.pt"], b, ["b.safetensors"], LIMITS, CAP, at_a="", at_b="")
    assert found.identical and (found.prefix_a, found.prefix_b) == ("", "")
    assert found.rows == [] and (found.state_dict_a, found.state_dict_b) == ("", "")
    changed = {k: v + 1 if k == "linear.weight" else v for k, v in state.items()}
    save_file(changed, tmp_path / "c.safetensors")
    differ = compare_checkpoints(
        a, ["a.pt"], [tmp_path / "c.safetensors"], ["c"], LIMITS, CAP, at_a="", at_b=""
    )
    assert [(g.pattern, g.changes) for g in differ.groups] == [("linear.weight", ["values"])]


def test_a_prefix_on_the_second_file_is_said_of_it(tmp_path: Path) -> None:
    from app.doctor.compare import compare_checkpoints
    from tests.support.checkpoints import LIMITS

    state = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"]).state_dict()
    save_file(dict(state), tmp_path / "p.safetensors")
    save_file({f"module.{k}": v for k, v in state.items()}, tmp_path / "w.safetensors")
    found = compare_checkpoints(
        [tmp_path / "p.safetensors"], ["p"], [tmp_path / "w.safetensors"], ["w"], LIMITS, CAP
    )
    assert (found.prefix_a, found.prefix_b) == ("", "module.")
    assert found.headline["en"].startswith("identical after removing 'module.' from b")


def test_a_sparse_tensor_is_not_compared_by_value(tmp_path: Path) -> None:
    """A sparse layout has no flat values to read: "not compared", neither a crash nor "equal"."""
    from app.doctor.compare import compare_checkpoints
    from tests.support.checkpoints import LIMITS

    torch.save({"s": torch.eye(3).to_sparse(), "w": torch.ones(2)}, tmp_path / "a.pt")
    torch.save({"s": (2 * torch.eye(3)).to_sparse(), "w": torch.ones(2)}, tmp_path / "b.pt")
    found = compare_checkpoints([tmp_path / "a.pt"], ["a"], [tmp_path / "b.pt"], ["b"], LIMITS, CAP)
    assert [(r.key, r.changes, r.max_abs_diff) for r in found.rows] == [("s", ["not_compared"], None)]
    assert (found.summary.values_compared, found.summary.not_compared) == (1, 1)


def test_equal_complex_values_count_their_infinities() -> None:
    """Bit-for-bit equal chunks are not widened, but their infinities still count, complex ones too."""
    from app.doctor.compare import compare_values

    for values in ([1.0, float("inf"), -float("inf")], [1 + 0j, complex(float("inf"), 0), complex(0, 1)]):
        x = torch.tensor(values)
        expected = int(x.isinf().sum())
        assert compare_values(x, x.clone()).inf == (expected, expected) != (0, 0)
