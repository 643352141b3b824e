"""Whether a built sentence can be said in every language: each catalog sentence it is made of
(itself and the ``Text`` values it is filled with) has an entry in every other language's catalog.

A sentence whose words were edited in code without the catalog reaches a Chinese page in English, and
only in the part that changed: comparing the two renderings of the whole sentence does not see it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.langs import CATALOGS, Text, catalog


def parts(text: Text) -> list[Text]:
    """``text`` and every ``Text`` it is filled with, at any depth (words given as they are excluded)."""
    if type(text) is not Text:  # verbatim (a name, torch's message) or already rendered: no catalog entry
        return []
    found = [text]
    for value in text.values.values():
        if isinstance(value, Text):
            found += parts(value)
    return found


def untranslated(*texts: Text) -> list[tuple[str, str]]:
    """(language, message) of each catalog sentence in ``texts`` that a catalog lacks."""
    return [
        (lang, part.message)
        for text in texts
        for part in parts(text)
        for lang in CATALOGS
        if part.message not in catalog(lang)._catalog  # gettext would fall back to the English
    ]


@contextmanager
def every_sentence_translated() -> Iterator[None]:
    """Fails the block if any sentence it puts in another language has no entry in that language's
    catalog (gettext silently answers with the English). For code that renders its ``Text`` itself
    (a diagnosis's titles are already dicts by language), where ``untranslated`` cannot look inside."""
    missed: list[tuple[str, str]] = []
    undo = []
    for lang in CATALOGS:
        translations = catalog(lang)
        said = translations.gettext  # an enclosing check's, if any: it hears of misses too

        def gettext(message: str, lang: str = lang, translations=translations, said=said) -> str:
            if message not in translations._catalog:
                missed.append((lang, message))
            return said(message)

        undo.append((translations, translations.__dict__.get("gettext")))
        translations.gettext = gettext  # type: ignore[method-assign]
    try:
        yield
    finally:
        for translations, before in undo:
            if before is None:
                del translations.gettext
            else:
                translations.gettext = before
    assert missed == [], f"said in English on a page in another language: {missed}"
