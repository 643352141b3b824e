"""Rooms: a class that follows its teacher. A short code names it, a secret token lets one person
drive it, a snapshot (the URL of what the teacher shows, and its version) is what students see.

Codes are 8 characters from 31 that cannot be misread (no 0/O, 1/I/L): about 40 bits, so that with
the room cap and the rate limit on failed joins a guess is hopeless. Only the token's digest is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from app.errors import Refusal
from app.langs import Text

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8


class ClassError(Refusal):
    """A class request refused, with the HTTP status that says why and a text naming the limit."""

    status = 400


class NoSuchRoom(ClassError):
    status = 404


class NotTeacher(ClassError):
    status = 403


class Full(ClassError):
    status = 503  # the server's caps: rooms, streams


class Refused(ClassError):
    status = 409  # the room's caps and rules: students, votes, a closed vote


class TooManyFailures(ClassError):
    status = 429

    @classmethod
    def after(cls, limit: int, window: float) -> TooManyFailures:
        return cls(
            Text(
                "{limit} failed joins from your address in {window:g} s; wait a minute",
                limit=limit,
                window=window,
            )
        )


class Unavailable(ClassError):
    """The store is unreachable (Redis down): class features wait, the lab goes on."""

    status = 503


def no_such_room(code: str) -> NoSuchRoom:
    return NoSuchRoom(Text("no class with the code {code}: it ended, or the code is mistyped", code=code))


def rooms_cap(rooms: int) -> Full:
    return Full(Text("this server runs {rooms} classes, its cap (MRE_CLASS_MAX_ROOMS)", rooms=rooms))


def rooms_per_client_cap(cap: int) -> Refused:
    return Refused(
        Text(
            "{cap} classes were started from your address and are still open"
            " (MRE_CLASS_MAX_ROOMS_PER_CLIENT)",
            cap=cap,
        )
    )


def class_full(students: int) -> Refused:
    return Refused(
        Text("this class is full: {students} students (MRE_CLASS_MAX_STUDENTS)", students=students)
    )


def votes_cap(votes: int) -> Refused:
    return Refused(Text("this class has {votes} votes, its cap (MRE_CLASS_MAX_VOTES)", votes=votes))


def not_joined() -> Refused:
    return Refused(Text("join the class before voting"))


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalise(text: str) -> str | None:
    """A code as typed (lower case, a dash or spaces between the halves), or None if it is none."""
    code = "".join(text.split()).replace("-", "").upper()  # never cut: one too many is no code
    return code if len(code) == CODE_LENGTH and all(c in ALPHABET for c in code) else None


def shown(code: str) -> str:
    """The code as the projector shows it: two halves, easy to read out."""
    return f"{code[:4]}-{code[4:]}"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_teacher(room: Room, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(room.token_digest, digest(token))


@dataclass(frozen=True)
class Room:
    code: str
    token_digest: str
    state: str  # the URL (path and query) of what the teacher shows
    version: int  # bumped by every change of state: what a student has, compared on reconnect
    students: int = 0


@dataclass(frozen=True)
class Tally:
    """The votes on one step: how many chose each choice (by its index), and the total."""

    step: str
    counts: dict[int, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def of(self, choices: int) -> list[int]:
        return [self.counts.get(i, 0) for i in range(choices)]


@dataclass(frozen=True)
class Event:
    """What a room's subscribers are told (``kind``): its state changed ("state"), a vote came
    ("tally"), a student joined ("students")."""

    kind: str
    code: str
    version: int
    state: str = ""
    step: str = ""
    votes: int = 0
    students: int = 0
