"""The classroom's routes: the lesson player (``/lessons``), and follow mode: a teacher's class, its
join link and QR code, students who joined following over Server-Sent Events, and their votes. Thin
handlers over the broker (``app.classroom.broker``) and the page models (``app.classroom.page``).

A change reaches students as one event naming the new state; every student's page then fetches
``/follow?room=<code>&state=...&lang=...``, the same URL for the whole class, which the HTTP cache
answers after the first: a change costs the server one render per language, not one per student.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from functools import lru_cache
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

import segno
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from app.classroom.broker import Broker
from app.classroom.lessons import lessons
from app.classroom.page import (
    BLOCKS,
    INDEX,
    ROOM_PAGE,
    STEP_PAGE,
    JoinLink,
    Shown,
    StepError,
    lab_html,
    read_shown,
    read_step,
    revealed_state,
    room_context,
    step_context,
    step_url,
    view_query,
    whole,
)
from app.classroom.rooms import (
    ClassError,
    Event,
    NoSuchRoom,
    NotTeacher,
    Refused,
    Room,
    is_teacher,
    issue_student,
    new_token,
    normalise,
    not_a_student,
    valid_student,
)
from app.errors import Refusal
from app.lab.deps import lab_bounds
from app.lab.query import Bounds
from app.langs import LANGS, Text
from app.settings import Settings
from app.web.deps import OffloadDep, SettingsDep, offload
from app.web.html import VARY, View, ViewDep, render, respond
from app.web.origin import check_origin

pages = APIRouter(include_in_schema=False)
TEACHER_COOKIE = "mre_teacher"
STUDENT_COOKIE = "mre_student"
FOLLOW = "/follow"  # what a class's students see of a state: one URL for all, cached
# The state a class's page showed before the one it asks for: its lab's changes are marked.
Before = Annotated[str, Query(alias="from", max_length=2048)]


async def shown_off_loop(
    request: Request, state: str, lang: str | None, bounds: Bounds, before: str = ""
) -> Shown:
    """What a state shows (and, for a page in ``lang``, its lab rendered, marked against the state
    shown ``before``), read off the event loop: both are remembered, so the page made next finds
    them at once."""

    def read() -> Shown:
        shown = read_shown(state, bounds)
        if lang is not None:
            lab_html(shown.url, lang, bounds, before)
        return shown

    return await offload(request).run(read)


def broker(request: Request) -> Broker:
    return request.app.state.classroom


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def join_link(request: Request, settings: Settings, code: str) -> JoinLink:
    """The address students open: MRE_CLASS_URL's, else this server's own socket address as the
    teacher's connection reached it (never the Host header a client wrote); flagged when it is a
    loopback address, which no student's device can open."""
    if settings.class_url:
        base = settings.class_url.rstrip("/")
    else:
        host, port = request.scope.get("server") or ("127.0.0.1", None)
        scheme = request.scope.get("scheme", "http")
        shown_host = f"[{host}]" if ":" in str(host) else str(host)
        default = {"http": 80, "https": 443}.get(scheme)
        base = f"{scheme}://{shown_host}" + (f":{port}" if port and port != default else "")
    return JoinLink(f"{base}/rooms/{code}", _loopback(urlsplit(base).hostname or ""))


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def class_origin(request: Request) -> None:
    """A state-changing class request must come from this site's own pages (or the join link's)."""
    check_origin(request, request.app.state.settings.class_url)


async def room_page(
    request: Request,
    view: View,
    settings: Settings,
    room: Room,
    teacher: bool,
    student: str | None,
    before: str = "",
) -> dict:
    # What the room shows is read (torch, if no one asked before) and rendered off the event loop.
    await shown_off_loop(request, room.state, view.lang, lab_bounds(settings), before)
    join = join_link(request, settings, room.code)
    bounds = lab_bounds(settings)
    return await room_context(broker(request), join, view, bounds, room, teacher, student, before)


def page(
    view: View, context: dict, block: str, status: int = 200, headers: dict | None = None
) -> HTMLResponse:
    body = render(view.lang, ROOM_PAGE, context, (block,) if view.htmx else None)
    return HTMLResponse(body, status, headers={"Vary": VARY, "Cache-Control": "no-store", **(headers or {})})


