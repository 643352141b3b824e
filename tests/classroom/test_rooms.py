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
    ("make", "status", "english"),
    [
        (lambda: rooms.no_such_room("ABCDEFGH"), 404, "no class with the code ABCDEFGH: it ended"),
        (lambda: rooms.rooms_cap(3), 503, "this server runs 3 classes, its cap (MRE_CLASS_MAX_ROOMS)"),
        (lambda: rooms.rooms_per_client_cap(2), 409, "You already have 2 classes open"),
        (lambda: rooms.joins_per_client_cap(3), 409, "3 students have joined this class from your address"),
        (lambda: rooms.not_a_student(), 403, "join the class first"),
        (lambda: rooms.class_full(30), 409, "this class is full: 30 students (MRE_CLASS_MAX_STUDENTS)"),
        (lambda: rooms.votes_cap(9), 409, "this class has 9 votes, its cap (MRE_CLASS_MAX_VOTES)"),
        (lambda: rooms.not_joined(), 409, "join the class before voting"),
        (lambda: rooms.TooManyFailures.after(20, 60.0), 429, "20 failed joins from your address in 60 s"),
    ],
)
def test_each_refusal_has_its_status_its_numbers_and_its_chinese(make, status: int, english: str) -> None:
    refusal = make()  # made inside the test, so that mutation testing sees which test runs it
    assert refusal.status == status and refusal.message.startswith(english)
    assert refusal.text(ZH) != refusal.message
    numbers = [w for w in english.replace(":", " ").split() if w.isdigit()]
    assert all(n in refusal.text(ZH) for n in numbers)


def test_a_teachers_token_is_256_random_bits() -> None:
    tokens = {rooms.new_token() for _ in range(50)}
    assert len(tokens) == 50 and {len(t) for t in tokens} == {43}  # 32 bytes, URL-safe base64
