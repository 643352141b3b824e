"""The README and docs/ name only what a clone has, and every lesson permalink opens its lab."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
SERVER = "http://127.0.0.1:8000"


def links(doc: Path) -> list[str]:
    return LINK.findall(doc.read_text())


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_linked_files_exist(doc: Path) -> None:
    files = [t for t in links(doc) if not t.startswith(("http://", "https://", "#"))]
    assert [t for t in files if not (doc.parent / t.partition("#")[0]).exists()] == []


def test_every_lesson_permalink_opens_its_lab(client: TestClient) -> None:
    permalinks = [t.removeprefix(SERVER) for t in links(ROOT / "README.md") if t.startswith(SERVER)]
    assert len(permalinks) >= 8
    for path in permalinks:
        response = client.get(path)
        assert response.status_code == 200, path
        assert 'id="members-table"' in response.text, path