def error_page(view: View, exc: Refusal) -> HTMLResponse:
    """A class that cannot be shown (no such room, not the teacher, a cap, Redis down): why, in the
    page's language, and the join form."""
    context = {"view": view, "langs": LANGS, "rv": None, "error": exc.text(view.lang), "status": exc.status}
    return HTMLResponse(
        render(view.lang, ROOM_PAGE, context), exc.status, headers={"Cache-Control": "no-store"}
    )


def step_error_page(view: View, exc: Refusal) -> HTMLResponse:
    """A step URL that names no step: why, and the list of lessons."""
    context = {"view": view, "langs": LANGS, "error": exc.text(view.lang), "lessons": lessons()}
    return HTMLResponse(render(view.lang, INDEX, context), exc.status)


# The pages this feature shows its refusals on, by path (app.web.errors renders the rest).
ERROR_PAGES = (
    ("/rooms", error_page),
    ("/join", error_page),
    (FOLLOW, error_page),
    ("/lessons", step_error_page),
)


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
            raise not_a_code(code)
        return await b.room(normal)
    except NoSuchRoom:
        await b.failed(client)
        raise


def not_a_code(code: str) -> NoSuchRoom:
    return NoSuchRoom(
        Text("{code!r} is not a class code: 8 letters and digits, like ABCD-EFGH", code=code[:20])
    )


async def _teacher(request: Request, code: str) -> Room:
    room = await _room(request, code)
    if not is_teacher(room, request.cookies.get(TEACHER_COOKIE)):
        raise NotTeacher(
            Text("only the teacher who started this class can drive it (the token is in their browser)")
        )
    return room


def _student(request: Request, room: Room) -> str | None:
    """The student id this browser holds for ``room``, if the room issued it."""
    student = request.cookies.get(STUDENT_COOKIE)
    return student if valid_student(room, student) else None


def view_of_state(state: str, view: View) -> View:
    """The view a teacher starts a class in: the language and projector mode of the page they
    started it from (its state URL carries them), unless the request chose its own."""
    query = dict(parse_qsl(urlsplit(state).query))
    lang = view.lang if view.lang_chosen else query.get("lang", "")
    chosen = view.lang_chosen or lang in LANGS
    return View(
        lang=lang if lang in LANGS else view.lang,
        lang_chosen=chosen,
        present=view.present or query.get("present") == "1",
        htmx=False,
    )


@pages.post("/rooms")
async def start_class(
    request: Request, view: ViewDep, settings: SettingsDep, state: Annotated[str, Form()] = "/"
) -> Response:
    class_origin(request)
    shown_state = await shown_off_loop(request, state, None, lab_bounds(settings))
    token = new_token()
    room = await broker(request).create(token, shown_state.url, client_of(request))
    where = f"/rooms/{room.code}/teach{view_query(view_of_state(state, view))}"
    response = RedirectResponse(where, 303)
    response.set_cookie(TEACHER_COOKIE, token, path=f"/rooms/{room.code}", httponly=True, samesite="strict")
    return response


@pages.get("/rooms/{code}/teach", response_class=HTMLResponse)
async def console(
    code: str, request: Request, view: ViewDep, settings: SettingsDep, before: Before = ""
) -> Response:
    room = await _teacher(request, code)
    return page(view, await room_page(request, view, settings, room, True, None, before), "console")


@pages.post("/rooms/{code}/state")
async def set_state(
    code: str, request: Request, view: ViewDep, settings: SettingsDep, state: Annotated[str, Form()] = ""
) -> Response:
    class_origin(request)
    room = await _teacher(request, code)
    bounds = lab_bounds(settings)
    shown_state = await shown_off_loop(request, state, None, bounds)
    # A step revealed once stays revealed: going back to it shows the answer, and its vote stays shut.
    again = revealed_state(shown_state, room.revealed)
    if again != shown_state.url:
        shown_state = await shown_off_loop(request, again, None, bounds)
    key = shown_state.step_key if shown_state.step and shown_state.step.revealed else ""
    room = await broker(request).set_state(room.code, shown_state.url, revealed=key)
    if not view.htmx:
        return RedirectResponse(f"/rooms/{room.code}/teach{view_query(view)}", 303)
    return page(view, await room_page(request, view, settings, room, True, None), "console")


@pages.post("/rooms/{code}/end")
async def end_class(code: str, request: Request, view: ViewDep) -> Response:
    """The teacher ends the class: gone for everyone at once, its slot free; the teacher goes on
    alone with what the class was shown."""
    class_origin(request)
    room = await _teacher(request, code)
    await broker(request).end(room.code)
    response = RedirectResponse(with_view_of(room.state, view), 303)
    response.delete_cookie(TEACHER_COOKIE, path=f"/rooms/{room.code}")
    return response


