"""The classroom's routes: the lesson player (``/lessons``), and follow mode: a teacher's class, its
join URL and QR code, students following over Server-Sent Events, and their votes. Thin handlers
over the broker (``app.classroom.broker``) and the page models (``app.classroom.page``)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Annotated

import segno
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from app.classroom.broker import Broker
from app.classroom.lessons import lessons
from app.classroom.page import (
    BLOCKS,
    INDEX,
    ROOM_PAGE,
    STEP_PAGE,
    Shown,
    StepError,
    lab_html,
    read_shown,
    read_step,
    room_context,
    step_context,
    step_url,
    view_query,
)
from app.classroom.rooms import (
    ClassError,
    Event,
    NoSuchRoom,
    NotTeacher,
    Refused,
    Room,
    is_teacher,
    new_token,
    normalise,
)
from app.errors import Refusal
from app.lab.deps import lab_bounds
from app.lab.query import Bounds
from app.langs import LANGS, Text
from app.settings import Settings
from app.web.deps import OffloadDep, SettingsDep, offload
from app.web.html import VARY, View, ViewDep, render, respond

pages = APIRouter(include_in_schema=False)
TEACHER_COOKIE = "mre_teacher"
STUDENT_COOKIE = "mre_student"


async def shown_off_loop(request: Request, state: str, lang: str | None, bounds: Bounds) -> Shown:
    """What a state shows (and, for a page in ``lang``, its lab rendered), read off the event loop:
    both are remembered, so the page made next finds them at once."""

    def read() -> Shown:
        shown = read_shown(state, bounds)
        if lang is not None:
            lab_html(shown.url, lang, bounds)
        return shown

    return await offload(request).run(read)


def broker(request: Request) -> Broker:
    return request.app.state.classroom


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def join_url(request: Request, settings: Settings, code: str) -> str:
    """The address students open: MRE_CLASS_URL's when set (the projector's own may be loopback)."""
    base = settings.class_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}/rooms/{code}"


async def room_page(
    request: Request, view: View, settings: Settings, room: Room, teacher: bool, student: str | None
) -> dict:
    # What the room shows is read (torch, if no one asked before) and rendered off the event loop.
    await shown_off_loop(request, room.state, view.lang, lab_bounds(settings))
    join = join_url(request, settings, room.code)
    return await room_context(broker(request), join, view, lab_bounds(settings), room, teacher, student)


def page(
    view: View, context: dict, block: str, status: int = 200, headers: dict | None = None
) -> HTMLResponse:
    body = render(view.lang, ROOM_PAGE, context, (block,) if view.htmx else None)
    return HTMLResponse(body, status, headers={"Vary": VARY, "Cache-Control": "no-store", **(headers or {})})


def error_page(view: View, exc: Refusal) -> HTMLResponse:
    """A class that cannot be shown (no such room, not the teacher, a cap, Redis down): why, in the
    page's language, and the join form."""
    context = {"view": view, "langs": LANGS, "rv": None, "error": exc.text(view.lang)}
    return HTMLResponse(
        render(view.lang, ROOM_PAGE, context), exc.status, headers={"Cache-Control": "no-store"}
    )


def step_error_page(view: View, exc: Refusal) -> HTMLResponse:
    """A step URL that names no step: why, and the list of lessons."""
    context = {"view": view, "langs": LANGS, "error": exc.text(view.lang), "lessons": lessons()}
    return HTMLResponse(render(view.lang, INDEX, context), exc.status)


# The pages this feature shows its refusals on, by path (app.web.errors renders the rest).
ERROR_PAGES = (("/rooms", error_page), ("/join", error_page), ("/lessons", step_error_page))


@pages.get("/lessons", response_class=HTMLResponse)
async def lesson_index(view: ViewDep) -> Response:
    return respond(view, INDEX, {"view": view, "langs": LANGS, "lessons": lessons(), "error": None}, ())


@pages.get("/lessons/{lesson_id}", response_class=HTMLResponse)
async def lesson_step(
    lesson_id: str, request: Request, view: ViewDep, settings: SettingsDep, offload: OffloadDep
) -> Response:
    query = dict(request.query_params)
    return await offload.run(_lesson_step, lesson_id, query, view, lab_bounds(settings))


def _lesson_step(lesson_id: str, query: dict[str, str], view: View, bounds: Bounds) -> Response:
    """A step's answer: read, run torch, render; off the event loop (``lesson_step``)."""
    try:
        page = read_step(lesson_id, query, bounds)
    except StepError as exc:
        return step_error_page(view, exc)
    shown = {"reveal": "1"} if page.revealed and page.step.question else {}
    shown |= {"choice": str(page.chosen)} if page.chosen is not None else {}
    url = step_url(lesson_id, page.number, view, **shown)
    return respond(view, STEP_PAGE, step_context(page, view), BLOCKS, headers={"HX-Push-Url": url})


