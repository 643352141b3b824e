"""Shared fixtures: an in-process client for the app, checkpoints written by real libraries, the
class servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.support.checkpoints import Case, make_cases
from tests.support.corpus import Entry, make_corpus
from tests.support.texts import every_sentence_translated


@pytest.fixture(autouse=True)
def every_sentence_said(request: pytest.FixtureRequest) -> Iterator[None]:
    """Any sentence a test has this process put in Chinese has its catalog entry (else gettext says it
    in English, silently). Tests of untranslatable words on purpose are marked ``made_up_words``."""
    if request.node.get_closest_marker("made_up_words"):
        yield
        return
    with every_sentence_translated():
        yield


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> Iterator[object]:
    """The same check on what a module or session fixture says while it is set up (a corpus of
    reports read once for many tests): the autouse fixture above only hears the tests themselves."""
    if fixturedef.scope == "function":
        return (yield)
    with every_sentence_translated():
        return (yield)


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


@pytest.fixture(scope="module")
def quiet() -> TestClient:
    # Server errors come back as responses, as a browser would see them, not as raised exceptions.
    # The room routes are called with a made-up code many times over: no rate limit on failed joins.
    return TestClient(
        create_app(Settings(class_failed_joins_per_minute=1_000_000)), raise_server_exceptions=False
    )


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server of this test session's own, on a free loopback port."""
    from tests.support.browser import free_port
    from tests.support.class_servers import redis_server

    with redis_server(free_port()) as server:
        yield server.url


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Entry]:
    """The doctor's corpus (tests/support/corpus.py): files as the libraries write them, with what
    mre must answer for each, written once per session."""
    return make_corpus(tmp_path_factory.mktemp("corpus"))
