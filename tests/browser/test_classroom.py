"""A class in two browsers, the teacher's and a student's: the student follows every change live,
votes, sees the tally revealed with torch's answer, explores alone and comes back; in English and in
Chinese. The answers are checked against torch used directly."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from app.classroom.lessons import lessons
from tests.support.browser import Watch, open_context
from tests.support.class_servers import STUDENTS, TEACHER
from tests.support.reference import TUTORIAL_DEFAULTS, reference

LESSON = "parameters-and-buffers"
WORDS = {
    "en": {"start": "Start a class", "reveal": "Reveal torch's answer", "next": "Next step",
           "explore": "Explore on my own", "back": "Back to the class"},
    "zh-CN": {"start": "开始上课", "reveal": "揭晓 torch 的答案", "next": "下一步",
              "explore": "自己探索", "back": "回到课堂"},
}  # fmt: skip


def pages_of(browser: Browser, base_url: str, watch: Watch, locale: str) -> Iterator[list[Page]]:
    """The teacher's page and a student's, each in its own browser context (own cookies)."""
    contexts = [open_context(browser, base_url, watch, locale=locale) for _ in range(2)]
    yield [c.new_page() for c in contexts]
    for c in contexts:
        c.close()  # their event streams end with them


@pytest.fixture
def two(
    browser: Browser, base_url: str, watch: Watch, request: pytest.FixtureRequest
) -> Iterator[list[Page]]:
    locale = "zh-CN" if request.node.callspec.params["lang"] == "zh-CN" else "en-US"
    yield from pages_of(browser, base_url, watch, locale)


@pytest.fixture
def two_en(browser: Browser, base_url: str, watch: Watch) -> Iterator[list[Page]]:
    yield from pages_of(browser, base_url, watch, "en-US")


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_a_class_follows_votes_and_reveals(two: list[Page], lang: str) -> None:
    words, lesson = WORDS[lang], lessons()[LESSON]
    teacher, student = two
    teacher.goto(f"/lessons/{LESSON}?step=1")
    teacher.get_by_role("button", name=words["start"]).click()
    expect(teacher).to_have_url(re.compile(r"/rooms/[A-Z0-9]{8}/teach$"))
    code = teacher.url.split("/")[-2]
    expect(teacher.locator(".room-code strong")).to_have_text(f"{code[:4]}-{code[4:]}")
    expect(teacher.locator("img.qr")).to_have_js_property("naturalWidth", 264)  # the server's SVG

    student.goto(teacher.locator(".join-url a").get_attribute("href"))
    expect(student.locator("#follow .narrative")).to_have_text(lesson.steps[0].text[lang])
    expect(student.locator("#follow .answer")).to_have_count(0)  # hidden until the reveal
    expect(teacher.locator(".students")).to_contain_text("1")  # live: the console heard the join

    student.get_by_role("button", name="meta").click()  # a prediction...
    expect(teacher.locator("li[data-choice='1'] .count")).to_have_text("1")
    student.get_by_role("button", name="cpu").click()  # ...changed before the reveal
    expect(student.locator("li.chosen")).to_have_attribute("data-choice", "0")
    expect(teacher.locator("li[data-choice='0'] .count")).to_have_text("1")
    expect(teacher.locator("li[data-choice='1'] .count")).to_have_text("0")

    teacher.get_by_role("button", name=words["reveal"]).click()
    moved = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"]).to("meta")
    expect(student.locator("#follow li.right code")).to_have_text(str(moved.buffer1.device))
    expect(student.locator("#follow #members-table")).to_be_visible()

    teacher.get_by_role("button", name=words["next"]).click()
    expect(student.locator("#follow .narrative")).to_have_text(lesson.steps[1].text[lang])

    # On my own: the real lesson page; the class moves on without me; back, I am where it is.
    student.get_by_role("link", name=words["explore"]).click()
    expect(student).to_have_url(re.compile(rf"/lessons/{LESSON}\?step=2$"))
    teacher.get_by_role("button", name=words["next"]).click()
    expect(teacher.locator("#console .narrative")).to_have_text(lesson.steps[2].text[lang])
    student.keyboard.press("ArrowRight")  # the player's own keys work while exploring
    expect(student).to_have_url(re.compile(rf"/lessons/{LESSON}\?step=3"))
    student.get_by_role("link", name=words["back"]).click()
    expect(student).to_have_url(re.compile(rf"/rooms/{code}$"))
    expect(student.locator("#follow .narrative")).to_have_text(lesson.steps[2].text[lang])
    teacher.keyboard.press("ArrowLeft")
    expect(student.locator("#follow .narrative")).to_have_text(lesson.steps[1].text[lang])


def test_the_player_without_javascript(no_js_page: Page) -> None:
    no_js_page.goto(f"/lessons/{LESSON}?step=1")
    no_js_page.get_by_role("link", name="cpu").click()
    expect(no_js_page.locator(".answer")).to_contain_text("Your prediction was right.")
    no_js_page.get_by_role("link", name="Next →").click()
    expect(no_js_page).to_have_url(re.compile(r"step=2$"))


def test_a_class_follows_the_lab(two_en: list[Page]) -> None:
    teacher, student = two_en
    teacher.goto("/?preset=testmodel&device=meta")
    teacher.get_by_role("button", name="Start a class").click()
    expect(teacher).to_have_url(re.compile(r"/rooms/[A-Z0-9]{8}/teach$"))
    student.goto(teacher.locator(".join-url a").get_attribute("href"))
    row = student.locator("#follow #members-table tr[data-name='buffer1']")
    expect(row).to_have_attribute("data-style", "plain_tensor")

    teacher.get_by_role("link", name="Drive the class from the lab").click()
    expect(teacher.locator("#class-bar [data-as=teacher]")).to_be_visible()
    teacher.locator("#style-buffer1").select_option("buffer")  # an htmx swap, sent to the room
    expect(row).to_have_attribute("data-style", "buffer")
    moved = reference("testmodel", {**TUTORIAL_DEFAULTS["testmodel"], "buffer1": "buffer"}).to("meta")
    device = student.locator("#follow #members-table tr[data-name='buffer1'] td.device code").last
    expect(device).to_have_text(str(moved.buffer1.device))


def test_a_class_over_redis_and_two_processes(browser: Browser, class_servers: tuple) -> None:
    """The teacher on one process, the student (through the join link) on the other, one Redis."""
    teacher_url, student_url = f"http://127.0.0.1:{TEACHER}", f"http://127.0.0.1:{STUDENTS}"
    watches = [Watch(teacher_url), Watch(student_url)]
    contexts = [open_context(browser, w.base_url, w, locale="en-US") for w in watches]
    try:
        teacher, student = (c.new_page() for c in contexts)
        lesson = lessons()["saving-and-loading"]
        teacher.goto(f"/lessons/{lesson.id}?step=3")
        teacher.get_by_role("button", name="Start a class").click()
        join = teacher.locator(".join-url a").get_attribute("href")
        assert join.startswith(student_url + "/rooms/")
        student.goto(join)
        expect(student.locator("#follow .narrative")).to_have_text(lesson.steps[2].text["en"])
        student.get_by_role("button", name="it raises KeyError").click()
        expect(teacher.locator("li[data-choice='2'] .count")).to_have_text("1")  # across processes
        teacher.get_by_role("button", name="Reveal torch's answer").click()
        saved = reference("positional_encoding", {"pe": "buffer"}).state_dict()
        with pytest.raises(Exception) as refused:
            reference("positional_encoding", {"pe": "non_persistent_buffer"}, into=True).load_state_dict(
                saved
            )
        right = student.locator("#follow li.right")
        expect(right).to_contain_text(f"it raises {type(refused.value).__name__}")
        teacher.get_by_role("button", name="Next step").click()
        expect(student.locator("#follow .narrative")).to_have_text(lesson.steps[3].text["en"])
    finally:
        for c in contexts:
            c.close()
    for w in watches:
        assert w.errors == [] and w.outside == []
