"""Every UI string in the templates has a Simplified Chinese translation."""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from babel.messages.extract import extract_from_dir
from fastapi.testclient import TestClient

from app.lab import spec as spec_module
from app.lab.page import spec_of
from app.lab.presets import PRESETS
from app.lab.spec import SpecError
from app.lab.styles import STYLES
from app.langs import ZH
from app.settings import Settings
from app.web.i18n import translations

ROOT = Path(__file__).resolve().parents[1]


def template_messages() -> set[str]:
    method_map = [("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "trim_blocks": "true"}}
    found = extract_from_dir(str(ROOT), method_map, options_map=options)
    return {message for _, _, message, _, _ in found}


def test_every_template_string_is_translated() -> None:
    messages = template_messages()
    assert len(messages) > 30
    zh = translations(ZH)
    untranslated = sorted(m for m in messages if zh.gettext(m) == m)
    assert untranslated == []


# Every refusal a lab page can meet (the page ignores a preset's foreign members and shapes, and
# defaults the preset, so the API's other refusals never reach it).
SPEC_ERRORS = [
    "preset=nope",
    "x=1&preset=testmodel",
    "preset=testmodel&preset=mymodule",
    "preset=testmodel&style.buffer1=zzz",
    "preset=testmodel&device=cuda:7",
    "preset=custom&style.a=zzz",
    "preset=custom&style.a=buffer&shape.a=0",
    "preset=custom&style.a=buffer&shape.a=3y",
    "preset=custom&style.a=buffer&shape.a=99x99x99",
    "preset=custom&shape.a=3",
    "preset=custom&" + "&".join(f"style.m{i}=buffer" for i in range(40)),
    "preset=" + "x" * 100,
    "preset=testmodel&device=" + "x" * 100,
]


def _spec_error(query: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        spec_of(parse_qsl(query), Settings().custom_max_elements)
    return caught.value


def _shown_error(client: TestClient, query: str, lang: str) -> str:
    response = client.get(f"/?{query}&lang={lang}")
    assert response.status_code in (404, 422), (query, response.status_code)
    return html.unescape(re.search(r'role="alert">.*?<code>(.*?)</code>', response.text, re.S).group(1))


@pytest.mark.parametrize("query", SPEC_ERRORS)
def test_a_spec_error_is_told_in_the_pages_language(client: TestClient, query: str) -> None:
    error = _spec_error(query)  # raised by the spec functions themselves, not by the page
    assert _shown_error(client, query, "en") == error.message
    zh = _shown_error(client, query, "zh-CN")
    assert zh == error.zh != error.message
    # What is left in Latin letters is what the user typed or may type: names, values, parameters.
    names = {*PRESETS, *STYLES, "preset", "device", "style", "shape", "custom", "cpu", "meta", "cuda"}
    names |= {m.name for p in PRESETS.values() for m in p.members}
    words = set(re.findall(r"[A-Za-z]{3,}", re.sub(r"'[^']*'|\w*[._<>]\w*", " ", zh)))
    assert words - names == set(), zh


def test_every_spec_error_the_lab_raises_has_its_chinese() -> None:
    tree = ast.parse(Path(spec_module.__file__).read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("SpecError", "UnknownPreset")
    ]
    assert len(calls) >= 15 and all(len(call.args) == 3 for call in calls), [c.lineno for c in calls]


def test_a_refused_member_is_told_in_the_pages_language(client: TestClient) -> None:
    query = "preset=custom&style.w=buffer&add=1&new=v&new_shape=99x99x99&new_style=buffer"
    error = _spec_error("preset=custom&style.w=buffer&style.v=buffer&shape.v=99x99x99")
    for lang, text in (("en", error.message), ("zh-CN", error.zh)):
        page = html.unescape(client.get(f"/?{query}&lang={lang}").text)
        assert f"<code>{text}</code>" in page, lang
