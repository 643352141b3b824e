"""Follow mode: a teacher's class, its join URL and QR code, students following over Server-Sent
Events, and their votes. Thin handlers over ``app.classroom`` (the broker) and the lesson player.

What a room shows is a URL of this site: a lesson step (``/lessons/<id>?step=N``, ``&reveal=1``
once revealed) or a lab (``/?preset=...``). Students see it rendered here, read-only, and leave
for the real page to explore on their own.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit

import segno
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from markupsafe import Markup

from app import lessons_page, pages
from app.classroom.rooms import (
    ClassError,
    Event,
    NoSuchRoom,
    NotTeacher,
    Refused,
    Room,
    Tally,
    is_teacher,
    new_token,
    normalise,
    shown,
)
from app.deps import SettingsDep
from app.html import VARY, View, ViewDep, render
from app.lab.langs import LANGS
from app.lab.spec import SpecError
from app.settings import Settings

router = APIRouter(include_in_schema=False)
PAGE = "room.html"
TEACHER_COOKIE = "mre_teacher"
STUDENT_COOKIE = "mre_student"
MAX_STATE = 2048  # a lab permalink is a few hundred bytes


class BadState(ClassError):
    status = 422


def broker(request: Request):
    return request.app.state.classroom


BrokerDep = Annotated[object, Depends(broker)]


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@dataclass(frozen=True)
class Shown:
    """What a room's state URL shows: a lesson step, or a lab."""

    url: str  # canonical, as students may open it themselves
    step: lessons_page.StepPage | None
    lab: pages.LabPage | None

    @property
    def step_key(self) -> str:
        """The step votes are counted for (lesson and number); empty for a lab."""
        return f"{self.step.lesson.id}:{self.step.number}" if self.step else ""

    @property
    def voting(self) -> bool:
        return bool(self.step and self.step.step.question and not self.step.revealed)


@lru_cache(maxsize=256)
def read_shown(state: str, max_elements: int) -> Shown:
    """The state a teacher sets, checked and canonical; anything else is a 422 naming it.

    Remembered (a pure function of the URL, like a report): every student's page reads it again
    after each change, so torch runs once per state, not once per student."""
    if len(state) > MAX_STATE:
        raise BadState(f"the state is a URL of at most {MAX_STATE} characters")
    parts = urlsplit(state)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("lang", "present")
    ]
    try:
        if parts.path.startswith("/lessons/"):
            lesson_id = parts.path.removeprefix("/lessons/")
            step = lessons_page.read_step(lesson_id, dict(query), max_elements)
            extra = {"reveal": "1"} if step.revealed and step.step.question else {}
            url = f"/lessons/{lesson_id}?" + urlencode({"step": str(step.number), **extra})
            return Shown(url, step, None)
        if parts.path == "/":
            lab = pages.read_page(query, pages_view(), None, max_elements)
            return Shown(pages.link(lab.spec, pages_view(), lab.experiment_pairs), None, lab)
    except lessons_page.StepError as exc:
        raise BadState(exc.message) from None
    except SpecError as exc:
        raise BadState(f"the state's lab: {exc.message}") from None
    raise BadState("the state is a lesson step (/lessons/<id>?step=N) or a lab (/?preset=...)")


def pages_view() -> View:
    return View(lang="en", lang_chosen=False, present=False, htmx=False)


@dataclass(frozen=True)
class RoomView:
    """A room as one page shows it: to its teacher (the console) or to a student."""

    room: Room
    teacher: bool
    join_url: str
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
    def vote_url(self) -> str:
        return f"/rooms/{self.code}/vote{self.lang_query}"


def join_url(request: Request, settings: Settings, code: str) -> str:
    """The address students open: MRE_CLASS_URL's when set (the projector's own may be loopback)."""
    base = settings.class_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}/rooms/{code}"


async def room_context(
    request: Request, view: View, settings: Settings, room: Room, teacher: bool, student: str | None
) -> dict:
    shown_state = read_shown(room.state, settings.custom_max_elements)
    b = broker(request)
    key = shown_state.step_key
    tally: Tally | None = await b.tally(room.code, key) if teacher and shown_state.step else None
    vote = await b.vote_of(room.code, key, student) if student and key else None
    lang_query = view_query(view)
    rv = RoomView(
        room, teacher, join_url(request, settings, room.code), vote, shown_state.voting, key, lang_query
    )
    context = {"view": view, "langs": LANGS, "rv": rv, "shown": shown_state, "error": None}
    if shown_state.step:
        step = shown_state.step
        revealed = lab_html(room.state, view.lang, settings.custom_max_elements) if step.revealed else None
        step_ctx = lessons_page.step_context(step, view, room=rv, lab_html=revealed)
        if tally is not None and step.step.question:
            step_ctx["tally"] = {"counts": tally.of(len(step.step.question.choices)), "total": tally.total}
        context.update(step_ctx)
        context["controls"] = teacher_controls(step) if teacher else None
    else:
        context["lab_snapshot"] = lab_html(room.state, view.lang, settings.custom_max_elements)
    context["own_url"] = with_view(shown_state.url, view)
    context["rv"] = rv
    return context


