"""The classroom's page models: a lesson step reads its state once, as strictly as lessons are
checked, and runs its experiment once for the lab it shows and the facts its question asks about;
its reveal says torch's answer in words and why, keeps itself through the view toggles, and the last
step recaps the lesson and leads to the next."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from app.classroom.facts import read_state
from app.classroom.lessons import lessons
from app.classroom.page import StepError, read_shown, read_step, said
from app.classroom.why import explain
from app.lab import memo
from app.lab.query import Bounds
from app.langs import EN, LANGS, ZH, Text
from tests.support.cases import CAP
from tests.support.html import parse
from tests.support.reference import TUTORIAL_DEFAULTS, reference

BOUNDS = Bounds.here(CAP)
STEPS_WITH_EXPERIMENTS = [
    (lesson.id, number)
    for lesson in lessons().values()
    for number, step in enumerate(lesson.steps, 1)
    if "experiment=" in step.state
]


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The experiments torch really runs from here on (the memo emptied first)."""
    ran: list[str] = []
    real = memo.run_experiment

    def counted(experiment_id: str, *args, **kwargs):
        ran.append(f"{experiment_id} {args} {kwargs}")  # which experiment, on which spec
        return real(experiment_id, *args, **kwargs)

    memo.clear()
    read_shown.cache_clear()
    monkeypatch.setattr(memo, "run_experiment", counted)
    return ran


@pytest.mark.parametrize(("lesson_id", "number"), STEPS_WITH_EXPERIMENTS)
def test_a_lesson_step_runs_its_experiment_once(runs: list[str], lesson_id: str, number: int) -> None:
    page = read_step(lesson_id, {"step": str(number), "reveal": "1"}, BOUNDS)
    assert page.lab.experiment is not None and page.answer is not None
    # Once each: its own, and on the last step the recap's (every step's answer, read live).
    states = {s.state for s in page.lesson.steps if "experiment=" in s.state} if page.recap else {1}
    assert len(runs) == len(set(runs)) == len(states)
    read_step(lesson_id, {"step": str(number), "reveal": "1"}, BOUNDS)  # the next student's runs none
    assert len(runs) == len(states)


def test_there_are_steps_with_experiments() -> None:
    assert len(STEPS_WITH_EXPERIMENTS) >= 4


@pytest.mark.parametrize(("lesson_id", "number"), STEPS_WITH_EXPERIMENTS)
def test_a_steps_facts_are_its_states(lesson_id: str, number: int) -> None:
    page = read_step(lesson_id, {"step": str(number)}, BOUNDS)
    state = read_state(page.step.state, BOUNDS)
    assert (page.state.spec, page.state.report, page.state.experiment) == (
        state.spec,
        state.report,
        state.experiment,
    )


LESSON = "parameters-and-buffers"
LAST = len(lessons()[LESSON].steps)


@pytest.mark.parametrize(("step", "number"), [("1", 1), (str(LAST), LAST), ("0001", 1), ("0" * 10 + "2", 2)])
def test_a_step_number_as_a_url_spells_it(step: str, number: int) -> None:
    assert read_step(LESSON, {"step": step}, BOUNDS).number == number


@pytest.mark.parametrize(
    "step",
    ["0", str(LAST + 1), "0000010" if LAST < 10 else "9999999", "5" * 5000, "-1", "1.0", "١", "²", "", " 1"],
)
def test_a_step_that_is_no_step_is_422_naming_the_range(client: TestClient, step: str) -> None:
    with pytest.raises(StepError) as refused:
        read_step(LESSON, {"step": step}, BOUNDS)
    assert refused.value.status == 422 and f"from 1 to {LAST}" in refused.value.message
    assert client.get(f"/lessons/{LESSON}", params={"step": step}).status_code == 422
    started = client.post("/rooms", data={"state": f"/lessons/{LESSON}?step={step}"}, follow_redirects=False)
    assert started.status_code == 422


@pytest.mark.parametrize("choice", ["5" * 5000, "0000000000000000001", "-1", "²", "99"])
def test_a_choice_that_names_no_choice_is_no_prediction(client: TestClient, choice: str) -> None:
    step = next(n for n, s in enumerate(lessons()[LESSON].steps, 1) if s.question)
    page = read_step(LESSON, {"step": str(step), "choice": choice}, BOUNDS)
    assert page.chosen is None or page.chosen == 1  # ...0001 names choice 1
    assert client.get(f"/lessons/{LESSON}", params={"step": str(step), "choice": choice}).status_code == 200


def test_a_reveal_says_torchs_answer_in_words_and_why(client: TestClient) -> None:
    base = f"/lessons/{LESSON}?step=1"
    model = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"]).to("meta")
    device = str(model.buffer1.device)  # torch: a plain tensor attribute stays where it was made
    for lang in LANGS:
        answer = parse(client.get(f"{base}&reveal=1&choice=1&lang={lang}").text).find("div", class_="answer")
        words = answer.find("p", class_="said").find("strong").text
        assert "buffer1" in words and device in words and "member.buffer1" not in words
        verdict = answer.find("p", class_="verdict").text
        reason = answer.find("p", class_="reason")
        assert verdict == (
            "Your prediction was not torch's answer." if lang == EN else "你的预测与 torch 的答案不同。"
        )
        assert reason.find("code").text == "buffer1" and device in reason.text
        term = reason.find("a", class_="term")  # the key term, linked to the lab's glossary entry
        assert term.attrs["href"].endswith("#g-plain") and term.text in reason.text
        glossary = parse(client.get(term.attrs["href"].partition("#")[0]).text).find("section", id="glossary")
        assert glossary.find("dt", id="g-plain")
        # The fact path stays, small and after the why: not the headline.
        assert answer.find("p", class_="fact").text == f"member.buffer1.device_after = {device}"


