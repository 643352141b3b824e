"""The classroom's page models: a lesson step (``/lessons/<id>?step=N``: the lab page's own
pipeline, marked against the step before it, its question's facts hidden until the reveal) and a
room as its teacher or a student sees it (what the room's state URL shows, the vote, the tally).

What a room shows is a URL of this site: a lesson step (``&reveal=1`` once revealed) or a lab
(``/?preset=...``). Students see it rendered here, read-only, and leave for the real page to explore
on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urlsplit

from markupsafe import Markup, escape

from app.classroom.broker import Broker
from app.classroom.facts import LabState, outcome_message
from app.classroom.lessons import Answer, Lesson, Question, Step, answer, lessons
from app.classroom.rooms import ClassError, Room, Tally, shown
from app.classroom.why import Why, explain, recap
from app.errors import Refusal
from app.lab import page as pages
from app.lab.query import Bounds, read
from app.lab.spec import LabSpec, SpecError
from app.langs import EN, LANGS, Text, catalog
from app.web.html import View, render

STEP_PAGE = "classroom/lesson.html"
INDEX = "classroom/lessons.html"
BLOCKS = ("lesson",)
LAB_BLOCKS = ("results", "more")  # what a revealed step shows of its lab


class StepError(Refusal):
    """A step URL that names no step: 404 for an unknown lesson, 422 for a bad step number."""

    def __init__(self, status: int, text: Text) -> None:
        super().__init__(text, status=status)


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
    why: Why | None  # the answer in words and its reason, once revealed
    recap: tuple[tuple[Question, Why], ...] = ()  # the last step, revealed: every question's answer
    next_lesson: Lesson | None = None  # the lesson after this one (file-name order); None after the last


MAX_DIGITS = 6  # of a step or a choice number: far over any lesson, and no huge int() ever made


def whole(text: str) -> int | None:
    """A whole number as a URL spells it (ASCII digits, leading zeros allowed), or None."""
    digits = text.lstrip("0") or ("0" if text else "")
    if not (digits.isascii() and digits.isdigit() and len(digits) <= MAX_DIGITS):
        return None
    return int(digits)


def _number(text: str | None, lesson: Lesson) -> int:
    last = len(lesson.steps)
    if text is None:
        return 1
    number = whole(text)
    if number is None or not 1 <= number <= last:
        raise StepError(
            422, Text("step must be a whole number from 1 to {last}, not {text!r}", last=last, text=text[:20])
        )
    return number


def _choice(text: str | None, step: Step) -> int | None:
    count = len(step.question.choices) if step.question else 0
    number = whole(text) if text is not None else None
    return number if number is not None and number < count else None  # naming no choice: no prediction


def read_step(lesson_id: str, query: dict[str, str], bounds: Bounds, reveal: bool = False) -> StepPage:
    """The page model of one step; ``reveal`` forces the answer shown (a class after its reveal)."""
    lesson = lessons().get(lesson_id)
    if lesson is None:
        raise StepError(
            404,
            Text(
                "no lesson {lesson_id!r}; lessons: {names}",
                lesson_id=lesson_id[:80],
                names=", ".join(lessons()),
            ),
        )
    number = _number(query.get("step"), lesson)
    step = lesson.steps[number - 1]
    # Read strictly, as lessons are checked; shown as an htmx swap from the step before (every fact
    # that changed is marked with its old value); its experiment run once, for the lab and the facts.
    previous = read(parse_qsl(lesson.steps[number - 2].state), bounds).spec if number > 1 else None
    lab = pages.lab_page(read(parse_qsl(step.state), bounds), _swap_view(), previous)
    state = LabState(step.state, lab.spec, lab.report, lab.matrix, lab.experiment)
    revealed = step.question is None or reveal or query.get("reveal") == "1"
    q = step.question
    ids = list(lessons())
    later = ids[ids.index(lesson.id) + 1 :]
    last = number == len(lesson.steps)
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
        why=explain(q.fact, state) if q and revealed else None,
        recap=recap(lesson, bounds) if last and revealed else (),
        next_lesson=lessons()[later[0]] if later else None,
    )


def _swap_view() -> View:
    return View(lang="en", lang_chosen=False, present=False, htmx=True)


def step_url(lesson_id: str, number: int, view: View, **extra: str) -> str:
    pairs = [("step", str(number)), *extra.items()]
    pairs += [("lang", view.lang)] if view.lang_chosen else []
    pairs += [("present", "1")] if view.present else []
    return f"/lessons/{lesson_id}?{urlencode(pairs)}"


def step_lab_html(page: StepPage, view: View) -> Markup:
    """The revealed lab: lab.html's own blocks, rendered as a full page renders them."""
    shown = replace(view, htmx=False)
    blocks = LAB_BLOCKS if page.lab.experiment is None else ("results", "experiment_controls", "more")
    return Markup(render(view.lang, pages.PAGE, pages.context(shown, page.lab), blocks).decode())


