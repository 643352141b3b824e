"""Checkpoints written by real libraries, once per session for every test that needs them."""

from __future__ import annotations

import pytest

from tests.checkpoints.doctor_files import Case, make_cases


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    return make_cases(tmp_path_factory.mktemp("doctor"))