def test_said_links_the_key_term_and_escapes_the_rest() -> None:
    text = Text("{member} is {term}; model.to() moves only parameters and buffers, so it stayed on {device}.",
                member="<b>", term=Text("a plain tensor attribute"), device="cpu")  # fmt: skip
    html = said(text, EN, "/?a=1&b=2#g-plain")
    assert html == (
        '<code>&lt;b&gt;</code> is <a class="term" href="/?a=1&amp;b=2#g-plain">a plain tensor attribute</a>;'
        " model.to() moves only parameters and buffers, so it stayed on cpu."
    )
    assert said(text, ZH, "").startswith(
        "<code>&lt;b&gt;</code> 是一个普通张量属性；"
    )  # no glossary: no link


@pytest.mark.parametrize("toggle", ["lang", "present"])
def test_the_view_toggles_keep_a_revealed_step_revealed(client: TestClient, toggle: str) -> None:
    page = parse(client.get(f"/lessons/{LESSON}?step=1&reveal=1&choice=1").text)
    links = page.find("section", id="lesson").find("nav", class_="links")
    if toggle == "lang":
        href = links.find("a", hreflang=ZH).attrs["href"]
    else:
        href = next(a.attrs["href"] for a in links.find_all("a") if a.attrs.get("aria-keyshortcuts") == "t")
    shown = parse(client.get(href).text)
    assert "reveal=1" in href and "choice=1" in href
    assert shown.find("div", class_="answer").find("p", class_="verdict")  # the answer, and the prediction
    assert shown.find("li", data_choice="0").attrs["class"] == "choice right"  # torch: cpu
    assert shown.find("li", data_choice="1").attrs["class"] == "choice chosen"  # predicted: meta
    hidden = parse(client.get(f"/lessons/{LESSON}?step=1&lang=zh-CN").text)
    assert not hidden.find_all("div", class_="answer")  # and an unrevealed step's toggle reveals nothing
    links = hidden.find("nav", class_="links")
    assert all("reveal" not in a.attrs["href"] for a in links.find_all("a"))


def test_the_last_step_recaps_the_lesson_and_leads_to_the_next(client: TestClient) -> None:
    ids = list(lessons())
    for lang in LANGS:
        for i, lesson_id in enumerate(ids):
            lesson = lessons()[lesson_id]
            last = len(lesson.steps)
            tree = parse(client.get(f"/lessons/{lesson_id}?step={last}&reveal=1&lang={lang}").text)
            recap = tree.find("section", class_="recap")
            questions = [s for s in lesson.steps if s.question]
            items = recap.find_all("li")
            assert len(items) == len(questions)
            for item, step in zip(items, questions, strict=True):
                words = explain(step.question.fact, read_state(step.state, BOUNDS)).answer[lang]
                assert step.question.text[lang] in item.text and item.find("strong").text == words
            link = recap.find("p", class_="next-lesson").find("a")
            if i + 1 < len(ids):
                assert link.attrs["href"] == f"/lessons/{ids[i + 1]}?step=1&lang={lang}"
                assert lessons()[ids[i + 1]].title[lang] in link.text
            else:  # the last lesson leads back to the list
                assert link.attrs["href"] == f"/lessons?lang={lang}"
            earlier = parse(client.get(f"/lessons/{lesson_id}?step=1&reveal=1&lang={lang}").text)
            assert not earlier.find_all("section", class_="recap")
    # A last step with a question recaps once revealed: the recap holds its answer too.
    asks = next(lesson for lesson in lessons().values() if lesson.steps[-1].question)
    unrevealed = parse(client.get(f"/lessons/{asks.id}?step={len(asks.steps)}").text)
    assert not unrevealed.find_all("section", class_="recap")


def test_before_the_reveal_the_picture_is_the_step_befores(client: TestClient) -> None:
    """A question's step shows the module as the step before left it (the reveal then moves its
    chips into this step's places); its first step shows none (it would tell the answer)."""
    lesson = lessons()[LESSON]
    for number, step in enumerate(lesson.steps, 1):
        if step.question is None:
            continue
        page = parse(client.get(f"/lessons/{LESSON}", params={"step": str(number)}).text)
        figures = page.find_all("figure", id="picture")
        if number == 1:
            assert figures == []
            continue
        (figure,) = figures
        earlier = read_state(lesson.steps[number - 2].state, BOUNDS).spec
        model = reference(earlier.preset, earlier.styles).to(earlier.device)  # torch, directly
        svg = figure.find("svg", id="wide-diagram")
        drawn = {
            name
            for g in svg.find_all("g")
            if "chip" in g.attrs.get("class", "").split()
            for name in json.loads(g.attrs["data-tensors"])
        }
        assert set(model.state_dict()) | {n for n, _ in model.named_buffers()} <= drawn
        assert not [g for g in svg.find_all("g") if "before" in g.attrs.get("class", "").split()]
        revealed = parse(client.get(f"/lessons/{LESSON}", params={"step": str(number), "reveal": "1"}).text)
        assert revealed.find("figure", id="picture").find("svg", id="wide-diagram")  # the same ids
