"""The facts a question may name, each read from the live report, matrix and experiment of a state,
and spelled as its choices are: the device torch reports, its refusal's exception type."""

from __future__ import annotations

import pytest

from app.classroom.facts import as_text, facts, outcome_message, read_state
from app.lab.query import Bounds
from app.lab.spec import SpecError
from tests.support.cases import CAP
from tests.support.reference import reference

BOUNDS = Bounds(("cpu", "meta"), CAP)


def test_a_members_facts_are_torchs() -> None:
    state = read_state("preset=testmodel&device=meta", BOUNDS)
    found = facts(state)
    model = reference("testmodel", state.spec.styles).to("meta")
    assert found["member.buffer1.device_after"] == str(model.buffer1.device) == "cpu"
    assert found["member.buffer2.device_after"] == str(model.buffer2.device) == "meta"
    assert found["member.buffer1.in_state_dict"] == as_text("buffer1" in model.state_dict()) == "false"
    assert found["matrix.buffer2.moves_with_to"] == "true"


def test_an_experiments_refusal_is_its_exception_type_and_its_message_is_kept() -> None:
    state = read_state(
        "preset=positional_encoding&device=cpu&experiment=load_into&into.pe=non_persistent_buffer", BOUNDS
    )
    found = facts(state)
    with pytest.raises(RuntimeError) as torch_says:
        reference("positional_encoding", {"pe": "non_persistent_buffer"}).load_state_dict(
            reference("positional_encoding", state.spec.styles).state_dict()
        )
    assert found["experiment.strict"] == "RuntimeError"
    message = outcome_message(state, "experiment.strict")
    # torch's words, but for the class name (the module loaded into is named apart: ...Into)
    assert message is not None and str(torch_says.value).partition(":")[2] in message
    assert outcome_message(state, "member.pe.style") is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (False, "false"), (None, "refused"), ([], "none"), (["a", "b"], "a, b"), (3, "3")],
)
def test_a_value_is_spelled_as_choices_name_it(value: object, text: str) -> None:
    assert as_text(value) == text


def test_a_state_with_a_typo_is_refused_naming_it() -> None:
    with pytest.raises(SpecError) as refused:
        read_state("preset=testmodel&experiment=step&dtpye=half", BOUNDS)
    assert refused.value.loc[-1] == "dtpye"