@lru_cache(maxsize=256)
def lab_html(state: str, lang: str, max_elements: int) -> Markup:
    """What a state shows of the lab, read-only, rendered once per state and language."""
    shown_state = read_shown(state, max_elements)
    view = View(lang=lang, lang_chosen=False, present=False, htmx=False)
    if shown_state.step:
        return lessons_page.lab_html(shown_state.step, view)
    assert shown_state.lab is not None
    return Markup(
        render(lang, pages.PAGE, pages.context(view, shown_state.lab), ("results", "more")).decode()
    )


def view_query(view: View) -> str:
    pairs = [("lang", view.lang)] if view.lang_chosen else []
    pairs += [("present", "1")] if view.present else []
    return "?" + urlencode(pairs) if pairs else ""


def with_view(url: str, view: View) -> str:
    pairs = [("lang", view.lang)] if view.lang_chosen else []
    pairs += [("present", "1")] if view.present else []
    return url + ("&" + urlencode(pairs) if pairs else "")


def teacher_controls(step: lessons_page.StepPage) -> dict[str, str | None]:
    """The states the console's buttons set: the steps either side, and this one revealed."""
    lesson, n = step.lesson, step.number
    base = f"/lessons/{lesson.id}?step="
    return {
        "prev": f"{base}{n - 1}" if n > 1 else None,
        "next": f"{base}{n + 1}" if n < len(lesson.steps) else None,
        "reveal": f"{base}{n}&reveal=1" if step.step.question and not step.revealed else None,
    }


def page(
    view: View, context: dict, block: str, status: int = 200, headers: dict | None = None
) -> HTMLResponse:
    body = render(view.lang, PAGE, context, (block,) if view.htmx else None)
    return HTMLResponse(body, status, headers={"Vary": VARY, "Cache-Control": "no-store", **(headers or {})})


def error_page(request: Request, exc: ClassError) -> HTMLResponse:
    view = View(lang="en", lang_chosen=False, present=False, htmx=False)
    context = {"view": view, "langs": LANGS, "rv": None, "error": exc.message}
    return HTMLResponse(render(view.lang, PAGE, context), exc.status, headers={"Cache-Control": "no-store"})


async def _room(request: Request, code: str) -> Room:
    """The room of a code from the URL; a code that names none counts as a failed join."""
    b, client = broker(request), client_of(request)
    await b.check_failures(client)
    normal = normalise(code)
    try:
        if normal is None:
            raise NoSuchRoom(f"{code[:20]!r} is not a class code: 8 letters and digits, like ABCD-EFGH")
        return await b.room(normal)
    except NoSuchRoom:
        await b.failed(client)
        raise


async def _teacher(request: Request, code: str) -> Room:
    room = await _room(request, code)
    if not is_teacher(room, request.cookies.get(TEACHER_COOKIE)):
        raise NotTeacher(
            "only the teacher who started this class can drive it (the token is in their browser)"
        )
    return room


@router.post("/rooms")
async def start_class(
    request: Request, settings: SettingsDep, state: Annotated[str, Form()] = "/"
) -> Response:
    shown_state = read_shown(state, settings.custom_max_elements)
    token = new_token()
    room = await broker(request).create(token, shown_state.url, client_of(request))
    response = RedirectResponse(f"/rooms/{room.code}/teach", 303)
    response.set_cookie(TEACHER_COOKIE, token, path=f"/rooms/{room.code}", httponly=True, samesite="strict")
    return response


@router.get("/rooms/{code}/teach", response_class=HTMLResponse)
async def console(code: str, request: Request, view: ViewDep, settings: SettingsDep) -> Response:
    room = await _teacher(request, code)
    return page(view, await room_context(request, view, settings, room, True, None), "console")


