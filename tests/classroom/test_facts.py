"""The facts a question may name, each read from the live report, matrix and experiment of a state,
and spelled as its choices are: the device torch reports, its refusal's exception type."""

from __future__ import annotations

import pytest
import torch

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


def named_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the tutorial's TestModel by name, the plain attribute too."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers()), "buffer1": model.buffer1}


def test_an_experiments_facts_are_torchs_for_every_tensor() -> None:
    state = read_state("preset=testmodel&device=cpu&experiment=cast", BOUNDS)
    found = facts(state)
    model = reference("testmodel", state.spec.styles)
    before = named_tensors(model)
    after = named_tensors(model.half())  # what the cast experiment does
    assert found["experiment.error"] == "none"
    for name, tensor in after.items():
        fact = f"experiment.tensor.{name}."
        assert found[fact + "dtype_after"] == str(tensor.dtype).removeprefix("torch."), name
        assert found[fact + "device_after"] == str(tensor.device)
        assert found[fact + "same_object"] == as_text(tensor is before[name]), name
        assert found[fact + "has_grad"] == as_text(tensor.grad is not None)
    assert {found[f"experiment.tensor.{n}.dtype_after"] for n in after} == {"float16", "float32"}


def test_an_experiment_torch_refuses_is_its_exception_type() -> None:
    state = read_state("preset=testmodel&device=meta&experiment=step", BOUNDS)
    model = reference("testmodel", state.spec.styles).to("meta")
    with pytest.raises(Exception) as torch_says:
        model(torch.ones(1, 3, device="meta")).sum().item()
    assert facts(state)["experiment.error"] == type(torch_says.value).__name__
    assert state.experiment is not None and state.experiment.error.message == str(torch_says.value)


def test_only_a_refusal_has_a_message_to_reveal() -> None:
    loads = read_state("preset=positional_encoding&device=cpu&experiment=load_into&into.pe=buffer", BOUNDS)
    assert facts(loads)["experiment.strict"] == "ok" and outcome_message(loads, "experiment.strict") is None
    plain = read_state("preset=testmodel&device=cpu", BOUNDS)
    assert outcome_message(plain, "experiment.strict") is None  # no experiment at all


def test_a_blank_value_in_a_state_is_refused_not_dropped() -> None:
    with pytest.raises(SpecError) as refused:
        read_state("preset=testmodel&device=meta&style.buffer1=", BOUNDS)
    assert refused.value.loc[-1] == "buffer1"
