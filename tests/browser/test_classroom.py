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
           "explore": "Explore on my own", "back": "Back to the class", "join": "Join the class",
           "end": "End class", "previous": "Previous step"},
    "zh-CN": {"start": "开始上课", "reveal": "揭晓 torch 的答案", "next": "下一步",
              "explore": "自己探索", "back": "回到课堂", "join": "加入课堂", "end": "结束课堂",
              "previous": "上一步"},
}  # fmt: skip


def join(student: Page, link: str, lang: str = "en") -> None:
    """A student opens the join link and presses Join (a visit alone is no join)."""
    student.goto(link)
    student.get_by_role("button", name=WORDS[lang]["join"]).click()
    expect(student.locator("#follow[data-events]")).to_be_visible()


def end(teacher: Page, lang: str = "en") -> None:
    teacher.once("dialog", lambda dialog: dialog.accept())
    teacher.get_by_role("button", name=WORDS[lang]["end"]).click()


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

    join(student, teacher.locator(".join-url a").get_attribute("href"), lang)
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
    expect(student).to_have_url(re.compile(rf"/lessons/{LESSON}\?step=2(&lang=(en|zh-CN))?$"))
    teacher.get_by_role("button", name=words["next"]).click()
    expect(teacher.locator("#console .narrative")).to_have_text(lesson.steps[2].text[lang])
    student.keyboard.press("ArrowRight")  # the player's own keys work while exploring
    expect(student).to_have_url(re.compile(rf"/lessons/{LESSON}\?step=3"))
    student.get_by_role("link", name=words["back"]).click()
    expect(student).to_have_url(re.compile(rf"/rooms/{code}$"))
    expect(student.locator("#follow .narrative")).to_have_text(lesson.steps[2].text[lang])
    teacher.keyboard.press("ArrowLeft")
    expect(student.locator("#follow .narrative")).to_have_text(lesson.steps[1].text[lang])
    end(teacher, lang)


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
    join(student, teacher.locator(".join-url a").get_attribute("href"))
    row = student.locator("#follow #members-table tr[data-name='buffer1']")
    expect(row).to_have_attribute("data-style", "plain_tensor")

    teacher.get_by_role("link", name="Drive the class from the lab").click()
    expect(teacher.locator("#class-bar [data-as=teacher]")).to_be_visible()
    teacher.locator("#style-buffer1").select_option("buffer")  # an htmx swap, sent to the room
    expect(row).to_have_attribute("data-style", "buffer")
    moved = reference("testmodel", {**TUTORIAL_DEFAULTS["testmodel"], "buffer1": "buffer"}).to("meta")
    device = student.locator("#follow #members-table tr[data-name='buffer1'] td.device code").last
    expect(device).to_have_text(str(moved.buffer1.device))

    # The browser's Back in the driving lab is a change too: the students go back with it.
    teacher.go_back()
    expect(teacher.locator("#style-buffer1")).to_have_value("plain_tensor")
    expect(row).to_have_attribute("data-style", "plain_tensor")
    teacher.go_forward()
    expect(row).to_have_attribute("data-style", "buffer")


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
        link = teacher.locator(".join-url a").get_attribute("href")
        assert link.startswith(student_url + "/rooms/")
        join(student, link)
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


NETWORK_DOWN = ("ERR_INTERNET_DISCONNECTED", "ERR_NETWORK_CHANGED", "ERR_NETWORK_IO_SUSPENDED")


def box(page: Page, selector: str) -> dict:
    found = page.locator(selector).first.bounding_box()
    assert found is not None, selector
    return found


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], width


