"""Every lesson can be taught: its states resolve, its answers come from torch and are unambiguous,
both languages are complete; and the player shows a step as a permalink, predict then reveal."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from app.classroom.facts import facts, read_state
from app.classroom.lessons import (
    Answer,
    Choice,
    Lesson,
    LessonError,
    Question,
    Step,
    answer,
    check,
    lessons,
    parse,
)
from app.classroom.page import read_step
from app.lab.diff import LabDiff
from app.lab.presets import PRESETS
from app.lab.query import Bounds
from app.lab.styles import STYLES
from app.langs import LANGS
from tests.support.html import HX
from tests.support.html import parse as parse_html
from tests.support.reference import TUTORIAL_DEFAULTS, reference

BOUNDS = Bounds(("cpu", "meta"), 4096)


def test_every_lesson_can_be_taught() -> None:
    found = lessons()
    assert {"parameters-and-buffers", "register-parameter", "saving-and-loading"} <= set(found)
    for lesson in found.values():
        assert check(lesson, BOUNDS) == [], lesson.id
        assert sum(step.question is not None for step in lesson.steps) >= 3, lesson.id


def test_every_step_plays_in_both_languages(client: TestClient) -> None:
    for lesson in lessons().values():
        for number, step in enumerate(lesson.steps, 1):
            for lang in LANGS:
                page = client.get(f"/lessons/{lesson.id}?step={number}&reveal=1&lang={lang}")
                tree = parse_html(page.text)
                assert page.status_code == 200, (lesson.id, number)
                assert tree.find("p", class_="narrative").text == step.text[lang]
                assert tree.find("table", id="members-table")  # the lab's own blocks, revealed
                if step.question:  # exactly one choice is torch's, as the answer says
                    right = [li for li in tree.find_all("li") if "right" in li.attrs.get("class", "").split()]
                    assert len(right) == 1 and tree.find("div", class_="answer")


# How a step's text names the style it switches a member to: the call the code line makes.
NAMES_STYLE = {
    "parameter": "nn.Parameter",
    "register_parameter": "register_parameter",
    "frozen_parameter": "requires_grad=False",
    "buffer": "register_buffer",
    "non_persistent_buffer": "persistent=False",
    "nn_buffer": "nn.Buffer",
    "plain_tensor": "self.{member} = t",
}
NO_CHANGE = ("do not change", "does not change", "没有变化", "不变")
STEPS_AFTER = [
    (lesson.id, number) for lesson in lessons().values() for number in range(2, len(lesson.steps) + 1)
]


def flagged(diff: LabDiff) -> set[str]:
    """Every row and member the lab marks as changed against the step before."""
    rows = {name for t in diff.tables.values() for name in [*t.added, *t.removed, *t.moved, *t.cells]}
    return rows | set(diff.members) | set(diff.matrix)


def test_every_style_a_step_can_switch_to_has_its_words() -> None:
    assert set(NAMES_STYLE) == set(STYLES)


@pytest.mark.parametrize(("lesson_id", "number"), STEPS_AFTER)
def test_a_steps_text_names_every_change_the_lab_marks(lesson_id: str, number: int) -> None:
    """One change per step, or its text says each: the module, the device, each member's new style;
    and every cell the lab marks follows from those (never "the tables do not change" over marks)."""
    page = read_step(lesson_id, {"step": str(number), "reveal": "1"}, BOUNDS)
    diff, text = page.lab.diff, page.step.text
    restyled = {member for member, _, _ in diff.styles}
    for lang in LANGS:
        said = text[lang]
        if diff.preset:
            assert all(m.name in said for m in PRESETS[diff.preset[1]].members), (lang, said)
        if diff.device:
            assert diff.device[1] in said, (lang, said)
        for member, _, style in diff.styles:
            assert member in said and NAMES_STYLE[style].format(member=member) in said, (lang, member, said)
        if any(words in said for words in NO_CHANGE):
            assert flagged(diff) == set(), (lang, flagged(diff))
    if not diff.device:  # without a move, only the restyled members' own rows and cells are marked
        owned = {n for n in flagged(diff) if any(n == m or n.startswith(m + ".") for m in restyled)}
        assert flagged(diff) == owned


def test_the_check_finds_what_is_wrong() -> None:
    yes_no = [{"value": True, "label": {"en": "yes"}}, {"value": False, "label": {"en": "no", "zh-CN": "否"}}]
    broken = parse(
        "broken",
        {
            "title": {"en": "Broken", "zh-CN": "坏"},
            "summary": {"en": "s"},  # no Chinese
            "steps": [
                {"state": "preset=testmodel&device=meta&colour=red", "text": {"en": "a", "zh-CN": "甲"}},
                {
                    "state": "preset=testmodel&device=meta",
                    "text": {"en": "b", "zh-CN": "乙"},
                    "question": {
                        "fact": "member.buffer1.colour",
                        "text": {"en": "q", "zh-CN": "问"},
                        "choices": yes_no,
                    },
                },
                {
                    "state": "preset=testmodel&device=meta",
                    "text": {"en": "c", "zh-CN": "丙"},
                    # torch says meta: no choice names it
                    "question": {
                        "fact": "member.buffer2.device_after",
                        "text": {"en": "q", "zh-CN": "问"},
                        "choices": [{"value": "cpu"}, {"value": "cuda:0"}],
                    },
                },
                {
                    "state": "preset=testmodel&device=meta",
                    "text": {"en": "d", "zh-CN": "丁"},
                    "question": {
                        "fact": "member.buffer2.device_after",
                        "text": {"en": "q", "zh-CN": "问"},
                        "choices": [{"value": "meta"}, {"value": "meta"}],
                    },
                },
            ],
        },
    )
    problems = check(broken, BOUNDS)
    assert any(p.startswith("step 1: state") and "colour" in p for p in problems), problems
    assert any(p.startswith("step 2: fact 'member.buffer1.colour'") for p in problems), problems
    assert any(p.startswith("step 3: torch says 'meta'") for p in problems), problems
    assert any(p.startswith("step 4: at least two choices") for p in problems), problems
    assert "summary: no text in zh-CN" in problems


def _answer(lesson_id: str, number: int) -> str:
    step = lessons()[lesson_id].steps[number - 1]
    return answer(step.question, read_state(step.state, BOUNDS)).value


def test_answers_are_what_torch_says_directly() -> None:
    model = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"]).to("meta")
    assert _answer("parameters-and-buffers", 1) == str(model.buffer1.device)  # the plain tensor stays
    assert _answer("parameters-and-buffers", 2) == str("buffer2" in model.state_dict()).lower()
    frozen = reference("mymodule", {"weight": "frozen_parameter", "bias": "register_parameter"})
    before = frozen.weight.detach().clone()
    optimizer = torch.optim.SGD(frozen.parameters(), lr=0.1)
    frozen(torch.randn(1, 3, 10, 10)).sum().backward()
    optimizer.step()
    assert _answer("register-parameter", 3) == str(not torch.equal(before, frozen.weight)).lower()
    saved = reference("positional_encoding", {"pe": "buffer"}).state_dict()
    into = reference("positional_encoding", {"pe": "non_persistent_buffer"}, into=True)
    with pytest.raises(Exception) as refused:
        into.load_state_dict(saved)
    assert _answer("saving-and-loading", 3) == type(refused.value).__name__
    missing = reference("positional_encoding", {"pe": "buffer"}, into=True).load_state_dict(
        reference("positional_encoding", {"pe": "non_persistent_buffer"}).state_dict(), strict=False
    )
    assert _answer("saving-and-loading", 4) == (", ".join(missing.missing_keys) or "none")


def test_the_player_predicts_then_reveals(client: TestClient) -> None:
    base = "/lessons/parameters-and-buffers"
    before = parse_html(client.get(base + "?step=1").text)
    lesson = before.find("section", id="lesson")
    assert not lesson.find_all(id="results") and not lesson.find_all(class_="answer")  # hidden
    links = [li.find("a").attrs["href"] for li in lesson.find_all("li", class_="choice")]
    assert links == [f"{base}?step=1&reveal=1&choice=0", f"{base}?step=1&reveal=1&choice=1"]
    assert not lesson.find_all("a", rel="prev")
    assert lesson.find("a", rel="next").attrs["href"] == base + "?step=2"

    after = parse_html(client.get(base + "?step=1&reveal=1&choice=1").text)  # predicted meta
    right = after.find("li", class_="choice right")
    assert right.attrs["data-choice"] == "0" and right.find("code").text == "cpu"  # torch: cpu
    assert "Your prediction was not torch's answer." in after.find(class_="answer").text
    lab = after.find("fieldset", class_="lesson-lab")
    assert "disabled" in lab.attrs and lab.find("table", id="members-table").find("tr", data_name="buffer1")

    swap = client.get(base + "?step=3", headers=HX)
    assert swap.status_code == 200 and swap.headers["HX-Push-Url"] == base + "?step=3"
    assert swap.text.lstrip().startswith('<section id="lesson"')
    revealed = client.get(base + "?step=3&reveal=1")
    # Marked against the step before: buffer1 joined state_dict() and moved.
    changed = parse_html(revealed.text).find("table", id="members-table").find("tr", data_name="buffer1")
    assert "changed" in changed.find_all("td")[-1].attrs["class"]


@pytest.mark.parametrize("lang", LANGS)
def test_each_language_and_projector_mode(client: TestClient, lang: str) -> None:
    lesson = lessons()["saving-and-loading"]
    page = client.get(f"/lessons/{lesson.id}?step=3&reveal=1&lang={lang}&present=1")
    tree = parse_html(page.text)
    assert tree.find("html").attrs["lang"] == lang and tree.find("html").attrs["class"] == "present"
    assert tree.find("h2", id="lesson-title").text == lesson.title[lang]
    assert lesson.steps[2].text[lang] in tree.find("p", class_="narrative").text
    assert "Unexpected key(s) in state_dict" in tree.find(class_="answer").text  # torch's own words
    assert tree.find("a", rel="next").attrs["href"].endswith(f"step=4&lang={lang}&present=1")


def test_a_bad_step_is_a_clear_4xx(client: TestClient) -> None:
    missing = client.get("/lessons/no-such-lesson")
    notice = parse_html(missing.text).find("p", class_="notice").text
    assert missing.status_code == 404 and "no lesson 'no-such-lesson'" in notice
    for bad in ("0", "99", "abc", "²", "1" * 5000):
        page = client.get(f"/lessons/parameters-and-buffers?step={bad}")
        notice = parse_html(page.text).find("p", class_="notice").text
        assert page.status_code == 422 and "step must be a whole number from 1 to 5" in notice


def test_the_check_says_every_problem_in_full() -> None:
    """Every step is checked (a state that does not resolve stops only its own step), and each problem
    is said in full, naming the step, the field and what torch or the report offers."""
    lesson = parse(
        "l",
        {
            "title": {},
            "summary": {"en": "S"},
            "steps": [
                {"state": "preset=testmodel&device=meta&colour=red", "text": {"en": "a", "zh-CN": "甲"}},
                {"state": "preset=testmodel&device=meta", "text": {"en": "b", "zh-CN": "乙"}},  # no question
                {
                    "state": "preset=testmodel&device=meta",
                    "text": {"en": "c"},
                    "question": {
                        "fact": "member.buffer2.device_after",
                        "text": {"en": "q", "zh-CN": "问"},
                        "choices": [{"value": "meta", "label": {"zh-CN": "元"}}, {"value": "cpu"}],
                    },
                },
            ],
        },
    )
    state_problem = check(lesson, BOUNDS)[0]
    assert state_problem.startswith("step 1: state 'preset=testmodel&device=meta&colour=red': ")
    assert check(lesson, BOUNDS)[1:] == [
        "title: no text in en, zh-CN",
        "summary: no text in zh-CN",
        "step 3: no text in zh-CN",
        "step 3 choice meta: no text in en",
    ]
    unknown = parse("l", {**lesson_raw(), "steps": [step_raw(fact="member.buffer2.colour")]})
    (said,) = check(unknown, BOUNDS)
    known = facts(read_state("preset=testmodel&device=meta", BOUNDS))
    assert said == f"step 1: fact 'member.buffer2.colour' is not in the report; facts: {', '.join(known)}"
    assert check(parse("l", lesson_raw()), BOUNDS) == ["no steps"]


TEXT = {"en": "t", "zh-CN": "文"}


def lesson_raw(**fields: object) -> dict:
    return {"title": TEXT, "summary": TEXT, **fields}


def step_raw(**question: object) -> dict:
    asked = {"text": TEXT, "choices": [{"value": "meta"}, {"value": "cpu"}], **question}
    return {"state": "preset=testmodel&device=meta", "text": TEXT, "question": asked}


def test_a_lesson_file_is_read_as_written() -> None:
    raw = lesson_raw(
        steps=[
            {"text": TEXT},
            {
                "state": "preset=testmodel",
                "text": TEXT,
                "question": {
                    "text": TEXT,
                    "choices": [
                        {"value": True, "label": {"en": "yes", "zh-CN": "是"}},
                        {"value": False},
                        {"value": "RuntimeError"},  # spelled as written: only true and false are lowered
                    ],
                },
            },
            {"text": TEXT, "question": {"text": TEXT}},  # no choices yet: the check says so, not the reader
        ]
    )
    choices = (
        Choice("true", {"en": "yes", "zh-CN": "是"}),
        Choice("false", None),
        Choice("RuntimeError", None),
    )
    question = Question(TEXT, "", choices)
    steps = (
        Step("", TEXT, None),
        Step("preset=testmodel", TEXT, question),
        Step("", TEXT, Question(TEXT, "", ())),
    )
    assert parse("l", raw) == Lesson("l", TEXT, TEXT, steps)
    assert parse("l", lesson_raw()).steps == ()
    state = read_state("preset=testmodel&device=meta", BOUNDS)
    assert answer(question, state) == Answer("", None)  # a fact the report lacks: no value, no choice


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (lesson_raw(title="T"), "title"),
        (lesson_raw(summary={"en": 1}), "summary"),
        (lesson_raw(steps=[{"text": "plain"}]), "l step 1 text"),
        (
            lesson_raw(steps=[{"text": TEXT}, {"text": TEXT, "question": {"choices": []}}]),
            "l step 2 question.text",
        ),
        (
            lesson_raw(steps=[step_raw(choices=[{"value": "cpu", "label": "CPU"}])]),
            "l step 1 question.choices.label",
        ),
    ],
)
def test_a_file_that_is_not_a_lesson_is_refused_naming_the_field(raw: dict, said: str) -> None:
    with pytest.raises(LessonError) as refused:
        parse("l", raw)
    assert str(refused.value) == f"{said}: a table of texts by language (en, zh-CN)"
