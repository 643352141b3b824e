"""Lessons as data: ``lessons/<id>.toml``, a sequence of steps, each a lab state (the lab's
permalink query), a short narrative and maybe a prediction question, in every UI language.

A question names a fact (``app.classroom.facts``) and lists choices; which choice is right is read
from the live report when the step is shown, never written in the file. ``check`` is what the
tests run over every lesson: each state resolves, each answer is derivable and unambiguous, and
every text is there in every language.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from app.classroom.facts import LabState, facts, read_state
from app.lab.query import Bounds
from app.lab.spec import SpecError
from app.langs import LANGS
from app.resources import resource_dir

Text = dict[str, str]  # language -> text


@dataclass(frozen=True)
class Choice:
    value: str  # a value of the question's fact, as facts.as_text writes it
    label: Text | None  # shown instead of the bare value (yes / no for true / false)


@dataclass(frozen=True)
class Question:
    text: Text
    fact: str
    choices: tuple[Choice, ...]

    def values(self) -> tuple[str, ...]:
        return tuple(c.value for c in self.choices)


@dataclass(frozen=True)
class Step:
    state: str  # the lab's query: preset=testmodel&device=meta&style.buffer1=buffer
    text: Text
    question: Question | None


@dataclass(frozen=True)
class Lesson:
    id: str
    title: Text
    summary: Text
    steps: tuple[Step, ...]


class LessonError(ValueError):
    """A lesson file that cannot be read as a lesson; the message names the file and the field."""


def _text(value: object, where: str) -> Text:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise LessonError(f"{where}: a table of texts by language ({', '.join(LANGS)})")
    return dict(value)


def _question(raw: dict, where: str) -> Question:
    choices = tuple(
        Choice(
            str(c["value"]).lower() if isinstance(c["value"], bool) else str(c["value"]),
            _text(c["label"], f"{where}.choices.label") if "label" in c else None,
        )
        for c in raw.get("choices", ())
    )
    return Question(_text(raw.get("text"), f"{where}.text"), str(raw.get("fact", "")), choices)


def parse(lesson_id: str, raw: dict) -> Lesson:
    steps = []
    for i, step in enumerate(raw.get("steps", ()), 1):
        where = f"{lesson_id} step {i}"
        question = _question(step["question"], f"{where} question") if "question" in step else None
        steps.append(Step(str(step.get("state", "")), _text(step.get("text"), f"{where} text"), question))
    title, summary = _text(raw.get("title"), "title"), _text(raw.get("summary"), "summary")
    return Lesson(lesson_id, title, summary, tuple(steps))


@cache
def lessons() -> dict[str, Lesson]:
    """Every lesson in ``lessons/``, by id (the file name), in file-name order."""
    found = {}
    for path in sorted(Path(resource_dir("lessons")).glob("*.toml")):
        with path.open("rb") as f:
            found[path.stem] = parse(path.stem, tomllib.load(f))
    return found


@dataclass(frozen=True)
class Answer:
    """A question's answer, read live: the fact's value and the choice that names it."""

    value: str
    choice: int | None  # index into the choices; None when no choice (or several) names it


def answer(question: Question, state: LabState) -> Answer:
    value = facts(state).get(question.fact, "")
    hits = [i for i, v in enumerate(question.values()) if v == value]
    return Answer(value, hits[0] if len(hits) == 1 else None)


def check(lesson: Lesson, bounds: Bounds) -> list[str]:
    """Everything wrong with a lesson, in words; empty when it can be taught."""
    problems = []
    texts = [("title", lesson.title), ("summary", lesson.summary)]
    if not lesson.steps:
        problems.append("no steps")
    for i, step in enumerate(lesson.steps, 1):
        where = f"step {i}"
        texts.append((where, step.text))
        try:
            state = read_state(step.state, bounds)
        except (SpecError, ValueError) as exc:
            problems.append(f"{where}: state {step.state!r}: {exc}")
            continue
        q = step.question
        if q is None:
            continue
        texts.append((f"{where} question", q.text))
        texts += [(f"{where} choice {c.value}", c.label) for c in q.choices if c.label is not None]
        known = facts(state)
        if q.fact not in known:
            problems.append(f"{where}: fact {q.fact!r} is not in the report; facts: {', '.join(known)}")
        elif len(set(q.values())) != len(q.values()) or len(q.choices) < 2:
            problems.append(f"{where}: at least two choices, each a different value")
        elif answer(q, state).choice is None:
            problems.append(f"{where}: torch says {known[q.fact]!r}, which no choice names")
    for where, text in texts:
        missing = [lang for lang in LANGS if not text.get(lang, "").strip()]
        if missing:
            problems.append(f"{where}: no text in {', '.join(missing)}")
    return problems
