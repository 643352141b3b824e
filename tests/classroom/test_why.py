"""Why torch answered as it did: each reason is built from the live facts (the member's style, what
torch registered it as, the value read) and agrees with torch written directly; every lesson question
has one in both languages; no fact a question can name is left without a rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from app.classroom.facts import facts, read_state
from app.classroom.lessons import lessons
from app.classroom.why import KINDS, explain, recap
from app.lab.experiments import EXPERIMENTS
from app.lab.query import Bounds
from app.lab.styles import ALL_STYLES, STYLES
from app.langs import EN, LANGS, ZH
from tests.support.cases import CAP
from tests.support.reference import TUTORIAL_DEFAULTS, reference

BOUNDS = Bounds(("cpu", "meta"), CAP)
QUESTIONS = [
    (lesson.id, number, step)
    for lesson in lessons().values()
    for number, step in enumerate(lesson.steps, 1)
    if step.question is not None
]
# The lab page's glossary entries (id="g-<term>"), which a reason's key term links to.
GLOSSARY = set(
    re.findall(r'id="g-([a-z-]+)"', (Path(__file__).parents[2] / "templates/lab/lab.html").read_text())
)
FALLBACK = ("torch reports", "This is what torch reports")  # the words of a fact no rule explains


def model_query(device: str, **styles: str) -> str:
    return f"preset=testmodel&device={device}" + "".join(f"&style.{m}={s}" for m, s in styles.items())


def test_every_style_has_words_and_a_glossary_entry() -> None:
    assert set(KINDS) == set(ALL_STYLES)
    for words, term in KINDS.values():
        assert all(words[lang] for lang in LANGS) and words[ZH] != words[EN]
        assert term in {"parameter", "frozen", "buffer", "persistent", "plain", "submodule"}


@pytest.mark.parametrize("target", ["meta", "cpu"])
@pytest.mark.parametrize("style", list(STYLES))
def test_where_a_member_is_after_to_is_torchs_and_so_is_the_reason(style: str, target: str) -> None:
    state = read_state(model_query(target, buffer1=style), BOUNDS)
    why = explain("member.buffer1.device_after", state)
    model = reference("testmodel", {**TUTORIAL_DEFAULTS["testmodel"], "buffer1": style})
    before = str(model.buffer1.device)
    model = model.to(target)
    device = str(model.buffer1.device)
    tracked = any(t is model.buffer1 for t in [*model.parameters(), *model.buffers()])
    assert device in why.answer[EN] and device in why.reason[EN] and device in why.reason[ZH]
    assert "buffer1" in why.answer[EN] and "buffer1" in why.reason[EN] and "buffer1" in why.reason[ZH]
    assert KINDS[style][0][EN] in why.reason[EN]  # the member's style, in words
    assert ("moves only parameters and buffers" in why.reason[EN]) == (not tracked)
    assert ("stayed on cpu" in why.reason[EN]) == (not tracked and device == "cpu")
    # The answer says what torch did: moved it, left it behind, or found it there already.
    moved, stayed = before != device, device != target
    assert (
        why.answer[EN] == f"buffer1 {'moved to' if moved else 'stayed on' if stayed else 'is on'} {device}."
    )
    assert why.term == KINDS[style][1]


@pytest.mark.parametrize("style", list(STYLES))
def test_what_state_dict_holds_is_torchs_and_so_is_the_reason(style: str) -> None:
    state = read_state(model_query("cpu", buffer2=style), BOUNDS)
    saved = (
        "buffer2" in reference("testmodel", {**TUTORIAL_DEFAULTS["testmodel"], "buffer2": style}).state_dict()
    )
    why = explain("member.buffer2.in_state_dict", state)
    assert why.answer[EN] == (
        "state_dict() holds buffer2." if saved else "state_dict() does not hold buffer2."
    )
    assert ("so it is saved" in why.reason[EN]) == saved
    if style == "non_persistent_buffer":
        assert "leaves non-persistent buffers out" in why.reason[EN]


def test_a_frozen_parameter_is_left_by_the_step_as_torch_leaves_it() -> None:
    state = read_state("preset=mymodule&device=cpu&style.weight=frozen_parameter&experiment=step", BOUNDS)
    model = reference("mymodule", {"weight": "frozen_parameter", "bias": "register_parameter"})
    before = model.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(1, 3, 10, 10)).sum().backward()
    optimizer.step()
    assert torch.equal(before, model.weight) and model.weight.grad is None
    why = explain("matrix.weight.changed_by_step", state)
    assert why.answer[EN] == "The optimizer step leaves weight as it was."
    assert why.reason[EN].startswith("weight is a frozen parameter (requires_grad=False)")
    assert "gets no gradient" in why.reason[EN] and why.term == "frozen"
    moved = explain("experiment.changed_by_optimizer", state)
    assert "weight" not in moved.answer[EN].replace("conv1.weight", "").replace("conv2.weight", "")


def test_a_strict_load_refused_is_said_with_torchs_exception_type() -> None:
    state = read_state(
        "preset=positional_encoding&device=cpu&experiment=load_into&into.pe=non_persistent_buffer", BOUNDS
    )
    into = reference("positional_encoding", {"pe": "non_persistent_buffer"}, into=True)
    with pytest.raises(Exception) as refused:
        into.load_state_dict(reference("positional_encoding", {"pe": "buffer"}).state_dict())
    error = type(refused.value).__name__
    why = explain("experiment.strict", state)
    assert why.answer[EN] == f"load_state_dict(strict=True) raises {error}."
    for lang in LANGS:  # the member, its style in the module loaded into, and torch's refusal
        assert "pe" in why.reason[lang] and error in why.reason[lang]
        assert KINDS["non_persistent_buffer"][0][lang] in why.reason[lang]
    unexpected = explain("experiment.unexpected_keys", state)
    result = into.load_state_dict(
        reference("positional_encoding", {"pe": "buffer"}).state_dict(), strict=False
    )
    assert unexpected.answer[EN] == f"Unexpected: {', '.join(result.unexpected_keys)}."


def test_a_member_torch_refused_is_said_as_refused() -> None:
    state = read_state("preset=custom&device=meta&style.a.b=parameter&style.w=plain_tensor", BOUNDS)
    with pytest.raises(KeyError):
        setattr(torch.nn.Module(), "a.b", torch.nn.Parameter(torch.randn(3)))
    why = explain("member.a.b.in_parameters", state)
    assert why.answer[EN] == "torch refused a.b." and "KeyError" in why.reason[EN]


STATES = [
    model_query("meta"),
    model_query("meta", buffer1="buffer", buffer2="non_persistent_buffer", parameter2="frozen_parameter"),
    model_query("cpu", buffer1="nn_buffer", parameter1="register_parameter") + "&experiment=step",
    model_query("cpu", buffer2="non_persistent_buffer") + "&experiment=save_load",
    model_query("cpu") + "&experiment=meta_roundtrip",
    model_query("cpu") + "&experiment=identity",
    "preset=layer_list&device=meta&style.blocks=python_list",
    "preset=layer_list&device=meta&style.blocks=module_list",
    "preset=positional_encoding&device=cpu&experiment=load_into&into.pe=non_persistent_buffer",
    "preset=positional_encoding&device=cpu&style.pe=non_persistent_buffer&experiment=load_into&into.pe=buffer",
]
# Every experiment on both devices (meta refuses most: torch's refusal is a fact too), with tutorial,
# mixed and plain-tensor styles, and on a plain Python list of layers: every rule of why is reached.
MIXES = ["", "&style.buffer1=buffer&style.parameter2=frozen_parameter&style.buffer2=non_persistent_buffer"]
MIXES += ["&style.parameter1=plain_tensor"]
STATES += [
    f"preset=testmodel&device={device}{mix}&experiment={e}"
    + ("&into.buffer1=parameter" if e == "load_into" else "")
    for e in EXPERIMENTS
    for device in ("cpu", "meta")
    for mix in MIXES
]
STATES += [f"preset=layer_list&device=cpu&style.blocks=python_list&experiment={e}" for e in EXPERIMENTS]
# Loads into a module whose keys differ: missing only, unexpected only, both, several, none.
INTO = ["buffer1=parameter", "buffer2=plain_tensor", "buffer1=parameter&into.buffer2=plain_tensor"]
INTO += ["parameter1=plain_tensor&into.parameter2=plain_tensor", "buffer2=non_persistent_buffer"]
INTO += ["parameter1=buffer", "parameter2=frozen_parameter"]
STATES += [f"preset=testmodel&device=cpu&experiment=load_into&into.{into}" for into in INTO]
STATES += [
    "preset=testmodel&device=cpu&style.buffer2=non_persistent_buffer&experiment=load_into&into.buffer2=buffer",
    "preset=positional_encoding&device=cpu&experiment=load_into&into.pe=plain_tensor",
    "preset=positional_encoding&device=meta&experiment=load_into&into.pe=buffer",
]
UNFILLED = re.compile(r"\{[a-z_]+\}|None")  # a placeholder left as written, or a value that was not given


@pytest.mark.parametrize("query", STATES, ids=range(len(STATES)))
def test_every_fact_a_question_can_name_has_a_reason_from_a_rule(query: str) -> None:
    state = read_state(query, BOUNDS)
    found = facts(state)
    assert found
    for fact, value in found.items():
        why = explain(fact, state)
        for lang in LANGS:
            assert why.answer[lang].strip() and why.reason[lang].strip(), (fact, lang)
            assert not UNFILLED.search(why.answer[lang] + why.reason[lang]), (fact, lang, why.reason[lang])
        assert not why.reason[EN].startswith(FALLBACK), (fact, value, why.reason[EN])
        assert why.term in GLOSSARY | {""}, (fact, why.term)  # its key term links to an entry that exists
        assert why.reason[ZH] != why.reason[EN], fact
        if fact.startswith(("member.", "matrix.")):
            member = fact.split(".")[1]
            assert member in why.reason[EN] and member in why.reason[ZH], fact
        if fact.startswith("experiment.tensor."):  # a tensor's name may hold dots: linear.weight
            tensor = fact.removeprefix("experiment.tensor.").rpartition(".")[0]
            assert all(tensor in why.answer[lang] and tensor in why.reason[lang] for lang in LANGS), fact


@pytest.mark.parametrize(("lesson_id", "number", "step"), QUESTIONS, ids=lambda v: str(v)[:30])
def test_every_lesson_question_has_a_reason_naming_the_member_and_torchs_value(
    lesson_id: str, number: int, step
) -> None:
    state = read_state(step.state, BOUNDS)
    fact, value = step.question.fact, facts(state)[step.question.fact]
    why = explain(fact, state)
    subject = fact.split(".")[1] if fact.startswith(("member.", "matrix.")) else None
    for lang in LANGS:
        said = why.answer[lang] + why.reason[lang]
        assert why.reason[lang].strip() and not why.reason[EN].startswith(FALLBACK)
        if subject:
            assert subject in why.reason[lang], (lang, why.reason[lang])
        if value not in ("true", "false", "none"):  # a device, an exception type, key names
            assert value in said, (lang, said)
    assert why.term  # linked to a glossary entry


def test_a_recap_is_every_question_with_torchs_answer() -> None:
    for lesson in lessons().values():
        found = recap(lesson, BOUNDS)
        assert [q for q, _ in found] == [s.question for s in lesson.steps if s.question]
        for (_, why), step in zip(found, [s for s in lesson.steps if s.question], strict=True):
            assert why == explain(step.question.fact, read_state(step.state, BOUNDS))
            assert all(why.answer[lang] for lang in LANGS)