def test_a_projected_chinese_class_with_a_phone_and_a_laptop(browser: Browser, base_url: str) -> None:
    """The teacher at a 1280x720 projector in Chinese, a zh-CN phone and an English laptop."""
    lesson = lessons()[LESSON]
    watches = [Watch(base_url) for _ in range(3)]
    options = [
        {"locale": "zh-CN", "viewport": {"width": 1280, "height": 720}},
        {"locale": "zh-CN", "viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
        {"locale": "en-US", "viewport": {"width": 1280, "height": 800}},
    ]
    contexts = [open_context(browser, base_url, w, **o) for w, o in zip(watches, options, strict=True)]
    try:
        teacher, phone, laptop = (c.new_page() for c in contexts)
        teacher.goto(f"/lessons/{LESSON}?step=1&lang=zh-CN&present=1")
        teacher.get_by_role("button", name=WORDS["zh-CN"]["start"]).click()
        expect(teacher).to_have_url(re.compile(r"/rooms/[A-Z0-9]{8}/teach\?lang=zh-CN&present=1$"))
        assert teacher.evaluate("[document.documentElement.lang, document.documentElement.className]") == [
            "zh-CN",
            "present",
        ]
        banner = teacher.locator("details.class-banner")
        expect(banner).to_have_attribute("open", "")  # the code, the link and the QR, until a join
        # Chrome fires "toggle" for a <details> parsed open, sometimes after app.js listens: no choice.
        banner.evaluate("b => b.dispatchEvent(new Event('toggle'))")
        link = teacher.locator(".join-url a").get_attribute("href")

        join(phone, link, "zh-CN")
        expect(phone.locator("html")).to_have_attribute("lang", "zh-CN")
        expect(banner).not_to_have_attribute("open", "")  # one line once a student joined
        assert box(teacher, "details.class-banner")["height"] < 90
        join(laptop, link, "en")
        expect(teacher.locator(".n-joined")).to_have_text("2")
        expect(teacher.locator(".n-live")).to_have_text("2")

        for button in phone.locator("#follow form.vote button").all():  # thumbs, not pixels
            size = button.bounding_box()
            assert size and size["height"] >= 44 and size["width"] >= 44, size
        phone.locator("#follow form.vote button").first.click()
        expect(phone.locator("#follow li.chosen")).to_have_attribute("data-choice", "0")
        expect(teacher.locator("li[data-choice='0'] .count")).to_have_text("1")
        no_sideways_scroll(phone)

        teacher.get_by_role("button", name=WORDS["zh-CN"]["reveal"]).click()
        expect(teacher.locator("#console #members-table")).to_be_visible()
        teacher.screenshot(path="/tmp/class-shots/console-revealed-zh-present.png")
        answer, table = box(teacher, "#console .answer"), box(teacher, "#console #members-table")
        assert answer["y"] + answer["height"] <= 720 and table["y"] < 720, (answer, table)
        expect(phone.locator("#follow .answer")).to_be_visible()
        expect(laptop.locator("#follow .answer")).to_be_visible()
        expect(phone.locator("#follow li.chosen")).to_have_attribute("data-choice", "0")  # kept
        no_sideways_scroll(phone)

        # The laptop goes offline: it says so, and catches up once back.
        # (An open stream may outlive the switch: then the change comes, and its page fails to load.)
        contexts[2].set_offline(True)
        teacher.get_by_role("button", name=WORDS["zh-CN"]["next"]).click()
        expect(phone.locator("#follow .narrative")).to_have_text(lesson.steps[1].text["zh-CN"])
        expect(laptop.locator("#follow .live")).to_have_text("Reconnecting…", timeout=15_000)
        expect(laptop.locator("#follow .narrative")).to_have_text(lesson.steps[0].text["en"])
        contexts[2].set_offline(False)
        expect(laptop.locator("#follow .narrative")).to_have_text(lesson.steps[1].text["en"], timeout=20_000)
        expect(laptop.locator("#follow .live")).to_have_text("")

        # Previous after a reveal: the answer stays shown, the vote stays shut.
        teacher.get_by_role("button", name=WORDS["zh-CN"]["previous"]).click()
        expect(phone.locator("#follow .answer")).to_be_visible()
        expect(phone.locator("#follow form.vote")).to_have_count(0)
        # The console's toggles keep the class and the reveal.
        teacher.get_by_role("link", name="English").click()
        expect(teacher.locator("html")).to_have_attribute("lang", "en")
        expect(teacher.locator("#console .answer")).to_be_visible()
        expect(teacher).to_have_url(re.compile(r"/teach\?lang=en&present=1$"))

        end(teacher, "en")
        expect(teacher).to_have_url(re.compile(rf"/lessons/{LESSON}\?step=1&reveal=1&lang=en&present=1$"))
        expect(phone.locator("#follow .live")).to_have_text("老师已结束课堂。你可以继续自己探索。")
        expect(laptop.locator("#follow .live")).to_have_text(
            "The teacher ended the class. You can go on exploring on your own."
        )
        expect(phone.locator("#follow form.vote button:enabled")).to_have_count(0)
    finally:
        for c in contexts:
            c.close()
    for i, w in enumerate(watches):
        errors = [e for e in w.errors if not (i == 2 and any(n in e for n in NETWORK_DOWN))]
        assert errors == [] and w.outside == [], errors


def test_a_refused_or_lost_change_is_said_on_the_console(browser: Browser, base_url: str) -> None:
    watch = Watch(base_url)  # the failures this test makes are logged by the browser and htmx
    context = open_context(browser, base_url, watch, locale="en-US")
    try:
        teacher = context.new_page()
        teacher.goto(f"/lessons/{LESSON}?step=1")
        teacher.get_by_role("button", name="Start a class").click()
        # The console, loaded and its script run: a click before htmx takes the button would submit
        # the form itself, a navigation the aborted route turns into the browser's error page.
        expect(teacher).to_have_url(re.compile(r"/rooms/[A-Z0-9]{8}/teach$"))
        teacher.wait_for_load_state("load")
        teacher.wait_for_function("() => window.htmx !== undefined")
        teacher.route("**/rooms/*/state*", lambda route: route.abort())
        teacher.get_by_role("button", name="Next step").click()
        error = teacher.locator("#console .console-error")
        expect(error).to_have_text("The server could not be reached: the change was not made. Try again.")
        teacher.unroute("**/rooms/*/state*")
        said = "the class store (Redis) is unreachable"
        body = f'<section class="error" role="alert"><p><code>{said}</code></p></section>'
        teacher.route(
            "**/rooms/*/state*", lambda route: route.fulfill(status=503, body=body, content_type="text/html")
        )
        teacher.get_by_role("button", name="Next step").click()
        expect(error).to_have_text(said)
        teacher.unroute("**/rooms/*/state*")
        end(teacher)
    finally:
        context.close()
    unexpected = [e for e in watch.errors if not any(w in e for w in ("htmx:", "503", "ERR_FAILED"))]
    assert unexpected == [] and watch.outside == []