def with_view_of(url: str, view: View) -> str:
    query = view_query(view)
    return url + ("&" + query[1:] if query and "?" in url else query)


@lru_cache(maxsize=64)
def qr_svg(url: str) -> bytes:
    out = io.BytesIO()
    segno.make(url, error="m").save(out, kind="svg", scale=8, border=2)
    return out.getvalue()


@pages.get("/rooms/{code}/qr.svg")
async def qr_code(code: str, request: Request, settings: SettingsDep) -> Response:
    room = await _room(request, code)
    svg = qr_svg(join_link(request, settings, room.code).url)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@pages.get("/join", response_class=HTMLResponse)
async def join_form(request: Request, view: ViewDep, code: str = "") -> Response:
    if not code:
        return page(view, {"view": view, "langs": LANGS, "rv": None, "error": None, "join": True}, "follow")
    room = await _room(request, code)
    return RedirectResponse(f"/rooms/{room.code}{view_query(view)}", 303)


@pages.post("/join")
async def join_by_code(request: Request, view: ViewDep, code: Annotated[str, Form()] = "") -> Response:
    """The join form's code: joined at once (the form was the click)."""
    class_origin(request)
    return await _join(request, view, await _room(request, code))


@pages.post("/rooms/{code}/join")
async def join(code: str, request: Request, view: ViewDep) -> Response:
    """The one click that makes a student: a signed id of this room, kept in a cookie of its path."""
    class_origin(request)
    return await _join(request, view, await _room(request, code))


async def _join(request: Request, view: View, room: Room) -> Response:
    response = RedirectResponse(f"/rooms/{room.code}{view_query(view)}", 303)
    student = _student(request, room)
    if student is None:
        student = issue_student(room)
        response.set_cookie(
            STUDENT_COOKIE, student, path=f"/rooms/{room.code}", httponly=True, samesite="lax"
        )
    await broker(request).join(room.code, student, client_of(request))
    return response


@pages.get("/rooms/{code}", response_class=HTMLResponse)
async def follow(code: str, request: Request, view: ViewDep, settings: SettingsDep) -> Response:
    """A student's page of the class; before they joined, the join page (a visit is not a join)."""
    room = await _room(request, code)
    student = _student(request, room)
    if student is None:
        context = {"view": view, "langs": LANGS, "rv": None, "error": None, "invite": room}
        context["invite_lang_url"] = lambda lang: f"/rooms/{room.code}?lang={lang}"
        return page(view, context, "follow")
    return page(view, await room_page(request, view, settings, room, False, student), "follow")


@pages.get(FOLLOW, response_class=HTMLResponse)
async def followed(
    request: Request,
    view: ViewDep,
    settings: SettingsDep,
    room: str = "",
    state: str = "",
    before: Before = "",
) -> Response:
    """What every student of a class sees of ``state``, a lab marked against the state the page
    showed ``before`` (``from``): a pure function of the URL (no cookie, no store read), so the whole
    class's refetch after a change is one render and then cache hits."""
    normal = normalise(room)
    if normal is None:
        raise not_a_code(room)
    bounds = lab_bounds(settings)
    shown_state = await shown_off_loop(request, state, view.lang, bounds, before)
    shown_room = Room(normal, "", shown_state.url, 0)
    join = join_link(request, settings, normal)
    context = await room_context(broker(request), join, view, bounds, shown_room, False, None, before)
    body = render(view.lang, ROOM_PAGE, context, ("follow",))
    return HTMLResponse(body, headers={"Vary": VARY})


@pages.post("/rooms/{code}/vote", response_class=HTMLResponse)
async def vote(
    code: str,
    request: Request,
    view: ViewDep,
    settings: SettingsDep,
    step: Annotated[str, Form()] = "",
    choice: Annotated[str, Form()] = "",
) -> Response:
    class_origin(request)
    room = await _room(request, code)
    student = _student(request, room)
    if student is None:
        raise not_a_student()
    number = await check_vote(request, room, step, choice, settings)
    await broker(request).vote(room.code, step, student, number)
    if not view.htmx:
        return RedirectResponse(f"/rooms/{room.code}{view_query(view)}", 303)
    return Response(status_code=204)  # the page marks the choice itself


