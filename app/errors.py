"""One refusal type. Every domain error derives from ``Refusal``: the HTTP status a face gives it,
what it says in every language (a ``Text``), and the field at fault. The web faces render it once
(``app.web.errors``): JSON for the API (in English), a page in the page's language otherwise;
``mre`` prints it in the language asked for. And ``out_of_memory``: whether an exception says
memory ran out, which each feature refuses in its own words (413).
"""

from __future__ import annotations

from collections.abc import Sequence

from app.langs import EN, Text


class Refusal(Exception):
    """A request refused, said as content (never a 500). ``status`` defaults to the class's."""

    status = 422

    def __init__(self, text: Text, *, loc: Sequence[str] = (), status: int | None = None) -> None:
        super().__init__(text[EN])
        self.words = text
        self.loc = tuple(loc)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        """The refusal in English: what the JSON API answers."""
        return self.words[EN]

    def text(self, lang: str) -> str:
        return self.words[lang]

    def detail(self) -> object:
        """The JSON API's ``detail``: a field's value refused (422 with a ``loc``) is said as
        FastAPI says its own validation errors; anything else is its message."""
        if self.loc and self.status == 422:
            return [{"loc": list(self.loc), "msg": self.message, "type": "value_error"}]
        return self.message


def out_of_memory(exc: BaseException) -> bool:
    """Memory ran out (an address-space limit hit, most often): Python's MemoryError, torch's CPU
    allocator in its words, or C++'s bad_alloc from code that allocates with new."""
    return isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or "bad_alloc" in str(exc)
