"""Rooms: codes hard to misread and to guess, a teacher known by a token's digest only, a tally, and
each refusal with its status and its words in every language."""

from __future__ import annotations

import pytest

from app.classroom import rooms
from app.classroom.rooms import (
    ALPHABET,
    CODE_LENGTH,
    Room,
    Tally,
    digest,
    is_teacher,
    new_code,
    normalise,
    shown,
)
from app.langs import ZH


def test_codes_are_of_letters_that_cannot_be_misread() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200 and all(len(c) == CODE_LENGTH and set(c) <= set(ALPHABET) for c in codes)
    assert not set("01OIL") & set(ALPHABET)


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("ABCD-EFGH", "ABCDEFGH"),
        (" abcd efgh ", "ABCDEFGH"),
        ("ABCDEFGH", "ABCDEFGH"),
        ("ABCDEFGHJ", None),  # one character too long: refused, not cut to length
        ("ABCDEFG", None),
        ("ABCD-EFG0", None),  # a 0 is never in a code
        ("", None),
    ],
)
def test_a_code_as_typed(typed: str, code: str | None) -> None:
    assert normalise(typed) == code


def test_the_projector_shows_a_code_in_two_halves() -> None:
    assert shown("ABCDEFGH") == "ABCD-EFGH"


def test_the_teacher_is_known_by_the_digest_of_a_secret_token() -> None:
    room = Room("ABCDEFGH", digest("secret"), "/", 1)
    assert is_teacher(room, "secret") and not is_teacher(room, "guess") and not is_teacher(room, None)
    assert "secret" not in room.token_digest


def test_a_tally_counts_each_choice() -> None:
    tally = Tally("l:1", {0: 2, 2: 1})
    assert tally.total == 3 and tally.of(3) == [2, 0, 1] and tally.of(1) == [2]


@pytest.mark.parametrize(
    ("refusal", "status"),
    [
        (rooms.no_such_room("ABCDEFGH"), 404),
        (rooms.rooms_cap(3), 503),
        (rooms.rooms_per_client_cap(2), 409),
        (rooms.class_full(30), 409),
        (rooms.votes_cap(9), 409),
        (rooms.not_joined(), 409),
        (rooms.TooManyFailures.after(20, 60.0), 429),
    ],
)
def test_each_refusal_has_its_status_and_its_chinese(refusal: rooms.ClassError, status: int) -> None:
    assert refusal.status == status and refusal.text(ZH) != refusal.message
