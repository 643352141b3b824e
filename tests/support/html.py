"""HTML tested by structure, not substrings: a small parser of the pages into elements to query."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

HX = {"HX-Request": "true"}


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    children: list[Element | str] = field(default_factory=list)

    def walk(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.walk()

    def find_all(self, tag: str = "", **attrs: str) -> list[Element]:
        """Elements by tag and attributes (``data_name`` for ``data-name``, ``class_`` for ``class``)."""
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [
            e
            for e in self.walk()
            if (not tag or e.tag == tag) and all(e.attrs.get(k) == v for k, v in wanted.items())
        ]

    def find(self, tag: str = "", **attrs: str) -> Element:
        (found,) = self.find_all(tag, **attrs)
        return found

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.open[-1].children.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
        assert any(e.tag == tag for e in self.open), f"</{tag}> closes nothing"
        while self.open.pop().tag != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


def parse(html: str) -> Element:
    """The document as a tree; every element it opens must be closed (void elements aside)."""
    tree = _Tree()
    tree.feed(html)
    tree.close()
    assert tree.open == [tree.root], [e.tag for e in tree.open]
    return tree.root


def table_rows(page: Element, table_id: str) -> list[dict]:
    """A report table as the reference writes it: name, shape, dtype, device, and its extra column."""
    rows = []
    for tr in page.find(id=table_id).find("tbody").find_all("tr"):
        if tr.attrs.get("class") == "empty":
            continue
        name, shape, dtype, device, *extra = (c for c in tr.children if isinstance(c, Element))
        row = {
            "name": name.find("code").text,
            "shape": json.loads(shape.text),
            "dtype": dtype.text,
            "device": device.text,
        }
        assert tr.attrs["data-name"] == row["name"] and tr.attrs["data-device"] == row["device"]
        rows.append(row | ({"extra": extra[0].text.strip() == "True"} if extra else {}))
    return rows
