"""The lesson player: ``/lessons/<id>?step=N``, one permalink per step, predict then reveal.

A step's lab is the lab page's own pipeline (``pages.read_page`` and the blocks of lab.html),
marked against the step before it; its question's facts stay hidden until the reveal, and the
answer is read from the live report (``app.classroom.lessons.answer``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from app import pages
from app.classroom.facts import LabState, outcome_message, read_state
from app.classroom.lessons import Answer, Lesson, Step, answer, lessons
from app.deps import SettingsDep
from app.html import View, ViewDep, render, respond
from app.lab import devices
from app.lab.langs import LANGS

router = APIRouter(include_in_schema=False)
PAGE = "lesson.html"
INDEX = "lessons.html"
BLOCKS = ("lesson",)
LAB_BLOCKS = ("results", "more")  # what a revealed step shows of its lab


class StepError(ValueError):
    """A step URL that names no step: 404 for an unknown lesson, 422 for a bad step number."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class StepPage:
    lesson: Lesson
    number: int  # 1-based
    step: Step
    state: LabState
    lab: pages.LabPage
    revealed: bool  # no question, or the reveal was asked for: the facts are shown
    answer: Answer | None
    chosen: int | None  # the prediction made on this device (alone, not in a class)
    message: str | None  # torch's whole message behind a refusal the question asks about


def _number(text: str | None, lesson: Lesson) -> int:
    last = len(lesson.steps)
    if text is None:
        return 1
    if not text.isascii() or not text.isdigit() or not 1 <= int(text[:6]) <= last:
        raise StepError(422, f"step must be a whole number from 1 to {last}, not {text[:20]!r}")
    return int(text)


def _choice(text: str | None, step: Step) -> int | None:
    count = len(step.question.choices) if step.question else 0
    if text is None or not text.isascii() or not text.isdigit() or int(text[:6]) >= count:
        return None  # a prediction that names no choice is no prediction
    return int(text)


def read_step(lesson_id: str, query: dict[str, str], max_elements: int, reveal: bool = False) -> StepPage:
    """The page model of one step; ``reveal`` forces the answer shown (a class after its reveal)."""
    lesson = lessons().get(lesson_id)
    if lesson is None:
        raise StepError(404, f"no lesson {lesson_id[:80]!r}; lessons: {', '.join(lessons())}")
    number = _number(query.get("step"), lesson)
    step = lesson.steps[number - 1]
    state = read_state(step.state, devices.device_ids(), max_elements)
    previous = "/?" + lesson.steps[number - 2].state if number > 1 else None
    # As an htmx swap from the step before: every fact that changed is marked with its old value.
    lab = pages.read_page(parse_qsl(step.state), _swap_view(), previous, max_elements)
    revealed = step.question is None or reveal or query.get("reveal") == "1"
    q = step.question
    return StepPage(
        lesson=lesson,
        number=number,
        step=step,
        state=state,
        lab=lab,
        revealed=revealed,
        answer=answer(q, state) if q and revealed else None,
        chosen=_choice(query.get("choice"), step),
        message=outcome_message(state, q.fact) if q and revealed else None,
    )


def _swap_view() -> View:
    return View(lang="en", lang_chosen=False, present=False, htmx=True)


def step_url(lesson_id: str, number: int, view: View, **extra: str) -> str:
    pairs = [("step", str(number)), *extra.items()]
    pairs += [("lang", view.lang)] if view.lang_chosen else []
    pairs += [("present", "1")] if view.present else []
    return f"/lessons/{lesson_id}?{urlencode(pairs)}"


def lab_html(page: StepPage, view: View) -> Markup:
    """The revealed lab: lab.html's own blocks, rendered as a full page renders them."""
    shown = replace(view, htmx=False)
    blocks = LAB_BLOCKS if page.lab.experiment is None else ("results", "experiment_controls", "more")
    return Markup(render(view.lang, pages.PAGE, pages.context(shown, page.lab), blocks).decode())


def step_context(page: StepPage, view: View, **extra: object) -> dict:
    lesson, n = page.lesson, page.number
    if "lab_html" not in extra:
        extra["lab_html"] = lab_html(page, view) if page.revealed else None
    return {
        "view": view,
        "langs": LANGS,
        "page": page,
        "lesson": lesson,
        "code_lines": pages.code_lines(page.lab.report),
        "lab_link": pages.link(page.lab.spec, view, page.lab.experiment_pairs),
        "prev_url": step_url(lesson.id, n - 1, view) if n > 1 else None,
        "next_url": step_url(lesson.id, n + 1, view) if n < len(lesson.steps) else None,
        "url": lambda **extra: step_url(lesson.id, n, view, **extra),
        "lang_url": lambda lang: step_url(lesson.id, n, replace(view, lang=lang, lang_chosen=True)),
        "present_url": step_url(lesson.id, n, replace(view, present=not view.present)),
        "room": None,
        **extra,
    }


def error_page(view: View, exc: StepError) -> HTMLResponse:
    context = {"view": view, "langs": LANGS, "error": exc.message, "lessons": lessons()}
    return HTMLResponse(render(view.lang, INDEX, context), exc.status)


@router.get("/lessons", response_class=HTMLResponse)
async def lesson_index(view: ViewDep) -> Response:
    return respond(view, INDEX, {"view": view, "langs": LANGS, "lessons": lessons(), "error": None}, ())


@router.get("/lessons/{lesson_id}", response_class=HTMLResponse)
async def lesson_step(lesson_id: str, request: Request, view: ViewDep, settings: SettingsDep) -> Response:
    try:
        page = read_step(lesson_id, dict(request.query_params), settings.custom_max_elements)
    except StepError as exc:
        return error_page(view, exc)
    shown = {"reveal": "1"} if page.revealed and page.step.question else {}
    shown |= {"choice": str(page.chosen)} if page.chosen is not None else {}
    url = step_url(lesson_id, page.number, view, **shown)
    return respond(view, PAGE, step_context(page, view), BLOCKS, headers={"HX-Push-Url": url})
