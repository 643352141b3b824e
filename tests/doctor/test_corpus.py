"""The doctor's corpus (tests/support/corpus.py) read in this process, not in the inspector's child:
what ``mre inspect`` must answer for each file, answered by the very function the child runs. Here
mutation testing sees which test runs which line of the doctor (it cannot follow a child), and every
sentence a cause builds is checked against the catalog (tests/conftest.py)."""

from __future__ import annotations

import pytest

from app.doctor import isolated
from tests.support.checkpoints import NAMED_IN_TITLE, in_process, said_in_full
from tests.support.corpus import Entry, disagreements, inspected


@pytest.fixture(scope="module")
def answers(corpus: dict[str, Entry]) -> dict[str, tuple[int, dict | None, str]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(isolated, "run_now", in_process)
        return {name: inspected(entry) for name, entry in corpus.items()}


def test_the_corpus_table_read_in_this_process(corpus: dict[str, Entry], answers: dict) -> None:
    assert disagreements(corpus, answers) == {}
    causes = {
        c["id"] for _, r, _ in answers.values() if r and r["load"] for c in r["load"]["diagnosis"]["causes"]
    }
    assert causes >= {"backbone", "adapter", "other_width", "missing_shard", "compiled_submodule"}
    assert causes >= {"other_architecture"}


def test_every_cause_says_its_keys_in_full(answers: dict) -> None:
    seen, counts = set(), 0
    for name, (_, report, _) in answers.items():
        for cause in report["load"]["diagnosis"]["causes"] if report and report["load"] else ():
            counts += said_in_full(cause, name)
            seen.add(cause["id"])
    assert seen >= NAMED_IN_TITLE - {"reshaped", "transposed"} and counts >= 5