async def check_vote(request: Request, room: Room, step: str, choice: str, settings: Settings) -> int:
    shown_state = await shown_off_loop(request, room.state, None, lab_bounds(settings))
    if not shown_state.voting or step != shown_state.step_key:
        raise Refused(
            Text("voting on this step is closed: the class has moved on, or the answer is revealed")
        )
    assert shown_state.step and shown_state.step.step.question
    number = whole(choice)
    if number is None or number >= len(shown_state.step.step.question.choices):
        raise Refused(Text("choice {choice} is not one of this question's choices", choice=choice[:20]))
    return number


def sse(kind: str, data: dict, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


@pages.get("/rooms/{code}/events")
async def events(code: str, request: Request, settings: SettingsDep) -> Response:
    room = await _room(request, code)
    b, client = broker(request), client_of(request)
    teacher = is_teacher(room, request.cookies.get(TEACHER_COOKIE))
    if not teacher and _student(request, room) is None:
        raise not_a_student()
    b.hub.check(client)  # the caps, before the answer starts: a real 409 or 503
    step = ""
    if teacher:  # the step whose votes the console shows (a later one's page is fetched anew)
        step = (await shown_off_loop(request, room.state, None, lab_bounds(settings))).step_key
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    stream = event_stream(b, room.code, client, settings, student=not teacher, step=step)
    return StreamingResponse(stream, headers=headers, media_type="text/event-stream")


def _data(e: Event) -> dict:
    if e.kind == "state":
        return {"version": e.version, "state": e.state}
    if e.kind == "ended":
        return {"version": e.version}
    data = {"version": e.version, "step": e.step, "votes": e.votes, "students": e.students, "live": e.live}
    return data | ({"counts": list(e.counts)} if e.kind == "tally" else {})


async def event_stream(
    b: Broker, code: str, client: str, settings: Settings, student: bool, step: str = ""
) -> AsyncIterator[bytes]:
    """A room's events: its whole current state first (on every connection and reconnection; a
    console's with the counts of joined and open pages, and the tally of its ``step``),
    then each change; a comment when idle; closed after class_stream_seconds (the client's
    EventSource reconnects), so no stream is held for ever. A student's open stream counts them
    as here now (the console's live count)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.class_stream_seconds
    try:
        async with b.hub.stream(code, client, student) as subscriber:
            yield b"retry: 2000\n\n"
            now = await b.room(code)
            subscriber.version = max(subscriber.version, now.version)
            yield sse("state", {"version": now.version, "state": now.state}, now.version)
            if student:
                await b.opened(code, subscriber.key)
            else:  # a console that reconnects missed the joins and closes of its gap: the counts now
                counts = Event("students", code, now.version, students=now.students, live=now.live)
                yield sse("students", _data(counts))
                if step:
                    tally = await _counted_now(b, Event("tally", code, now.version, step=step))
                    yield sse("tally", _data(tally))
            try:
                while loop.time() < deadline:
                    got = await subscriber.next(
                        min(settings.class_heartbeat_seconds, max(deadline - loop.time(), 0))
                    )
                    if not got:
                        yield b": ping\n\n"
                    for e in got:
                        e = e if student else await _counted_now(b, e)
                        yield sse(e.kind, _data(e), e.version if e.kind == "state" else None)
                        if e.kind == "ended":
                            return
            finally:
                if student:
                    await asyncio.shield(_closed(b, code, subscriber.key))
    except ClassError as exc:  # the room ended, or the store went away: the client retries
        yield sse("ended" if isinstance(exc, NoSuchRoom) else "unavailable", {"detail": exc.message})


async def _counted_now(b: Broker, e: Event) -> Event:
    """A console's counts as they are now, not as the event carried them. Events from several
    processes reach a stream in the order they were published, not written (two votes' tallies can
    cross), and one published just before the stream subscribed can arrive after its snapshot: a
    count read when the event arrives is never older than the one shown."""
    if e.kind == "students":
        now = await b.room(e.code)
        return replace(e, students=now.students, live=now.live)
    if e.kind == "tally":
        tally = await b.tally(e.code, e.step)
        return replace(e, votes=tally.total, counts=tally.listed())
    return e


async def _closed(b: Broker, code: str, key: str) -> None:
    with contextlib.suppress(ClassError):  # the room ended or the store is away: the count goes too
        await b.closed(code, key)
