"""The one i18n mechanism: a Text's words in each language come from the catalogs, which hold every
string the app says (templates and Python alike), each with its Chinese and the same placeholders."""

from __future__ import annotations

import ast
import pickle
import re
import shlex
import shutil
import string
import subprocess
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po

from app.langs import EN, LANGS, LOCALE_DIR, ZH, Text, catalog, rendered, verbatim

ROOT = Path(__file__).resolve().parents[1]
PO = LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "messages.po"


def extracted() -> dict[str, str]:
    """Every message the app says, as `make i18n` extracts it: msgid -> where."""
    keywords = {**DEFAULT_KEYWORDS, "Text": None}
    method_map = [("app/**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "trim_blocks": "true"}}
    found = {}
    for name, line, message, _, _ in extract_from_dir(str(ROOT), method_map, options, keywords):
        message = message[0] if isinstance(message, tuple) else message
        if message:
            found.setdefault(message, f"{name}:{line}")
    return found


def placeholders(text: str) -> list[str]:
    """The {names} a Python message fills, or the %(names)s a template's does."""
    if "%(" in text:
        return sorted(re.findall(r"%\((\w+)\)", text))
    return sorted(f for _, f, _, _ in string.Formatter().parse(text) if f is not None)


def test_every_message_of_templates_and_python_has_its_chinese() -> None:
    messages = extracted()
    assert len(messages) > 500
    assert any(where.startswith("templates/") for where in messages.values())
    assert any(where.startswith("app/doctor/") for where in messages.values())
    with PO.open("rb") as f:
        po = read_po(f)
    missing = {m: w for m, w in messages.items() if po.get(m) is None or not po.get(m).string}
    assert missing == {}


def test_each_chinese_fills_the_same_placeholders() -> None:
    with PO.open("rb") as f:
        po = read_po(f)
    wrong = [m.id for m in po if m.id and placeholders(m.id) != placeholders(m.string)]
    assert wrong == []


def test_no_text_is_made_from_an_f_string() -> None:
    # An f-string's words differ per call: no catalog entry could match it, and it would stay English.
    made = []
    for path in (ROOT / "app").rglob("*.py"):
        if path.name == "langs.py":  # where a Text is unpickled from its parts
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Text" and node.args:
                made.append((path.name, node.lineno, type(node.args[0]).__name__))
    assert len(made) > 200
    assert [m for m in made if m[2] != "Constant"] == []


def test_make_i18n_keeps_every_translation(tmp_path: Path) -> None:
    # The Makefile's own extract and update, on a copy of the catalogs: nothing dropped or emptied.
    makefile = (ROOT / "Makefile").read_text()
    extract = re.search(r"^I18N_EXTRACT := (.*)$", makefile, re.M).group(1)
    shutil.copytree(LOCALE_DIR, tmp_path / "locale")
    pybabel = str(ROOT / ".venv" / "bin" / "pybabel")
    pot = tmp_path / "locale" / "messages.pot"
    subprocess.run(
        [pybabel, "extract", *shlex.split(extract), "-o", str(pot), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            pybabel,
            "update",
            "-i",
            str(pot),
            "-d",
            str(tmp_path / "locale"),
            "--no-fuzzy-matching",
            "--ignore-obsolete",
            "--width",
            "110",
        ],
        check=True,
        capture_output=True,
    )
    with PO.open("rb") as f:
        before = {m.id: m.string for m in read_po(f) if m.id}
    with (tmp_path / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po").open("rb") as f:
        after = {m.id: m.string for m in read_po(f) if m.id}
    assert after == before


def test_a_text_says_its_catalog_words_and_fills_them_in_each_language() -> None:
    text = Text("{path}: no such file", path="m.pt")
    assert text[EN] == str(text) == "m.pt: no such file"
    assert text[ZH] == catalog(ZH).gettext("{path}: no such file").format(path="m.pt") != text[EN]
    assert dict(text) == {EN: text[EN], ZH: text[ZH]} and list(text) == list(LANGS)
    with pytest.raises(KeyError):
        text["fr"]


def test_a_text_inside_a_text_is_said_in_the_same_language() -> None:
    inner = Text("Frozen parameter")
    outer = Text("the state's lab: {error}", error=inner)
    assert outer[ZH] == Text("the state's lab: {error}", error=inner[ZH])[ZH]
    assert inner[ZH] in outer[ZH] and inner[EN] in outer[EN]


def test_words_that_are_no_sentence_stay_as_they_are() -> None:
    assert dict(verbatim("torch.nn {x}")) == {EN: "torch.nn {x}", ZH: "torch.nn {x}"}
    said = rendered({EN: "gone", ZH: "没了"})
    assert (said[EN], said[ZH]) == ("gone", "没了")


@pytest.mark.parametrize(
    "text",
    [
        Text("{count} tensors; at most {max_entries}", count=3, max_entries=9),
        verbatim("x"),
        rendered({EN: "a"}),
    ],
)
def test_a_text_crosses_to_a_child_process_as_itself(text: Text) -> None:
    again = pickle.loads(pickle.dumps(text))
    assert type(again) is type(text) and dict(again) == dict(text)
