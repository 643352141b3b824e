"""Rooms in one process: starting a class, who may drive it, joining (a click, never a visit),
votes by signed ids, ending it, what students are shown, and every cap."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import pytest
import segno
from fastapi.testclient import TestClient

from app.classroom import routes
from app.classroom.broker import Broker
from app.classroom.lessons import lessons
from app.classroom.page import MAX_STATE
from app.classroom.rooms import ALPHABET, CODE_LENGTH, Event
from app.main import create_app
from app.settings import Settings
from tests.support.brokers import BROKERS, Brokers
from tests.support.html import HX
from tests.support.html import parse as parse_html
from tests.support.reference import TUTORIAL_DEFAULTS, reference

LESSON = "/lessons/parameters-and-buffers"
STEP = "parameters-and-buffers:1"


def start(teacher: TestClient, state: str = LESSON + "?step=1") -> str:
    answer = teacher.post("/rooms", data={"state": state}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return answer.headers["location"].split("/")[2].split("?")[0]


def join(student: TestClient, code: str) -> None:
    answer = student.post(f"/rooms/{code}/join", follow_redirects=False)
    assert answer.status_code == 303, answer.text


def notice(answer) -> str:
    return parse_html(answer.text).find("section", class_="error").find("code").text


def vote(client: TestClient, code: str, choice: object, step: str = STEP, **kw):
    return client.post(f"/rooms/{code}/vote", data={"step": step, "choice": choice}, **kw)


def test_a_class_from_start_to_reveal() -> None:
    app = create_app(Settings(class_url="http://10.0.0.5:8000"))
    teacher, student, other = TestClient(app), TestClient(app), TestClient(app)
    started = teacher.post("/rooms", data={"state": LESSON + "?step=1&lang=zh-CN"}, follow_redirects=False)
    code = started.headers["location"].split("/")[2].split("?")[0]
    assert len(code) == CODE_LENGTH and set(code) <= set(ALPHABET)
    cookie = started.headers["set-cookie"]
    assert f"Path=/rooms/{code}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie

    console = parse_html(teacher.get(f"/rooms/{code}/teach").text).find("section", id="console")
    assert console.find(class_="room-code").find("strong").text == f"{code[:4]}-{code[4:]}"
    join_url = f"http://10.0.0.5:8000/rooms/{code}"
    assert console.find("p", class_="join-url").find("a").attrs["href"] == join_url
    assert not console.find_all(class_="warning")  # MRE_CLASS_URL is no loopback address
    svg, expected = teacher.get(f"/rooms/{code}/qr.svg"), io.BytesIO()
    segno.make(join_url, error="m").save(expected, kind="svg", scale=8, border=2)
    assert svg.headers["content-type"] == "image/svg+xml" and svg.content == expected.getvalue()

    # Only the teacher drives: no cookie, or a student's, is a 403 naming why.
    assert student.get(f"/rooms/{code}/teach").status_code == 403
    refused = other.post(f"/rooms/{code}/state", data={"state": LESSON + "?step=2"})
    assert refused.status_code == 403 and "only the teacher" in notice(refused)

    # A visit is not a join: the page offers the one click, and sets nothing.
    visit = student.get(f"/rooms/{code}")
    assert visit.status_code == 200 and "set-cookie" not in visit.headers
    assert parse_html(visit.text).find("form", action=f"/rooms/{code}/join")
    join(student, code)
    follow = student.get(f"/rooms/{code}")
    assert follow.status_code == 200 and follow.headers["cache-control"] == "no-store"
    page = parse_html(follow.text).find("section", id="follow")
    assert page.find("a", class_="detach").attrs["href"] == LESSON + "?step=1"
    assert not page.find_all(class_="answer") and not page.find_all(id="results")  # hidden till reveal
    join(other, code)
    for client, choice in ((student, 1), (other, 1), (student, 0)):  # a vote can change until reveal
        assert vote(client, code, choice, headers=HX).status_code == 204  # the page marks it itself
    (mine,) = [
        li
        for li in parse_html(student.get(f"/rooms/{code}").text).find_all("li")
        if "chosen" in li.attrs.get("class", "")
    ]
    assert mine.attrs["data-choice"] == "0"
    tally = parse_html(teacher.get(f"/rooms/{code}/teach").text)
    assert [int(c.text) for c in tally.find_all("span", class_="count")] == [1, 1]
    assert tally.find(class_="n-joined").text == "2"

    bad = vote(student, code, 5)
    assert bad.status_code == 409 and "not one of this question's choices" in notice(bad)
    wrong = vote(student, code, 0, step="parameters-and-buffers:2")
    assert wrong.status_code == 409 and "closed" in notice(wrong)
    for nonsense in ("x", "-1", "9" * 5000, ""):
        assert vote(student, code, nonsense).status_code == 409, nonsense

    revealed = teacher.post(f"/rooms/{code}/state", data={"state": LESSON + "?step=1&reveal=1"}, headers=HX)
    assert revealed.status_code == 200
    closed = vote(student, code, 1)
    assert closed.status_code == 409 and "closed" in notice(closed)
    shown = parse_html(student.get(f"/rooms/{code}").text)
    (right,) = [li for li in shown.find_all("li") if "right" in li.attrs.get("class", "").split()]
    assert right.find("code").text == "cpu" and "chosen" in right.attrs["class"]  # torch's answer, live
    assert [int(c.text) for c in parse_html(revealed.text).find_all("span", class_="count")] == [1, 1]

    lab = teacher.post(
        f"/rooms/{code}/state", data={"state": "/?preset=testmodel&device=meta&style.buffer1=buffer"}
    )
    assert lab.status_code == 200  # followed the redirect to the console
    followed = parse_html(student.get(f"/rooms/{code}").text)
    row = followed.find("table", id="members-table").find("tr", data_name="buffer1")
    assert row.attrs["data-style"] == "buffer"
    for state in ("/checkpoints", "/?preset=nope", LESSON + "?step=99", "x" * 3000):
        bad_state = teacher.post(f"/rooms/{code}/state", data={"state": state})
        assert bad_state.status_code == 422, state


def test_starting_from_a_projected_chinese_lesson_keeps_both() -> None:
    teacher = TestClient(create_app(Settings()))
    started = teacher.post(
        "/rooms", data={"state": LESSON + "?step=2&lang=zh-CN&present=1"}, follow_redirects=False
    )
    code = start_code(started)
    assert started.headers["location"] == f"/rooms/{code}/teach?lang=zh-CN&present=1"
    page = parse_html(teacher.get(started.headers["location"]).text)
    html = page.find("html").attrs
    assert html["lang"] == "zh-CN" and "present" in (html.get("class") or "")
    links = {a.text.strip(): a.attrs["href"] for a in page.find("section", id="console").find_all("a")}
    assert links["English"] == f"/rooms/{code}/teach?lang=en&present=1"  # the language toggle
    projector = next(href for text, href in links.items() if "投影" in text)
    assert projector == f"/rooms/{code}/teach?lang=zh-CN"  # projector mode off, the language kept
    state = teacher.post(
        f"/rooms/{code}/state?lang=zh-CN&present=1",
        data={"state": LESSON + "?step=3"},
        follow_redirects=False,
    )
    assert state.headers["location"] == f"/rooms/{code}/teach?lang=zh-CN&present=1"


def start_code(answer) -> str:
    return answer.headers["location"].split("/")[2].split("?")[0]


def test_the_join_form_and_link_keep_the_language() -> None:
    app = create_app(Settings())
    teacher, student = TestClient(app), TestClient(app)
    code = start(teacher)
    assert student.get(f"/join?code={code}&lang=zh-CN", follow_redirects=False).headers["location"] == (
        f"/rooms/{code}?lang=zh-CN"
    )
    joined = student.post("/join?lang=zh-CN", data={"code": code.lower()}, follow_redirects=False)
    assert joined.status_code == 303 and joined.headers["location"] == f"/rooms/{code}?lang=zh-CN"
    page = parse_html(student.get(joined.headers["location"]).text)
    assert page.find("html").attrs["lang"] == "zh-CN" and page.find("section", id="follow")


def test_a_reveal_stays_revealed_when_the_teacher_goes_back() -> None:
    app = create_app(Settings())
    teacher, student = TestClient(app), TestClient(app)
    code = start(teacher)
    join(student, code)
    teacher.post(f"/rooms/{code}/state", data={"state": LESSON + "?step=1&reveal=1"})
    teacher.post(f"/rooms/{code}/state", data={"state": LESSON + "?step=2"})
    back = teacher.post(f"/rooms/{code}/state", data={"state": LESSON + "?step=1"})  # Previous
    assert back.status_code == 200 and parse_html(back.text).find(class_="answer")
    assert vote(student, code, 1).status_code == 409  # the vote stays closed
    assert parse_html(student.get(f"/rooms/{code}").text).find(class_="answer")


def test_ending_a_class_ends_it_for_everyone_and_frees_the_teachers_slot() -> None:
    app = create_app(Settings(class_max_rooms_per_client=1))
    teacher, student = TestClient(app), TestClient(app)
    code = start(teacher, LESSON + "?step=2")
    join(student, code)
    assert teacher.post("/rooms", data={"state": "/"}).status_code == 409  # one class per address here
    stranger = TestClient(app).post(f"/rooms/{code}/end")
    assert stranger.status_code == 403  # only its teacher ends it
    ended = teacher.post(f"/rooms/{code}/end?lang=zh-CN", follow_redirects=False)
    assert ended.status_code == 303 and ended.headers["location"] == LESSON + "?step=2&lang=zh-CN"
    assert 'mre_teacher=""; expires' in ended.headers["set-cookie"].replace("Expires", "expires")
    gone = student.get(f"/rooms/{code}?lang=zh-CN")
    assert gone.status_code == 404 and parse_html(gone.text).find("html").attrs["lang"] == "zh-CN"
    assert start(teacher)  # the slot is free at once


def test_students_refetch_one_cacheable_url_per_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a change shows every student is a pure function of its URL: one render for the class,
    then the HTTP cache's answer (here: with rendering broken, the next student still gets it)."""
    app = create_app(Settings())
    code = start(TestClient(app))
    url = "/follow?" + urlencode({"room": code, "state": LESSON + "?step=2", "lang": "zh-CN", "present": "1"})
    first = TestClient(app).get(url, headers=HX)
    assert first.status_code == 200 and "set-cookie" not in first.headers
    section = parse_html(first.text).find("section", id="follow")
    assert section.attrs["data-lang"] == "zh-CN" and section.attrs["data-present"] == "1"
    assert section.attrs["data-step"] == "parameters-and-buffers:2"

    def broken(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(routes, "room_context", broken)
    assert TestClient(app).get(url, headers=HX).content == first.content
    with pytest.raises(AssertionError, match="rendered again"):  # another state is another render
        TestClient(app).get(url.replace("step%3D2", "step%3D3"), headers=HX)
    monkeypatch.undo()
    assert TestClient(app).get(f"/follow?room={code}&state=/checkpoints").status_code == 422
    assert TestClient(app).get("/follow?room=nonsense!&state=/").status_code == 404


def test_codes_resist_guessing() -> None:
    app = create_app(Settings(class_failed_joins_per_minute=3))
    teacher, guesser = TestClient(app), TestClient(app)
    code = start(teacher)
    typed = f"/join?code={code[:4].lower()}-{code[4:].lower()}"
    assert guesser.get(typed, follow_redirects=False).headers["location"] == f"/rooms/{code}"
    for guess in ("AAAAAAAA", "nonsense!", "BBBBBBBB"):
        assert guesser.get(f"/rooms/{guess}").status_code == 404
    blocked = guesser.get(f"/rooms/{code}")  # even the right code, once over the limit
    assert blocked.status_code == 429 and "failed joins" in notice(blocked)


def test_caps_on_rooms_students_votes_and_expiry() -> None:
    per_client = TestClient(create_app(Settings(class_max_rooms_per_client=2)))
    start(per_client), start(per_client)
    third = per_client.post("/rooms", data={"state": "/"})
    assert third.status_code == 409 and "MRE_CLASS_MAX_ROOMS_PER_CLIENT" in notice(third)

    app = create_app(Settings(class_max_rooms=1, class_max_students=1, class_max_votes=1))
    teacher, first, second = TestClient(app), TestClient(app), TestClient(app)
    code = start(teacher)
    full = teacher.post("/rooms", data={"state": "/"})
    assert full.status_code == 503 and "MRE_CLASS_MAX_ROOMS" in notice(full)
    join(first, code)
    crowded = second.post(f"/rooms/{code}/join")
    assert crowded.status_code == 409 and "MRE_CLASS_MAX_STUDENTS" in notice(crowded)
    assert vote(first, code, 0).status_code == 200  # no htmx: back to the page
    assert vote(first, code, 1).status_code == 200  # a change
    teacher.post(f"/rooms/{code}/state", data={"state": LESSON + "?step=2"})
    over = vote(first, code, 0, step="parameters-and-buffers:2")
    assert over.status_code == 409 and "MRE_CLASS_MAX_VOTES" in notice(over)

    brief = create_app(Settings(class_expiry_seconds=0.2))
    teacher = TestClient(brief)
    code = start(teacher)
    assert teacher.get(f"/rooms/{code}/teach").status_code == 200
    time.sleep(0.3)
    gone = teacher.get(f"/rooms/{code}/teach")
    assert gone.status_code == 404 and "no class with the code" in notice(gone)


def test_joins_from_one_address_stop_at_their_cap() -> None:
    app = create_app(Settings(class_max_joins_per_client=2))
    teacher = TestClient(app)
    code = start(teacher)
    for _ in range(2):
        join(TestClient(app), code)
    over = TestClient(app).post(f"/rooms/{code}/join")
    assert over.status_code == 409 and "MRE_CLASS_MAX_JOINS_PER_CLIENT" in notice(over)


def test_a_vote_for_the_last_choice_counts_and_one_past_it_is_refused() -> None:
    app = create_app(Settings())
    teacher, student = TestClient(app), TestClient(app)
    lesson = lessons()["parameters-and-buffers"]
    number, step = next((n, s) for n, s in enumerate(lesson.steps, 1) if s.question)
    code = start(teacher, f"{LESSON}?step={number}")
    join(student, code)
    key, last = f"parameters-and-buffers:{number}", len(step.question.choices) - 1
    assert vote(student, code, last, step=key).status_code == 200
    past = vote(student, code, last + 1, step=key)
    assert past.status_code == 409 and f"choice {last + 1} is not one of" in notice(past)


@pytest.mark.parametrize(
    ("server", "warned"),
    [
        (("127.0.0.1", 8000), True),
        (("::1", 8000), True),
        (("10.1.2.3", 8000), False),
        (("10.1.2.3", 80), False),
    ],
)
def test_the_join_link_is_the_servers_own_address_and_loopback_is_warned(server, warned) -> None:
    class Request:  # what join_link reads of a request: its scope, never its Host header
        def __init__(self) -> None:
            self.scope = {"server": server, "scheme": "http", "headers": [(b"host", b"evil.example" * 250)]}

    link = routes.join_link(Request(), Settings(), "ABCDEFGH")  # type: ignore[arg-type]
    host = f"[{server[0]}]" if ":" in server[0] else server[0]
    port = "" if server[1] == 80 else f":{server[1]}"
    assert link.url == f"http://{host}{port}/rooms/ABCDEFGH" and link.loopback is warned
    chosen = routes.join_link(Request(), Settings(class_url="http://class.example:8000/"), "ABCDEFGH")
    assert chosen.url == "http://class.example:8000/rooms/ABCDEFGH" and not chosen.loopback


def test_a_students_lab_is_marked_against_the_state_it_showed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A class following a lab: the page asked with the state it showed (from=...) marks what moved
    since, as the teacher's lab does; without it, nothing is marked."""
    app = create_app(Settings())
    code = start(TestClient(app))
    cpu, meta = "/?preset=testmodel&device=cpu", "/?preset=testmodel&device=meta"
    query = {"room": code, "state": meta}
    marked = parse_html(TestClient(app).get("/follow?" + urlencode({**query, "from": cpu}), headers=HX).text)
    plain = parse_html(TestClient(app).get("/follow?" + urlencode(query), headers=HX).text)
    model = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"]).to("meta")

    def chips(page, mark: str) -> set[str]:
        svg = page.find("svg", id="wide-diagram")
        return {
            name
            for g in svg.find_all("g")
            if {"chip", mark} <= set(g.attrs.get("class", "").split())
            for name in json.loads(g.attrs["data-tensors"])
        }

    assert chips(marked, "moved") == {n for n, t in model.state_dict().items() if str(t.device) == "meta"}
    assert chips(marked, "stayed") == {"buffer1"} and str(model.buffer1.device) == "cpu"
    assert chips(plain, "moved") == set() and chips(plain, "stayed") == set()
    assert parse_html(TestClient(app).get("/follow?" + urlencode({**query, "from": "/nowhere"})).text)
    assert marked.find("section", id="follow").attrs["data-state"].startswith(meta + "&")  # canonical


@pytest.mark.parametrize("case", ["no such room", "full", "not a student", "not a code"])
def test_every_class_refusal_is_a_page_in_the_pages_language_that_says_what_to_do(case: str) -> None:
    app = create_app(Settings(class_max_students=1))
    code = start(TestClient(app))
    join(TestClient(app), code)
    stranger = TestClient(app)
    answer = {
        "no such room": lambda: stranger.get("/rooms/ZZZZZZZZ?lang=zh-CN"),
        "full": lambda: stranger.post(f"/rooms/{code}/join?lang=zh-CN", follow_redirects=False),
        "not a student": lambda: stranger.post(
            f"/rooms/{code}/vote?lang=zh-CN", data={"step": STEP, "choice": 0}
        ),
        "not a code": lambda: stranger.post("/join?lang=zh-CN", data={"code": "ZZZZ"}),
    }[case]()
    assert (
        answer.status_code
        == {"no such room": 404, "full": 409, "not a student": 403, "not a code": 404}[case]
    )
    page = parse_html(answer.text)
    assert page.find("html").attrs["lang"] == "zh-CN"
    said = " ".join(page.find("main").text.split())
    assert "请向老师核对课堂代码后重新加入" in said  # what to do next, in the page's language
    assert page.find("form", action="/join?lang=zh-CN").attrs["method"] == "post"  # and the way to do it


@pytest.fixture(params=BROKERS)
def brokers(request: pytest.FixtureRequest) -> Brokers:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return Brokers(request.param, url)


def test_a_state_of_the_cap_in_characters_is_taken_and_one_more_refused(brokers: Brokers) -> None:
    base = "/?preset=testmodel&present="  # a lab; ``present`` is the page's view, not the lab's
    at_cap = base + "0" * (MAX_STATE - len(base))
    with TestClient(brokers.app()) as teacher:
        code = start(teacher, at_cap)
        assert teacher.post(f"/rooms/{code}/state", data={"state": at_cap}, headers=HX).status_code == 200
        for refused in (
            teacher.post("/rooms", data={"state": at_cap + "0"}, follow_redirects=False),
            teacher.post(f"/rooms/{code}/state", data={"state": at_cap + "0"}),
        ):
            assert refused.status_code == 422 and f"at most {MAX_STATE} characters" in notice(refused)


async def said(stream: AsyncIterator[bytes], kind: str) -> dict:
    """The data of the next event of ``kind`` a stream sends (pings and other kinds passed over)."""

    async def find() -> dict:
        while True:
            chunk = (await anext(stream)).decode()
            if f"event: {kind}\n" in chunk:
                return json.loads(chunk.split("data: ", 1)[1])

    return await asyncio.wait_for(find(), 30)


def test_a_console_shows_the_counts_as_they_are_not_as_a_late_event_carried_them(brokers: Brokers) -> None:
    """Events from several processes arrive in the order they were published, not written, and one
    published just before a stream subscribed arrives after its snapshot: the older one comes last."""

    async def scenario(b: Broker) -> None:
        await b.start()
        code = (await b.create("t", "/", "a")).code
        await b.join(code, "s1", "a")
        await b.join(code, "s2", "a")
        await b.vote(code, STEP, "s1", 1)
        settings = Settings(class_heartbeat_seconds=0.05)
        stream = routes.event_stream(b, code, "a", settings, student=False, step=STEP)
        try:
            first = await said(stream, "students")
            assert (first["students"], first["live"]) == (2, 0)
            tally = await said(stream, "tally")  # a console that reconnects missed the votes of its gap
            assert (tally["step"], tally["votes"], tally["counts"]) == (STEP, 1, [0, 1])

            b.hub.deliver(Event("students", code, 1, students=0, live=0))  # from before the stream
            late = await said(stream, "students")
            assert (late["students"], late["live"]) == (2, 0)

            await b.vote(code, STEP, "s2", 0)
            b.hub.deliver(Event("tally", code, 1, step=STEP, votes=1, counts=(0, 1)))  # the older tally
            tally = await said(stream, "tally")
            assert (tally["votes"], tally["counts"]) == (2, [1, 1])
        finally:
            await stream.aclose()

    brokers.run(scenario)
