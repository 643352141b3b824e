"""The UI language: ?lang= when given, else the best of Accept-Language by its weights; the page
says it in <html lang> and keeps it in its links; each language's templates have their catalog."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.langs import EN, ZH, catalog
from app.web.html import environment
from app.web.i18n import choose, from_accept_language


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("zh-TW", "zh-CN"),
        ("fr-FR, zh;q=0.5", "zh-CN"),
        ("en;q=0.1, zh;q=0.2", "zh-CN"),
        ("zh;q=0, en", "en"),
        ("de", "en"),
        ("zh;q=abc", "en"),
        ("", "en"),
    ],
)
def test_accept_language(client: TestClient, header: str, lang: str) -> None:
    response = client.get("/", headers={"Accept-Language": header})
    assert f'<html lang="{lang}"' in response.text


def test_lang_query_beats_the_header(client: TestClient) -> None:
    response = client.get("/", params={"lang": "en"}, headers={"Accept-Language": "zh-CN"})
    assert '<html lang="en"' in response.text and "lang=en" in response.text


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", ZH),
        ("en;q=0.1, zh;q=0.2", ZH),
        ("zh;q=0, en", EN),
        ("zh;q=abc", EN),
        (None, EN),
    ],
)
def test_the_best_language_of_a_header_by_its_weights(header: str | None, lang: str) -> None:
    assert from_accept_language(header) == lang


def test_the_query_chooses_unless_it_names_no_language_we_have() -> None:
    assert choose(ZH, "en") == ZH and choose(EN, "zh-CN") == EN
    assert choose("fr", "zh-CN") == ZH and choose(None, None) == EN


def test_each_languages_templates_say_it_in_that_language() -> None:
    zh = environment(ZH).from_string("{{ _('Module Registration Explorer') }}").render()
    assert zh == catalog(ZH).gettext("Module Registration Explorer") != "Module Registration Explorer"
    assert (
        environment(EN).from_string("{{ _('Module Registration Explorer') }}").render()
        == "Module Registration Explorer"
    )
