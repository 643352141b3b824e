"""The classroom's page models: a lesson step reads its state once, as strictly as lessons are
checked, and runs its experiment once for the lab it shows and the facts its question asks about."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.classroom.facts import read_state
from app.classroom.lessons import lessons
from app.classroom.page import StepError, read_shown, read_step
from app.lab import memo
from app.lab.query import Bounds
from tests.support.cases import CAP

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
        ran.append(experiment_id)
        return real(experiment_id, *args, **kwargs)

    memo.clear()
    read_shown.cache_clear()
    monkeypatch.setattr(memo, "run_experiment", counted)
    return ran


@pytest.mark.parametrize(("lesson_id", "number"), STEPS_WITH_EXPERIMENTS)
def test_a_lesson_step_runs_its_experiment_once(runs: list[str], lesson_id: str, number: int) -> None:
    page = read_step(lesson_id, {"step": str(number), "reveal": "1"}, BOUNDS)
    assert page.lab.experiment is not None and page.answer is not None
    assert len(runs) == 1
    read_step(lesson_id, {"step": str(number)}, BOUNDS)  # and the next student's read runs none
    assert len(runs) == 1


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