async def _room(request: Request, code: str) -> Room:
    """The room of a code from the URL; a code that names none counts as a failed join."""
    b, client = broker(request), client_of(request)
    await b.check_failures(client)
    normal = normalise(code)
    try:
        if normal is None:
            raise NoSuchRoom(
                Text("{code!r} is not a class code: 8 letters and digits, like ABCD-EFGH", code=code[:20])
            )
        return await b.room(normal)
    except NoSuchRoom:
        await b.failed(client)
        raise


async def _teacher(request: Request, code: str) -> Room:
    room = await _room(request, code)
    if not is_teacher(room, request.cookies.get(TEACHER_COOKIE)):
        raise NotTeacher(
            Text("only the teacher who started this class can drive it (the token is in their browser)")
        )
    return room


@pages.post("/rooms")
async def start_class(
    request: Request, settings: SettingsDep, state: Annotated[str, Form()] = "/"
) -> Response:
    shown_state = await shown_off_loop(request, state, None, lab_bounds(settings))
    token = new_token()
    room = await broker(request).create(token, shown_state.url, client_of(request))
    response = RedirectResponse(f"/rooms/{room.code}/teach", 303)
    response.set_cookie(TEACHER_COOKIE, token, path=f"/rooms/{room.code}", httponly=True, samesite="strict")
    return response


@pages.get("/rooms/{code}/teach", response_class=HTMLResponse)
async def console(code: str, request: Request, view: ViewDep, settings: SettingsDep) -> Response:
    room = await _teacher(request, code)
    return page(view, await room_page(request, view, settings, room, True, None), "console")


@pages.post("/rooms/{code}/state")
async def set_state(
    code: str, request: Request, view: ViewDep, settings: SettingsDep, state: Annotated[str, Form()]
) -> Response:
    room = await _teacher(request, code)
    shown_state = await shown_off_loop(request, state, None, lab_bounds(settings))
    room = await broker(request).set_state(room.code, shown_state.url)
    if not view.htmx:
        return RedirectResponse(f"/rooms/{room.code}/teach{view_query(view)}", 303)
    return page(view, await room_page(request, view, settings, room, True, None), "console")


@pages.get("/rooms/{code}/qr.svg")
async def qr_code(code: str, request: Request, settings: SettingsDep) -> Response:
    room = await _room(request, code)
    out = io.BytesIO()
    segno.make(join_url(request, settings, room.code), error="m").save(out, kind="svg", scale=8, border=2)
    return Response(out.getvalue(), media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@pages.get("/join", response_class=HTMLResponse)
async def join_form(request: Request, view: ViewDep, code: str = "") -> Response:
    if not code:
        return page(view, {"view": view, "langs": LANGS, "rv": None, "error": None, "join": True}, "follow")
    room = await _room(request, code)
    return RedirectResponse(f"/rooms/{room.code}", 303)


@pages.get("/rooms/{code}", response_class=HTMLResponse)
async def follow(code: str, request: Request, view: ViewDep, settings: SettingsDep) -> Response:
    room = await _room(request, code)
    student = request.cookies.get(STUDENT_COOKIE) or new_token()
    room = await broker(request).join(room.code, student)
    response = page(view, await room_page(request, view, settings, room, False, student), "follow")
    if STUDENT_COOKIE not in request.cookies:  # a random id, nothing about the student
        response.set_cookie(STUDENT_COOKIE, student, path="/rooms", httponly=True, samesite="lax")
    return response


@pages.post("/rooms/{code}/vote", response_class=HTMLResponse)
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
        raise Refused(Text("open the class's join link before voting"))
    await check_vote(room, step, choice, settings)
    await broker(request).vote(room.code, step, student, choice)
    if not view.htmx:
        return RedirectResponse(f"/rooms/{room.code}{view_query(view)}", 303)
    return page(view, await room_page(request, view, settings, room, False, student), "follow")


async def check_vote(room: Room, step: str, choice: int, settings: Settings) -> None:
    shown_state = read_shown(room.state, lab_bounds(settings))
    if not shown_state.voting or step != shown_state.step_key:
        raise Refused(
            Text("voting on this step is closed: the class has moved on, or the answer is revealed")
        )
    assert shown_state.step and shown_state.step.step.question
    if choice >= len(shown_state.step.step.question.choices):
        raise Refused(Text("choice {choice} is not one of this question's choices", choice=choice))


def sse(kind: str, data: dict, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


@pages.get("/rooms/{code}/events")
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
