"""Whether a built sentence can be said in every language: each catalog sentence it is made of
(itself and the ``Text`` values it is filled with) has an entry in every other language's catalog.

A sentence whose words were edited in code without the catalog reaches a Chinese page in English, and
only in the part that changed: comparing the two renderings of the whole sentence does not see it.
"""

from __future__ import annotations

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
