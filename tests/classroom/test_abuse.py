"""One mischievous student with one laptop: visits that would fill a room, forged and oversized
student ids, pages of other origins driving a class, a Host header of kilobytes."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from fastapi.testclient import TestClient

from app.classroom.rooms import issue_student, valid_student
from app.main import create_app
from app.settings import Settings
from tests.support.aio import run
from tests.support.html import HX
from tests.support.html import parse as parse_html

LESSON = "/lessons/parameters-and-buffers"
STEP = "parameters-and-buffers:1"


def start(app, state: str = LESSON + "?step=1") -> tuple[TestClient, str]:
    teacher = TestClient(app)
    answer = teacher.post("/rooms", data={"state": state}, follow_redirects=False)
    assert answer.status_code == 303
    return teacher, answer.headers["location"].split("/")[2].split("?")[0]


def room_of(app, code: str):
    async def read():
        return await app.state.classroom.room(code)

    return run(read())


def test_page_views_without_a_cookie_do_not_fill_a_room() -> None:
    app = create_app(Settings(class_max_students=5))
    _, code = start(app)
    laptop = TestClient(app)
    for _ in range(300):
        assert laptop.get(f"/rooms/{code}").status_code == 200
        laptop.cookies.clear()
    assert room_of(app, code).students == 0
    real = TestClient(app)
    assert real.post(f"/rooms/{code}/join", follow_redirects=False).status_code == 303
    assert room_of(app, code).students == 1


@pytest.mark.parametrize(
    "forged",
    [
        "x",
        "0" * 65,
        "a" * 32 + "." + "b" * 32,  # the right shape, no signature of this room
        "a" * 15_000,  # an oversized id is no id (and never stored)
        "../../" + "a" * 59,
    ],
)
def test_a_forged_or_oversized_student_id_cannot_vote_nor_listen(forged: str) -> None:
    app = create_app(Settings())
    _, code = start(app)
    student = TestClient(app)
    student.cookies.set("mre_student", forged, path=f"/rooms/{code}")
    refused = student.post(f"/rooms/{code}/vote", data={"step": STEP, "choice": 0})
    assert refused.status_code in (403, 431)
    assert student.get(f"/rooms/{code}/events").status_code in (403, 431)
    assert room_of(app, code).students == 0


def test_an_id_of_another_room_is_no_id_here() -> None:
    app = create_app(Settings())
    _, code = start(app)
    _, other = start(app)
    student = TestClient(app)
    assert student.post(f"/rooms/{other}/join", follow_redirects=False).status_code == 303
    theirs = student.cookies.get("mre_student")
    student.cookies.set("mre_student", theirs, path=f"/rooms/{code}")
    assert student.post(f"/rooms/{code}/vote", data={"step": STEP, "choice": 0}).status_code == 403


def test_a_signed_id_is_the_rooms_hmac_over_its_code_and_a_random_id() -> None:
    app = create_app(Settings())
    _, code = start(app)
    room = room_of(app, code)
    student = issue_student(room)
    rid, signature = student.split(".")
    expected = hmac.new(room.student_key.encode(), f"{code}.{rid}".encode(), hashlib.sha256).hexdigest()[:32]
    assert len(student) == 65 and signature == expected and valid_student(room, student)
    assert issue_student(room) != student  # random: two joins are two students
    flipped = student[:-1] + ("0" if student[-1] != "0" else "1")
    assert not valid_student(room, flipped)


def test_one_id_is_one_vote_however_often_it_votes() -> None:
    app = create_app(Settings())
    teacher, code = start(app)
    student = TestClient(app)
    student.post(f"/rooms/{code}/join", follow_redirects=False)
    for choice in (0, 1, 0, 1) * 5:
        assert (
            student.post(f"/rooms/{code}/vote", data={"step": STEP, "choice": choice}, headers=HX).status_code
            == 204
        )
    counts = [
        int(c.text)
        for c in parse_html(teacher.get(f"/rooms/{code}/teach").text).find_all("span", class_="count")
    ]
    assert counts == [0, 1]


ORIGINS = [
    {"Origin": "http://evil.example"},
    {"Origin": "http://testserver:8001"},  # another port of this very host
    {"Origin": "https://testserver"},  # another scheme
    {"Origin": "null"},  # a sandboxed frame, a file
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain or port, without Origin
]


@pytest.mark.parametrize("headers", ORIGINS)
def test_a_state_changing_request_from_another_origin_is_refused(headers: dict[str, str]) -> None:
    app = create_app(Settings())
    teacher, code = start(app)
    student = TestClient(app)
    student.post(f"/rooms/{code}/join", follow_redirects=False)
    requests = [
        (teacher, "/rooms", {"state": "/"}),
        (teacher, f"/rooms/{code}/state", {"state": LESSON + "?step=2"}),
        (student, f"/rooms/{code}/vote", {"step": STEP, "choice": 0}),
        (TestClient(app), f"/rooms/{code}/join", {}),
        (TestClient(app), "/join", {"code": code}),
        (teacher, f"/rooms/{code}/end", {}),
    ]
    for client, path, form in requests:
        answer = client.post(path, data=form, headers=headers, follow_redirects=False)
        assert answer.status_code == 403, path
        assert "another site" in parse_html(answer.text).find("section", class_="error").find("code").text
    room = room_of(app, code)
    assert (room.version, room.students) == (1, 1)  # nothing changed, the class still there


def test_the_same_origin_and_the_class_url_are_accepted() -> None:
    app = create_app(Settings(class_url="http://10.0.0.5:8000"))
    teacher, code = start(app)
    for origin in ("http://testserver", "http://10.0.0.5:8000", "http://TESTSERVER:80"):
        changed = teacher.post(
            f"/rooms/{code}/state",
            data={"state": LESSON + "?step=2"},
            headers={"Origin": origin},
            follow_redirects=False,
        )
        assert changed.status_code == 303, origin
    same = teacher.post(
        f"/rooms/{code}/state",
        data={"state": LESSON + "?step=3"},
        headers={"Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert same.status_code == 303


def test_a_host_header_of_kilobytes_changes_nothing() -> None:
    app = create_app(Settings())
    teacher, code = start(app)
    plain_console = teacher.get(f"/rooms/{code}/teach")
    plain_qr = teacher.get(f"/rooms/{code}/qr.svg")
    host = "h" * 3000 + ".example"
    console = teacher.get(f"/rooms/{code}/teach", headers={"Host": host})
    qr = teacher.get(f"/rooms/{code}/qr.svg", headers={"Host": host})
    assert console.status_code == qr.status_code == 200
    link = parse_html(console.text).find("p", class_="join-url").find("a").attrs["href"]
    assert link == f"http://testserver/rooms/{code}" and host not in console.text
    assert qr.content == plain_qr.content and plain_console.status_code == 200
