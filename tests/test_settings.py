"""All configuration in one place: read from the environment with the MRE_ prefix, each field typed,
a frame-ancestors source that could break its header refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings


def test_each_setting_comes_from_its_mre_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRE_CUSTOM_MAX_ELEMENTS", "12")
    monkeypatch.setenv("MRE_CHECKPOINTS", "false")
    monkeypatch.setenv("MRE_CLASS_EXPIRY_SECONDS", "1.5")
    settings = Settings()
    assert (settings.custom_max_elements, settings.checkpoints, settings.class_expiry_seconds) == (
        12,
        False,
        1.5,
    )
    assert Settings(custom_max_elements=3).custom_max_elements == 3  # an argument beats the environment


def test_a_setting_of_the_wrong_type_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRE_PORT", "eighty")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    "value", ["'self'", "https://slides.example.org", "https://*.example.org:8443 'self'"]
)
def test_frame_ancestors_takes_csp_sources(value: str) -> None:
    assert Settings(frame_ancestors=value).frame_ancestors == value


@pytest.mark.parametrize(
    "value", ["https://a.org; script-src *", "javascript:alert(1)", "https://a.org\r\nX: y"]
)
def test_frame_ancestors_that_could_end_the_directive_or_the_header_is_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(frame_ancestors=value)