@router.post("/rooms/{code}/state")
async def set_state(
    code: str, request: Request, view: ViewDep, settings: SettingsDep, state: Annotated[str, Form()]
) -> Response:
    room = await _teacher(request, code)
    room = await broker(request).set_state(room.code, read_shown(state, settings.custom_max_elements).url)
    if not view.htmx:
        return RedirectResponse(f"/rooms/{room.code}/teach{view_query(view)}", 303)
    return page(view, await room_context(request, view, settings, room, True, None), "console")


@router.get("/rooms/{code}/qr.svg")
async def qr_code(code: str, request: Request, settings: SettingsDep) -> Response:
    room = await _room(request, code)
    out = io.BytesIO()
    segno.make(join_url(request, settings, room.code), error="m").save(out, kind="svg", scale=8, border=2)
    return Response(out.getvalue(), media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.get("/join", response_class=HTMLResponse)
async def join_form(request: Request, view: ViewDep, code: str = "") -> Response:
    if not code:
        return page(view, {"view": view, "langs": LANGS, "rv": None, "error": None, "join": True}, "follow")
    room = await _room(request, code)
    return RedirectResponse(f"/rooms/{room.code}", 303)


@router.get("/rooms/{code}", response_class=HTMLResponse)
async def follow(code: str, request: Request, view: ViewDep, settings: SettingsDep) -> Response:
    room = await _room(request, code)
    student = request.cookies.get(STUDENT_COOKIE) or new_token()
    room = await broker(request).join(room.code, student)
    response = page(view, await room_context(request, view, settings, room, False, student), "follow")
    if STUDENT_COOKIE not in request.cookies:  # a random id, nothing about the student
        response.set_cookie(STUDENT_COOKIE, student, path="/rooms", httponly=True, samesite="lax")
    return response


@router.post("/rooms/{code}/vote", response_class=HTMLResponse)
async def vote(
    code: str,
    request: Request,
    view: ViewDep,
    settings: SettingsDep,
    step: Annotated[str, Form(max_length=200)],
    choice: Annotated[int, Form(ge=0, le=63)],
) -> Response:
    room = await _room(request, code)
    student = request.cookies.get(STUDENT_COOKIE)
    if not student:
        raise Refused("open the class's join link before voting")
    await check_vote(room, step, choice, settings)
    await broker(request).vote(room.code, step, student, choice)
    if not view.htmx:
        return RedirectResponse(f"/rooms/{room.code}{view_query(view)}", 303)
    return page(view, await room_context(request, view, settings, room, False, student), "follow")


async def check_vote(room: Room, step: str, choice: int, settings: Settings) -> None:
    shown_state = read_shown(room.state, settings.custom_max_elements)
    if not shown_state.voting or step != shown_state.step_key:
        raise Refused("voting on this step is closed: the class has moved on, or the answer is revealed")
    assert shown_state.step and shown_state.step.step.question
    if choice >= len(shown_state.step.step.question.choices):
        raise Refused(f"choice {choice} is not one of this question's choices")


def sse(kind: str, data: dict, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


@router.get("/rooms/{code}/events")
async def events(code: str, request: Request, settings: SettingsDep) -> Response:
    room = await _room(request, code)
    b, client = broker(request), client_of(request)
    b.hub.check(client)  # the caps, before the answer starts: a real 409 or 503
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    stream = event_stream(b, room.code, client, settings)
    return StreamingResponse(stream, headers=headers, media_type="text/event-stream")


def _data(e: Event) -> dict:
    if e.kind == "state":
        return {"version": e.version, "state": e.state}
    return {"version": e.version, "step": e.step, "votes": e.votes, "students": e.students}


async def event_stream(b, code: str, client: str, settings: Settings) -> AsyncIterator[bytes]:
    """A room's events: its whole current state first (on every connection and reconnection),
    then each change; a comment when idle; closed after class_stream_seconds (the client's
    EventSource reconnects), so no stream is held for ever."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.class_stream_seconds
    try:
        async with b.hub.stream(code, client) as subscriber:
            yield b"retry: 2000\n\n"
            now = await b.room(code)
            subscriber.version = max(subscriber.version, now.version)
            yield sse("state", {"version": now.version, "state": now.state}, now.version)
            while loop.time() < deadline:
                got = await subscriber.next(
                    min(settings.class_heartbeat_seconds, max(deadline - loop.time(), 0))
                )
                if not got:
                    yield b": ping\n\n"
                for e in got:
                    yield sse(e.kind, _data(e), e.version if e.kind == "state" else None)
    except ClassError as exc:  # the room ended, or the store went away: the client retries
        yield sse("unavailable", {"detail": exc.message})
