"""Every UI string in the templates has a Simplified Chinese translation."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir

from app.i18n import translations
from app.lab.langs import ZH

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
