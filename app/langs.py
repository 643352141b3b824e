"""The languages the explorer speaks, and its one way of saying anything in them.

A ``Text`` is an English sentence, which is its gettext message id (with ``{placeholders}``), and
the values that fill it; each other language's words come from that language's catalog
(``app/locale/<locale>/LC_MESSAGES/messages.po``), looked up when first read. Templates use the same
catalogs through Jinja's ``_()``. ``make i18n`` extracts every ``Text("...")`` and every template
string into them; a test fails when one has no Chinese.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache
from gettext import NullTranslations
from io import BytesIO
from pathlib import Path

EN = "en"
ZH = "zh-CN"
LANGS = (EN, ZH)
# Babel names locales with an underscore; the web (and our ?lang=) with a hyphen.
CATALOGS = {ZH: "zh_CN"}
LOCALE_DIR = Path(__file__).parent / "locale"


@cache
def catalog(lang: str) -> NullTranslations:
    """The compiled catalog of ``lang`` (compiled in memory from its .po at first use: no build step
    makes .mo files); English is the message ids themselves."""
    if lang not in CATALOGS:
        return NullTranslations()
    # Imported here: a process that only ever speaks English (mre --help) never loads Babel.
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    from babel.support import Translations

    with open(LOCALE_DIR / CATALOGS[lang] / "LC_MESSAGES" / "messages.po", "rb") as f:
        messages = read_po(f, locale=CATALOGS[lang])
    compiled = BytesIO()
    write_mo(compiled, messages)
    compiled.seek(0)
    return Translations(compiled)


class Text(Mapping[str, str]):
    """A sentence in every language: ``text[lang]`` is its words there, ``str(text)`` its English.

    ``message`` is the English source and catalog id; ``values`` fill its ``{placeholders}`` (a value
    that is itself a Text is put in the same language). Without values the words are used as they
    are, so a message without placeholders may hold braces.
    """

    __slots__ = ("message", "values")

    def __init__(self, message: str, /, **values: object) -> None:
        self.message = message
        self.values = values

    def __getitem__(self, lang: str) -> str:
        if lang not in LANGS:
            raise KeyError(lang)
        words = self.message if lang == EN else catalog(lang).gettext(self.message)
        if not self.values:
            return words
        return words.format(**{k: v[lang] if isinstance(v, Text) else v for k, v in self.values.items()})

    def __iter__(self) -> Iterator[str]:
        return iter(LANGS)

    def __len__(self) -> int:
        return len(LANGS)

    def __str__(self) -> str:
        return self[EN]

    def __repr__(self) -> str:
        return f"Text({self.message!r}, **{self.values!r})"

    def __reduce__(self) -> tuple:
        # Pickled (to an inspection's child process) as what it is, not as a dict of its languages.
        return _text, (self.message, self.values)


def _text(message: str, values: dict) -> Text:
    return Text(message, **values)


def rendered(words: Mapping[str, str]) -> Text:
    """A text already put in every language (a child process's refusal, sent as JSON)."""
    return _Rendered(dict(words))


class _Rendered(Text):
    __slots__ = ()

    def __init__(self, words: dict[str, str]) -> None:
        super().__init__(words.get(EN, ""))
        self.values = words

    def __getitem__(self, lang: str) -> str:
        if lang not in LANGS:
            raise KeyError(lang)
        return self.values.get(lang, self.message)

    def __reduce__(self) -> tuple:
        return rendered, (self.values,)


def verbatim(words: str) -> Text:
    """Words that are the same in every language (a name, torch's own message): no catalog entry."""
    return _Verbatim(words)


class _Verbatim(Text):
    __slots__ = ()

    def __getitem__(self, lang: str) -> str:
        if lang not in LANGS:
            raise KeyError(lang)
        return self.message

    def __reduce__(self) -> tuple:
        return verbatim, (self.message,)
