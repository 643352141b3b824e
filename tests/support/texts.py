"""Whether every sentence put in another language has its entry in that language's catalog, each
part of it too (a ``Text`` filled with other ``Text`` values looks each one up).

A sentence whose words were edited in code without the catalog reaches a Chinese page in English, and
only in the part that changed: comparing the two renderings of the whole sentence does not see it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.langs import CATALOGS, EN, Text, catalog


@contextmanager
def every_sentence_translated() -> Iterator[None]:
    """Fails the block if any sentence it puts in another language has no entry in that language's
    catalog (gettext silently answers with the English). It hears every lookup, so it also sees
    sentences the code renders itself (a diagnosis's titles are already dicts by language)."""
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
    # A sentence said in English is looked up nowhere: it is checked against every catalog too, so a
    # sentence whose words changed fails the test that reads it, whatever language the test reads.
    in_english = Text.__getitem__

    def read(text: Text, lang: str) -> str:
        if lang == EN and type(text) is Text:
            missed.extend(
                (other, text.message) for other in CATALOGS if text.message not in catalog(other)._catalog
            )
        return in_english(text, lang)

    Text.__getitem__ = read  # type: ignore[method-assign]
    try:
        yield
    finally:
        Text.__getitem__ = in_english  # type: ignore[method-assign]
        for translations, before in undo:
            if before is None:
                del translations.gettext
            else:
                translations.gettext = before
    assert missed == [], f"sentences a catalog lacks (gettext would say them in English): {missed}"
