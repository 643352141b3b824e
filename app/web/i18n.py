"""UI languages: one Babel catalog per language, picked by ``?lang=`` or else Accept-Language.

Catalogs are the .po files under ``app/locale`` (``make i18n`` extracts and merges them); they are
compiled in memory at first use, so no build step produces .mo files.
"""

from __future__ import annotations

from functools import cache
from gettext import NullTranslations
from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from app.langs import EN, LANGS, ZH

LOCALE_DIR = Path(__file__).parents[1] / "locale"
# Babel names locales with an underscore; the web (and our ?lang=) with a hyphen.
CATALOG = {ZH: "zh_CN"}


@cache
def translations(lang: str) -> NullTranslations:
    if lang not in CATALOG:
        return NullTranslations()
    with open(LOCALE_DIR / CATALOG[lang] / "LC_MESSAGES" / "messages.po", "rb") as f:
        catalog = read_po(f, locale=CATALOG[lang])
    buffer = BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


def _match(tag: str) -> str | None:
    tag = tag.strip().lower()
    if tag.startswith("zh"):
        return ZH  # the only Chinese we have: better than English for any zh reader
    if tag.startswith("en"):
        return EN
    return None


def from_accept_language(header: str | None) -> str:
    """The best of our languages for an Accept-Language header (RFC 9110 weights)."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")):
        tag, _, params = part.partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if (lang := _match(tag)) and q > 0:
            ranked.append((-q, position, lang))
    return min(ranked)[2] if ranked else EN


def choose(query_lang: str | None, accept_language: str | None) -> str:
    if query_lang in LANGS:
        return query_lang
    return from_accept_language(accept_language)