def said(text: Text, lang: str, glossary: str) -> Markup:
    """A why's sentence in ``lang`` as HTML: names in code, its key term (``{term}``) a link to the
    lab's glossary entry (``glossary`` is its URL; empty for no link)."""
    words = text.message if lang == EN else catalog(lang).gettext(text.message)
    if not text.values:
        return escape(words)
    values: dict[str, object] = {}
    for key, value in text.values.items():
        shown = value[lang] if isinstance(value, Text) else value
        if key == "term" and glossary:
            values[key] = Markup('<a class="term" href="{}">{}</a>').format(glossary, shown)
        elif key in ("member", "line", "step"):
            values[key] = Markup("<code>{}</code>").format(shown)
        else:
            values[key] = shown
    return escape(words).format(**values)


def step_context(page: StepPage, view: View, **extra: object) -> dict:
    lesson, n = page.lesson, page.number
    if "lab_html" not in extra:
        extra["lab_html"] = step_lab_html(page, view) if page.revealed else None
    # A view toggle keeps what this page shows: the answer once revealed, and the prediction made.
    kept = {"reveal": "1"} if page.revealed and page.step.question else {}
    kept |= {"choice": str(page.chosen)} if page.chosen is not None else {}
    # The glossary sits at the foot of the lab page (hidden in projector mode: linked without it).
    lab = pages.link(page.lab.spec, replace(view, present=False), page.lab.experiment_pairs)
    why = page.why
    following = page.next_lesson
    return {
        "view": view,
        "langs": LANGS,
        "page": page,
        "lesson": lesson,
        "code_lines": pages.code_lines(page.lab.report),
        # Before the reveal, the module as the step before left it: the reveal moves its chips.
        "before_picture": pages.picture(page.lab.before, view.lang)
        if not page.revealed and page.lab.before is not None
        else None,
        "lab_link": pages.link(page.lab.spec, view, page.lab.experiment_pairs),
        "prev_url": step_url(lesson.id, n - 1, view) if n > 1 else None,
        "next_url": step_url(lesson.id, n + 1, view) if n < len(lesson.steps) else None,
        "url": lambda **extra: step_url(lesson.id, n, view, **extra),
        "lang_url": lambda lang: step_url(lesson.id, n, replace(view, lang=lang, lang_chosen=True), **kept),
        "present_url": step_url(lesson.id, n, replace(view, present=not view.present), **kept),
        "reason": said(why.reason, view.lang, f"{lab}#g-{why.term}" if why.term else "") if why else None,
        "next_lesson_url": step_url(following.id, 1, view) if following else None,
        "room": None,
        **extra,
    }


ROOM_PAGE = "classroom/room.html"
MAX_STATE = 2048  # a lab permalink is a few hundred bytes


class BadState(ClassError):
    status = 422


@dataclass(frozen=True)
class Shown:
    """What a room's state URL shows: a lesson step, or a lab."""

    url: str  # canonical, as students may open it themselves
    step: StepPage | None
    lab: pages.LabPage | None

    @property
    def step_key(self) -> str:
        """The step votes are counted for (lesson and number); empty for a lab."""
        return f"{self.step.lesson.id}:{self.step.number}" if self.step else ""

    @property
    def voting(self) -> bool:
        return bool(self.step and self.step.step.question and not self.step.revealed)


@lru_cache(maxsize=256)
def read_shown(state: str, bounds: Bounds) -> Shown:
    """The state a teacher sets, checked and canonical; anything else is a 422 naming it.

    Remembered (a pure function of the URL, like a report): every student's page reads it again
    after each change, so torch runs once per state, not once per student."""
    if len(state) > MAX_STATE:
        raise BadState(Text("the state is a URL of at most {most} characters", most=MAX_STATE))
    parts = urlsplit(state)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("lang", "present")
    ]
    try:
        if parts.path.startswith("/lessons/"):
            lesson_id = parts.path.removeprefix("/lessons/")
            step = read_step(lesson_id, dict(query), bounds)
            extra = {"reveal": "1"} if step.revealed and step.step.question else {}
            url = f"/lessons/{lesson_id}?" + urlencode({"step": str(step.number), **extra})
            return Shown(url, step, None)
        if parts.path == "/":
            lab = pages.read_page(query, pages_view(), None, bounds)
            return Shown(pages.link(lab.spec, pages_view(), lab.experiment_pairs), None, lab)
    except StepError as exc:
        raise BadState(exc.words) from None
    except SpecError as exc:
        raise BadState(Text("the state's lab: {error}", error=exc.words)) from None
    raise BadState(Text("the state is a lesson step (/lessons/<id>?step=N) or a lab (/?preset=...)"))


def pages_view() -> View:
    return View(lang="en", lang_chosen=False, present=False, htmx=False)


def revealed_state(shown_state: Shown, revealed: frozenset[str]) -> str:
    """The state to show for ``shown_state`` in a room whose steps ``revealed`` were revealed: a
    step shown again after its reveal is shown revealed (its vote stays closed)."""
    step = shown_state.step
    if step and step.step.question and not step.revealed and shown_state.step_key in revealed:
        return shown_state.url + "&reveal=1"
    return shown_state.url


