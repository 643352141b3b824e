"""A pytest plugin for ``make mutants``: every test that uses a module or session fixture is credited
with the app functions that fixture's setup called.

mutmut picks the tests to run against a mutant by the functions each test called in its stats run,
counted from a test's start to its teardown. A fixture shared by many tests (the doctor's corpus of
44 reports) is set up once, during the first of them: only that test was credited, so a mutant in a
function only the fixture calls ran the first test alone, and the checks of all the others never saw
it ("survived").
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mutmut.state import state

_called: dict[int, set[str]] = {}  # id of a fixture's definition -> functions its setups called


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> Iterator[object]:
    if fixturedef.scope == "function":  # set up for each test anew: credited to it already
        return (yield)
    before = set(state()._stats)
    state()._stats.clear()
    try:
        return (yield)
    finally:
        _called.setdefault(id(fixturedef), set()).update(state()._stats)
        state()._stats.update(before)


@pytest.hookimpl(tryfirst=True)  # before mutmut's own teardown hook reads what the test called
def pytest_runtest_teardown(item: pytest.Item) -> None:
    definitions = item._fixtureinfo.name2fixturedefs  # type: ignore[attr-defined]
    for name in item.fixturenames:  # type: ignore[attr-defined]
        for fixturedef in definitions.get(name, ()):
            state()._stats.update(_called.get(id(fixturedef), ()))
