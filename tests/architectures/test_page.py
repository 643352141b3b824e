"""An architecture's page model: its tables are the tree's rows grouped and filtered, its refusals
are said in the page's language with their status."""

from __future__ import annotations

import re

from app.architectures import memo
from app.architectures.catalogue import OFF, get
from app.architectures.page import MAX_FILTER, page_of
from app.langs import EN, ZH
from app.web.html import View
from tests.support.architectures import direct


def view(lang: str = EN) -> View:
    return View(lang=lang, lang_chosen=True, present=False, htmx=False)


def test_the_tables_are_the_trees_rows_grouped() -> None:
    page, status = page_of(view(), "llama_tiny", "meta", "", True)
    tree = memo.tree("llama_tiny", "meta")
    assert status == 200 and page.tree is tree and page.roundtrip is not None
    for title, rows in (("named_parameters()", tree.named_parameters), ("state_dict()", tree.state_dict)):
        # Identical numbered blocks are one group; spelt out, its rows are the tree's, in order.
        spelt = []
        for g in page.tables[title]:
            if g.repeat == 1:
                spelt += g.rows
                continue
            head, first, last = re.fullmatch(r"(.*)\.\{(\d+)\.\.(\d+)\}", g.prefix).groups()
            first, last = int(first), int(last)
            assert last - first + 1 == g.repeat and g.count == g.repeat * len(g.rows)
            for i in range(first, last + 1):
                spelt += [
                    r.model_copy(update={"name": r.name.replace(g.prefix, f"{head}.{i}")}) for r in g.rows
                ]
        assert [(r.name, r.shape, r.bytes) for r in spelt] == [(r.name, r.shape, r.bytes) for r in rows]
        assert sum(g.count for g in page.tables[title]) == len(rows)
        assert [g.prefix for g in page.tables[title]][1] == "model.layers.{0..1}"


def test_the_filter_keeps_the_rows_that_name_it_and_their_counts() -> None:
    page, _ = page_of(view(), "llama_tiny", "meta", "inv_freq", True)
    rows = [r.name for g in page.tables["named_buffers()"] for r in g.rows]
    assert rows and all("inv_freq" in r for r in rows)
    assert all(g.count == len(g.rows) for g in page.tables["named_buffers()"])
    long, _ = page_of(view(), "llama_tiny", "meta", "x" * 1000, True)
    assert len(long.q) == MAX_FILTER


def test_a_full_size_architecture_has_no_round_trip() -> None:
    page, status = page_of(view(), "llama_8b", "meta", "", True)
    assert status == 200 and page.roundtrip is None


def test_refusals_are_said_in_the_pages_language() -> None:
    for lang in (EN, ZH):
        off, status = page_of(view(lang), "llama_tiny", "meta", "", False)
        assert (status, off.error) == (404, OFF[lang])
        unknown, status = page_of(view(lang), "nope", "meta", "", True)
        try:
            get("nope")
        except Exception as exc:  # the catalogue's own refusal
            assert (status, unknown.error) == (404, exc.text(lang))


def test_output_shapes_show_identical_blocks_once() -> None:
    page, _ = page_of(view(), "llama_8b", "meta", "", True, {"batch": "1", "tokens": "64"})
    rows = page.shape_rows()
    shapes = {m.path: m for m in page.plan.shapes}
    assert set(direct_modules("llama_8b")) - set(shapes) == {"model.layers"}  # a ModuleList is never called
    names = [name for name, _, _ in rows]
    assert "model.layers.{0..31}.mlp.up_proj" in names and not any("layers.1." in n for n in names)
    for name, m, count in rows:
        if "{0..31}" in name:
            assert count == 32
            for k in range(32):  # every layer returned what its first did
                other = shapes[name.replace("{0..31}", str(k))]
                assert (other.class_name, other.shapes) == (m.class_name, m.shapes)
        else:
            assert count == 1 and name == m.path
    assert sum(count for _, _, count in rows) == len(shapes)


def direct_modules(arch_id: str) -> list[str]:
    return [n for n, _ in direct(arch_id).named_modules()]