@dataclass(frozen=True)
class JoinLink:
    """The address a class's students open, and whether it is a loopback one (no student's
    device reaches it: the console warns)."""

    url: str
    loopback: bool


@dataclass(frozen=True)
class RoomView:
    """A room as one page shows it: to its teacher (the console) or to a student."""

    room: Room
    teacher: bool
    join: JoinLink
    vote: int | None  # this student's vote on the step shown
    voting: bool
    step_key: str
    lang_query: str  # ?lang=...&present=1: the view the URL chose, kept in the room's own links

    @property
    def code(self) -> str:
        return self.room.code

    @property
    def shown_code(self) -> str:
        return shown(self.room.code)

    @property
    def join_url(self) -> str:
        return self.join.url

    @property
    def vote_url(self) -> str:
        return f"/rooms/{self.code}/vote{self.lang_query}"

    def console_url(self, view: View) -> str:
        return f"/rooms/{self.code}/teach{view_query(view)}"


async def room_context(
    b: Broker,
    join: JoinLink,
    view: View,
    bounds: Bounds,
    room: Room,
    teacher: bool,
    student: str | None,
    before: str = "",
) -> dict:
    """What room.html shows of a room: to its teacher (``teacher``) or a student (``student``'s id);
    a lab state marked against the state the page showed ``before`` (what moved, where it was)."""
    shown_state = read_shown(room.state, bounds)
    key = shown_state.step_key
    tally: Tally | None = await b.tally(room.code, key) if teacher and shown_state.step else None
    vote = await b.vote_of(room.code, key, student) if student and key else None
    lang_query = view_query(view)
    rv = RoomView(room, teacher, join, vote, shown_state.voting, key, lang_query)
    context = {"view": view, "langs": LANGS, "rv": rv, "shown": shown_state, "error": None}
    if shown_state.step:
        step = shown_state.step
        revealed = lab_html(room.state, view.lang, bounds) if step.revealed else None
        step_ctx = step_context(step, view, room=rv, lab_html=revealed)
        if tally is not None and step.step.question:
            step_ctx["tally"] = {"counts": tally.of(len(step.step.question.choices)), "total": tally.total}
        context.update(step_ctx)
        context["controls"] = teacher_controls(step) if teacher else None
    else:
        context["lab_snapshot"] = lab_html(room.state, view.lang, bounds, before)
    context["own_url"] = with_view(shown_state.url, view)
    context["rv"] = rv
    if teacher:  # the console's own toggles: language and projector mode, the class unchanged
        context["console_lang_url"] = lambda lang: rv.console_url(replace(view, lang=lang, lang_chosen=True))
        context["console_present_url"] = rv.console_url(replace(view, present=not view.present))
    return context


@lru_cache(maxsize=256)
def lab_html(state: str, lang: str, bounds: Bounds, before: str = "") -> Markup:
    """What a state shows of the lab, read-only, rendered once per state and language; a lab marked
    against the lab state a page showed ``before`` (a lesson step is marked against its step before)."""
    shown_state = read_shown(state, bounds)
    view = View(lang=lang, lang_chosen=False, present=False, htmx=False)
    if shown_state.step:
        return step_lab_html(shown_state.step, view)
    assert shown_state.lab is not None
    lab = shown_state.lab
    previous = _lab_before(before, bounds)
    if previous is not None:
        lab = pages.lab_page(lab.query, view, previous)
    return Markup(render(lang, pages.PAGE, pages.context(view, lab), ("results", "more")).decode())


def _lab_before(before: str, bounds: Bounds) -> LabSpec | None:
    """The spec of the lab state a page showed before, if it was one (else nothing to mark)."""
    if not before:
        return None
    try:
        earlier = read_shown(before, bounds)
    except BadState:
        return None
    return earlier.lab.spec if earlier.lab is not None else None


def view_query(view: View) -> str:
    pairs = [("lang", view.lang)] if view.lang_chosen else []
    pairs += [("present", "1")] if view.present else []
    return "?" + urlencode(pairs) if pairs else ""


def with_view(url: str, view: View) -> str:
    pairs = [("lang", view.lang)] if view.lang_chosen else []
    pairs += [("present", "1")] if view.present else []
    return url + ("&" + urlencode(pairs) if pairs else "")


def teacher_controls(step: StepPage) -> dict[str, str | None]:
    """The states the console's buttons set: the steps either side, and this one revealed."""
    lesson, n = step.lesson, step.number
    base = f"/lessons/{lesson.id}?step="
    return {
        "prev": f"{base}{n - 1}" if n > 1 else None,
        "next": f"{base}{n + 1}" if n < len(lesson.steps) else None,
        "reveal": f"{base}{n}&reveal=1" if step.step.question and not step.revealed else None,
    }
