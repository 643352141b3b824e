"""One refusal type: every domain error is a Refusal, carries its status and a Text in every
language, and is said as FastAPI says a field's error when it refuses a field's value."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import app
from app.errors import Refusal
from app.langs import EN, ZH, Text

ROOT = Path(__file__).resolve().parents[1]


def refusal_classes() -> dict[str, type[Refusal]]:
    """Every Refusal subclass the app defines, by name (each module imported)."""
    for module in pkgutil.walk_packages(app.__path__, "app."):
        if module.name not in ("app.main", "app.__main__"):
            importlib.import_module(module.name)
    found, pending = {}, [Refusal]
    while pending:
        for sub in pending.pop().__subclasses__():
            found[sub.__name__] = sub
            pending.append(sub)
    return found


def test_every_domain_error_is_a_refusal() -> None:
    names = set(refusal_classes())
    domain = {"SpecError", "UnknownPreset", "CheckpointError", "CheckpointTooLarge", "UploadError"}
    domain |= {"InspectionFailed", "ArchitectureError", "ClassError", "NoSuchRoom", "NotTeacher"}
    domain |= {"Full", "Refused", "TooManyFailures", "Unavailable", "BadState", "StepError"}
    assert domain <= names


def test_no_refusal_is_made_of_words_the_catalogs_cannot_translate() -> None:
    # A refusal built from a literal or an f-string would reach a Chinese page in English.
    names = set(refusal_classes())
    words = (ast.Constant, ast.JoinedStr)  # a str literal, or an f-string
    wrong = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in (ROOT / "app").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", "") in names
        and any(isinstance(a, words) and not isinstance(getattr(a, "value", ""), int) for a in node.args)
    ]
    assert wrong == []


def test_a_refusal_keeps_its_class_status_unless_given_one() -> None:
    class Gone(Refusal):
        status = 410

    assert Gone(Text("the file is empty")).status == 410
    assert Gone(Text("the file is empty"), status=404).status == 404
    assert Refusal(Text("the file is empty")).status == 422


def test_a_refusal_says_itself_in_every_language() -> None:
    exc = Refusal(Text("{path}: no such file", path="m.pt"))
    assert str(exc) == exc.message == exc.text(EN) == "m.pt: no such file"
    assert exc.text(ZH) == exc.words[ZH] != exc.message


@pytest.mark.parametrize(
    ("loc", "status", "detail"),
    [
        (("styles", "x"), 422, [{"loc": ["styles", "x"], "msg": "the file is empty", "type": "value_error"}]),
        (("preset",), 404, "the file is empty"),  # not a field's value: an unknown thing
        ((), 422, "the file is empty"),
    ],
)
def test_the_apis_detail_is_a_fields_error_only_for_a_fields_value(loc, status, detail) -> None:
    assert Refusal(Text("the file is empty"), loc=loc, status=status).detail() == detail
