"""Shared fixtures: an in-process client for the app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


@pytest.fixture(scope="session")
def class_servers() -> Iterator[tuple]:
    """Redis and two app processes for the class tests, here and in the browser (started once)."""
    from tests.classroom.servers import class_servers as start

    with start() as servers:
        yield servers
