"""Rooms in one process: starting a class, who may drive it, joining, votes, and every cap."""

from __future__ import annotations

import io
import time

import segno
from fastapi.testclient import TestClient

from app.classroom.lessons import lessons
from app.classroom.rooms import ALPHABET, CODE_LENGTH
from app.main import create_app
from app.settings import Settings
from tests.support.html import HX
from tests.support.html import parse as parse_html

LESSON = "/lessons/parameters-and-buffers"


def start(teacher: TestClient, state: str = LESSON + "?step=1") -> str:
    answer = teacher.post("/rooms", data={"state": state}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return answer.headers["location"].split("/")[2]


def notice(answer) -> str:
    return parse_html(answer.text).find("section", class_="error").find("code").text


def test_a_class_from_start_to_reveal() -> None:
    app = create_app(Settings(class_url="http://10.0.0.5:8000"))
    teacher, student, other = TestClient(app), TestClient(app), TestClient(app)
    started = teacher.post("/rooms", data={"state": LESSON + "?step=1&lang=zh-CN"}, follow_redirects=False)
    code = started.headers["location"].split("/")[2]
    assert len(code) == CODE_LENGTH and set(code) <= set(ALPHABET)
    cookie = started.headers["set-cookie"]
    assert f"Path=/rooms/{code}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie

    console = parse_html(teacher.get(f"/rooms/{code}/teach").text).find("section", id="console")
    assert console.find("p", class_="room-code").find("strong").text == f"{code[:4]}-{code[4:]}"
    join = f"http://10.0.0.5:8000/rooms/{code}"
    assert console.find("p", class_="join-url").find("a").attrs["href"] == join
    svg, expected = teacher.get(f"/rooms/{code}/qr.svg"), io.BytesIO()
    segno.make(join, error="m").save(expected, kind="svg", scale=8, border=2)
    assert svg.headers["content-type"] == "image/svg+xml" and svg.content == expected.getvalue()

    # Only the teacher drives: no cookie, or a student's, is a 403 naming why.
    assert student.get(f"/rooms/{code}/teach").status_code == 403
    refused = other.post(f"/rooms/{code}/state", data={"state": LESSON + "?step=2"})
    assert refused.status_code == 403 and "only the teacher" in notice(refused)

    follow = student.get(f"/rooms/{code}")  # joins: a random id in a cookie, nothing else
    assert follow.status_code == 200 and "mre_student=" in follow.headers["set-cookie"]
    assert follow.headers["cache-control"] == "no-store"
    page = parse_html(follow.text).find("section", id="follow")
    assert page.find("a", class_="detach").attrs["href"] == LESSON + "?step=1"
    assert not page.find_all(class_="answer") and not page.find_all(id="results")  # hidden till reveal
    other.get(f"/rooms/{code}")
    step = "parameters-and-buffers:1"
    for client, choice in ((student, 1), (other, 1), (student, 0)):  # a vote can change until reveal
        voted = client.post(f"/rooms/{code}/vote", data={"step": step, "choice": choice}, headers=HX)
        assert voted.status_code == 200
    (mine,) = [li for li in parse_html(voted.text).find_all("li") if "chosen" in li.attrs.get("class", "")]
    assert mine.attrs["data-choice"] == "0"
    tally = parse_html(teacher.get(f"/rooms/{code}/teach").text)
    counts = [int(c.text) for c in tally.find_all("span", class_="count")]
    assert counts == [1, 1]
    assert "Students: 2" in tally.find("p", class_="students").text

    bad = student.post(f"/rooms/{code}/vote", data={"step": step, "choice": 5})
    assert bad.status_code == 409 and "not one of this question's choices" in notice(bad)
    wrong = student.post(f"/rooms/{code}/vote", data={"step": "parameters-and-buffers:2", "choice": 0})
    assert wrong.status_code == 409 and "closed" in notice(wrong)
    assert student.post(f"/rooms/{code}/vote", data={"step": step, "choice": "x"}).status_code == 422

    revealed = teacher.post(f"/rooms/{code}/state", data={"state": LESSON + "?step=1&reveal=1"}, headers=HX)
    assert revealed.status_code == 200
    closed = student.post(f"/rooms/{code}/vote", data={"step": step, "choice": 1})
    assert closed.status_code == 409 and "closed" in notice(closed)
    shown = parse_html(student.get(f"/rooms/{code}").text)
    (right,) = [li for li in shown.find_all("li") if "right" in li.attrs.get("class", "").split()]
    assert (
        right.find("code").text == "cpu" and "chosen" in right.attrs["class"]
    )  # torch's answer for the plain tensor, read live
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


def test_codes_resist_guessing() -> None:
    app = create_app(Settings(class_failed_joins_per_minute=3))
    teacher, guesser = TestClient(app), TestClient(app)
    code = start(teacher)
    assert (
        guesser.get(f"/join?code={code[:4].lower()}-{code[4:].lower()}", follow_redirects=False).headers[
            "location"
        ]
        == f"/rooms/{code}"
    )
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
    assert first.get(f"/rooms/{code}").status_code == 200
    crowded = second.get(f"/rooms/{code}")
    assert crowded.status_code == 409 and "MRE_CLASS_MAX_STUDENTS" in notice(crowded)
    step = "parameters-and-buffers:1"
    assert first.post(f"/rooms/{code}/vote", data={"step": step, "choice": 0}).status_code == 200
    assert first.post(f"/rooms/{code}/vote", data={"step": step, "choice": 1}).status_code == 200  # a change
    teacher.post(f"/rooms/{code}/state", data={"state": LESSON + "?step=2"})
    over = first.post(f"/rooms/{code}/vote", data={"step": "parameters-and-buffers:2", "choice": 0})
    assert over.status_code == 409 and "MRE_CLASS_MAX_VOTES" in notice(over)

    brief = create_app(Settings(class_expiry_seconds=0.2))
    teacher = TestClient(brief)
    code = start(teacher)
    assert teacher.get(f"/rooms/{code}/teach").status_code == 200
    time.sleep(0.3)
    gone = teacher.get(f"/rooms/{code}/teach")
    assert gone.status_code == 404 and "no class with the code" in notice(gone)


def test_a_vote_for_the_last_choice_counts_and_one_past_it_is_refused() -> None:
    app = create_app(Settings())
    teacher, student = TestClient(app), TestClient(app)
    lesson = lessons()["parameters-and-buffers"]
    number, step = next((n, s) for n, s in enumerate(lesson.steps, 1) if s.question)
    code = start(teacher, f"{LESSON}?step={number}")
    assert student.get(f"/rooms/{code}").status_code == 200  # joined
    key, last = f"parameters-and-buffers:{number}", len(step.question.choices) - 1
    assert student.post(f"/rooms/{code}/vote", data={"step": key, "choice": last}).status_code == 200
    past = student.post(f"/rooms/{code}/vote", data={"step": key, "choice": last + 1})
    assert past.status_code == 409 and f"choice {last + 1} is not one of" in notice(past)
