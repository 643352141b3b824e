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


class NotStudent(ClassError):
    status = 403  # no id this room issued: join first


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


class Ended(ClassError):
    status = 410  # the teacher ended it


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
            "You already have {cap} classes open, the most one address may have: end one on its"
            " console (End class), or wait for it to expire (MRE_CLASS_MAX_ROOMS_PER_CLIENT)",
            cap=cap,
        )
    )


def joins_per_client_cap(cap: int) -> Refused:
    return Refused(
        Text(
            "{cap} students have joined this class from your address, the most one address may add"
            " (MRE_CLASS_MAX_JOINS_PER_CLIENT)",
            cap=cap,
        )
    )


def not_a_student() -> NotStudent:
    return NotStudent(
        Text("join the class first: open its link and press Join (your student id is not this class's)")
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


def new_key() -> str:
    """A room's own secret, which signs the ids of its students."""
    return secrets.token_hex(16)


STUDENT_ID = 32  # hex digits of a student's random id; a signed id is that, a dot, and 32 more


def issue_student(room: Room) -> str:
    """A new student id for ``room``, signed by the room's key: only an explicit join makes one, and
    no other value (forged, another room's, any size) is taken for a student."""
    rid = secrets.token_hex(STUDENT_ID // 2)
    return f"{rid}.{_signature(room, rid)}"


def _signature(room: Room, rid: str) -> str:
    return hmac.new(room.student_key.encode(), f"{room.code}.{rid}".encode(), hashlib.sha256).hexdigest()[:32]


def valid_student(room: Room, student: str | None) -> bool:
    if not student or len(student) != 2 * STUDENT_ID + 1 or student[STUDENT_ID] != ".":
        return False
    rid, signature = student[:STUDENT_ID], student[STUDENT_ID + 1 :]
    return hmac.compare_digest(signature, _signature(room, rid))


@dataclass(frozen=True)
class Room:
    code: str
    token_digest: str
    state: str  # the URL (path and query) of what the teacher shows
    version: int  # bumped by every change of state: what a student has, compared on reconnect
    students: int = 0  # joined (each by an explicit join)
    student_key: str = ""  # signs its students' ids (issue_student)
    revealed: frozenset[str] = frozenset()  # the steps whose answer was shown: they stay revealed
    live: int = 0  # students whose page is open now (their event streams, in every process)


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

    def listed(self) -> tuple[int, ...]:
        """The counts by choice index, up to the last chosen (what an event carries)."""
        return tuple(self.of(max(self.counts, default=-1) + 1))


@dataclass(frozen=True)
class Event:
    """What a room's subscribers are told (``kind``): its state changed ("state"), a vote came
    ("tally"), a student joined or opened or closed their page ("students"), the class ended
    ("ended")."""

    kind: str
    code: str
    version: int
    state: str = ""
    step: str = ""
    votes: int = 0
    students: int = 0
    live: int = 0
    counts: tuple[int, ...] = ()  # a tally's, by choice: the console shows them without asking

    @classmethod
    def of(cls, data: dict) -> Event:
        """An event as JSON carried it (Redis pub/sub), unknown fields ignored."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "counts"}
        return cls(**known, counts=tuple(int(c) for c in data.get("counts") or ()))
