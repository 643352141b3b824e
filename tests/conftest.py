"""Shared fixtures: an in-process client for the app, checkpoints written by real libraries, the
class servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.support.checkpoints import Case, make_cases
from tests.support.corpus import Entry, make_corpus


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


@pytest.fixture(scope="session")
def class_servers() -> Iterator[tuple]:
    """Redis and two app processes for the class tests, here and in the browser (started once)."""
    from tests.support.class_servers import class_servers as start

    with start() as servers:
        yield servers


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """Checkpoints written by real libraries, once per session for every test that needs them."""
    return make_cases(tmp_path_factory.mktemp("doctor"))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Entry]:
    """The doctor's corpus (tests/support/corpus.py): files as the libraries write them, with what
    mre must answer for each, written once per session."""
    return make_corpus(tmp_path_factory.mktemp("corpus"))
