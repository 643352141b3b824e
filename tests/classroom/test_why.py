"""Why torch answered as it did: each reason is built from the live facts (the member's style, what
torch registered it as, the value read) and agrees with torch written directly; every lesson question
has one in both languages; no fact a question can name is left without a rule."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from app.classroom.facts import facts, read_state
from app.classroom.lessons import lessons
from app.classroom.why import KINDS, STATE_DICT, TENSOR_KINDS, explain, recap
from app.lab.experiments import EXPERIMENTS
from app.lab.presets import PRESETS
from app.lab.query import Bounds
from app.lab.styles import ALL_STYLES, STYLES
from app.langs import EN, LANGS, ZH, Text
from tests.support.cases import CAP, CUSTOM, PRESET_STYLES
from tests.support.reference import TUTORIAL_DEFAULTS, loss, named, own, reference, sample

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
    for fact in ("member.a.b.in_parameters", "matrix.a.b.gets_grad", "member.a.b.device_after"):
        why = explain(fact, state)
        assert why.answer == Text("torch refused {member}.", member="a.b")
        assert why.reason == Text(
            "{member} is {term}, and torch refused to attach it ({error}), so the module does not hold it.",
            member="a.b",
            term=KINDS["parameter"][0],
            error="KeyError",
        )
        assert why.term == "parameter"


@pytest.mark.parametrize(
    ("query", "fact"),
    [
        ("preset=testmodel&device=cpu", "member.nosuch.in_parameters"),
        ("preset=testmodel&device=cpu", "matrix.nosuch.gets_grad"),
        ("preset=testmodel&device=cpu", "experiment.error"),  # no experiment was run
        ("preset=testmodel&device=cpu&experiment=step", "experiment.tensor.nosuch.changed"),
        ("preset=testmodel&device=cpu&experiment=step", "experiment.nosuch"),
        ("preset=testmodel&device=cpu&experiment=step", "buffer1"),
    ],
)
def test_a_fact_no_rule_knows_is_said_as_torch_reports_it(query: str, fact: str) -> None:
    why = explain(fact, read_state(query, BOUNDS))
    assert why.answer == Text("torch reports {value}.", value="")
    assert why.reason == Text("This is what torch reports for {fact}, read from the live module.", fact=fact)
    assert why.term == ""


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
CUSTOM_QUERY = "preset=custom&" + "&".join(f"{k}={v}" for k, v in CUSTOM.items() if k != "preset")
STATES += [f"{CUSTOM_QUERY}&device=cpu&experiment={e}" for e in EXPERIMENTS if e != "load_into"]
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
        assert ", and torch reports" not in why.reason[EN], (fact, value)  # nor a member's plain reading
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


# A yes/no fact's answer, when torch says yes and when it says no ({member}: the member's name).
ANSWERS = {
    "in_parameters": ("named_parameters() lists {member}.", "named_parameters() does not list {member}."),
    "in_buffers": ("named_buffers() lists {member}.", "named_buffers() does not list {member}."),
    "in_state_dict": ("state_dict() holds {member}.", "state_dict() does not hold {member}."),
    "moves_with_to": ("{member} moves with .to().", "{member} does not move with .to()."),
    "cast_by_half": (
        "model.half() casts {member} to float16.",
        "model.half() leaves the dtype of {member} as it was.",
    ),
    "gets_grad": ("backward() gives {member} a .grad.", "backward() gives {member} no .grad."),
    "changed_by_step": (
        "The optimizer step changes {member}.",
        "The optimizer step leaves {member} as it was.",
    ),
    "restored_by_load": (
        "load_state_dict() restores {member}.",
        "load_state_dict() does not restore {member}.",
    ),
}


@dataclass(frozen=True)
class Held:
    """A member as torch holds it, read from a module built here: registered as "parameter",
    "buffer" or "" (neither), frozen (no tensor of it requires grad), saved by state_dict(), and
    whether it holds layers."""

    registered: str
    frozen: bool
    saved: bool
    container: bool


def held(model: torch.nn.Module, member: str, style: str) -> Held:
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    mine = own(named(model, [member]), member)
    registered = "parameter" if any(n in params for n in mine) else ""
    registered = registered or ("buffer" if any(n in buffers for n in mine) else "")
    frozen = registered == "parameter" and not any(params[n].requires_grad for n in mine if n in params)
    saved = any(n in model.state_dict() for n in mine)
    return Held(registered, frozen, saved, ALL_STYLES[style].kind == "container")


def cause(key: str, yes: bool, m: Held) -> str | None:
    """The reason for a yes/no fact where the reading fits what torch holds the member as; None
    where it does not (no cause is made up: the reason then says what torch reports)."""
    said, param = "{member} is {term}", m.registered == "parameter"
    trained = param and not m.frozen
    if key in ("in_parameters", "in_buffers"):
        listing, kind_ = (
            ("named_parameters()", "parameter") if key == "in_parameters" else ("named_buffers()", "buffer")
        )
        other = "buffer" if kind_ == "parameter" else "parameter"
        if yes and m.registered == kind_:
            return f"{said}, so torch registers it as a {kind_}, and {listing} lists every {kind_}."
        if not yes and m.registered == other:
            return f"{said}: torch registers it as a {other}, not a {kind_}, so {listing} leaves it out."
        if not yes and not m.registered:
            return f"{said}: torch does not register it at all, so {listing} leaves it out."
    if key == "in_state_dict":
        if yes and param:
            return f"{said}; state_dict() holds every parameter, so it is saved."
        if yes and m.registered == "buffer":
            return f"{said}; state_dict() holds every persistent buffer, so it is saved."
        if not yes and m.registered == "buffer":
            return f"{said}; state_dict() leaves non-persistent buffers out, so checkpoints do not carry it."
        if not yes and not m.registered:
            return f"{said}: torch does not register it, so state_dict() does not save it."
    if key == "moves_with_to":
        if yes and m.registered:
            return f"{said}; .to() moves every parameter and buffer, so it moves with the module."
        if not yes and not m.registered:
            return f"{said}; .to() moves only parameters and buffers, so it stays where it was made."
    if key == "cast_by_half":
        if yes and m.registered:
            return f"{said}; .half() casts every floating-point parameter and buffer, so it became float16."
        if not yes and not m.registered:
            return f"{said}; .half() casts only parameters and buffers, so it kept its dtype."
    if key == "gets_grad":
        if yes and trained:
            return f"{said}: a parameter that requires grad, so backward() computes its gradient."
        if yes and not m.registered and m.container:
            return (
                f"{said}: forward() still calls its layers, so backward() computes their gradients, but "
                "torch does not register them, so model.parameters() leaves them out."
            )
        if not yes and m.frozen:
            return f"{said}, so autograd computes no gradient for it."
        if not yes and not param:
            return f"{said}: not a parameter, so autograd computes no gradient for it."
        if not yes:  # a trainable parameter the loss does not use
            return (
                f"{said}: a parameter that requires grad, but the loss forward() computed does not depend "
                "on it, so backward() never reaches it."
            )
    if key == "changed_by_step":
        if yes and trained:
            return (
                f"{said}: the optimizer holds model.parameters(), and it got a gradient, so the step "
                "updated it."
            )
        if not yes and m.frozen:
            return f"{said}: it gets no gradient, so the step leaves it as it was."
        if not yes and not param:
            return f"{said}; the optimizer is handed model.parameters() only, so the step never touches it."
        if not yes:
            return (
                f"{said}: the optimizer holds it, but the loss does not depend on it, so it gets no gradient "
                "and the step skips it."
            )
    if key == "restored_by_load":
        if yes and m.saved:
            return f"{said}; state_dict() saved it, so load_state_dict() puts its value back."
        if not yes and not m.saved:
            return f"{said}; state_dict() does not carry it, so load_state_dict() cannot put it back."
    return None


LAB_PRESET_STYLES = [(p, s) for p, s in PRESET_STYLES if PRESETS[p].members and PRESETS[p].make is None]
YES_OR_NO = [
    f"preset={p}&device=cpu" + "".join(f"&style.{m}={s}" for m in PRESETS[p].member_names)
    for p, s in LAB_PRESET_STYLES
]
# The custom module: its members are not used by its forward (a linear layer), and one is refused.
YES_OR_NO += ["preset=custom&device=cpu&" + "&".join(f"{k}={v}" for k, v in CUSTOM.items() if k != "preset")]


@pytest.mark.parametrize("query", YES_OR_NO)
def test_a_yes_or_no_is_said_as_torch_answered_it_with_the_cause_torchs_registration_gives(
    query: str,
) -> None:
    """Every yes/no fact of every member: the answer is torch's value, the reason the rule that
    what torch holds the member as (read from a module built here) leads to, in every language."""
    state = read_state(query, BOUNDS)
    rows = {m.name: m for m in state.report.members if not m.refused}
    styles = {name: row.style for name, row in rows.items()}
    shapes = {name: row.shape for name, row in rows.items() if row.shape}
    model = reference(state.spec.preset, styles, shapes if state.spec.preset == "custom" else None)
    asked, refused = set(), set()
    for fact, value in facts(state).items():
        member, _, key = fact.partition(".")[2].rpartition(".")
        if key not in ANSWERS or member not in rows:
            continue
        if value == "refused":
            refused.add((member, key))
            continue
        yes, reason = value == "true", cause(key, value == "true", held(model, member, styles[member]))
        assert reason is not None, (fact, value)  # every reading torch gives fits a rule
        words, term = KINDS[styles[member]]
        why = explain(fact, state)
        assert why.answer == Text(ANSWERS[key][not yes], member=member), fact
        assert why.reason == Text(reason, member=member, term=words), fact
        assert why.term == term
        asked.add((member, key))
    assert asked | refused == {(m, k) for m in rows for k in ANSWERS}  # every member, every question


PLAIN = "{member} is {term}, and torch reports {value} for it."
CONTRADICTED = [
    "preset=testmodel&device=cpu",
    "preset=testmodel&device=cpu&style.buffer1=buffer&style.buffer2=non_persistent_buffer"
    "&style.parameter1=frozen_parameter&style.parameter2=plain_tensor",
    "preset=layer_list&device=cpu&style.blocks=python_list",
    "preset=layer_list&device=cpu&style.blocks=module_list",
]


@pytest.mark.parametrize("query", CONTRADICTED)
def test_a_reading_that_contradicts_how_torch_holds_the_member_gets_no_made_up_cause(
    query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were torch to answer a yes/no the other way (another torch version), a reason is given only
    where the new reading fits what torch holds the member as; otherwise the reason says what torch
    reports, and a matrix answer says it plainly too."""
    state = read_state(query, BOUNDS)
    read = facts(state)
    styles = {m.name: m.style for m in state.report.members}
    model = reference(state.spec.preset, styles)
    flips = 0
    for fact, value in read.items():
        _, member, key = fact.split(".")
        if key not in ANSWERS or value not in ("true", "false"):
            continue
        other = "false" if value == "true" else "true"
        monkeypatch.setattr("app.classroom.why.facts", lambda _, f=fact, o=other: {**read, f: o})
        why = explain(fact, state)
        words, term = KINDS[styles[member]]
        reason = cause(key, other == "true", held(model, member, styles[member]))
        said = Text(ANSWERS[key][other == "false"], member=member)
        if reason is None and key not in ("in_parameters", "in_buffers", "in_state_dict"):
            said = Text("torch reports {value}.", value=other)
        assert why.answer == said, fact
        assert why.reason == Text(reason or PLAIN, member=member, term=words, value=other), fact
        assert why.term == term
        flips += reason is None
    assert flips  # some reading was one no rule fits
    for m in state.report.members:  # on the other device than torch put it: no rule fits that
        device = "meta" if m.device_after == "cpu" else "cpu"
        fact = f"member.{m.name}.device_after"
        monkeypatch.setattr("app.classroom.why.facts", lambda _, f=fact, d=device: {**read, f: d})
        why = explain(fact, state)
        assert why.answer == Text("{member} is on {device}.", member=m.name, device=device)
        assert why.reason == Text(PLAIN, member=m.name, term=KINDS[m.style][0], value=device)


def test_a_column_whose_experiment_torch_refused_is_said_with_torchs_exception() -> None:
    """Every tensor a parameter: testmodel's forward changes a buffer in place, which torch refuses
    for a leaf that requires grad, so the step's columns have no answer."""
    styles = dict.fromkeys(PRESETS["testmodel"].member_names, "parameter")
    model = reference("testmodel", styles)
    with pytest.raises(RuntimeError) as refused:
        loss(model(sample("testmodel", "cpu"))).backward()
    state = read_state(
        "preset=testmodel&device=cpu" + "".join(f"&style.{m}=parameter" for m in styles), BOUNDS
    )
    said = 0
    for fact, value in facts(state).items():
        if value != "refused":
            continue
        _, member, key = fact.split(".")
        assert key in ("gets_grad", "changed_by_step")
        why = explain(fact, state)
        assert why.answer == Text("torch refused the experiment that answers this.")
        assert why.reason == Text(
            "torch refused the experiment “{experiment}” ({error}), so there is no answer for {member}.",
            experiment=EXPERIMENTS["step"].title,
            error=type(refused.value).__name__,
            member=member,
        )
        assert why.term == KINDS["parameter"][1]
        said += 1
    assert said == 2 * len(styles)


# An experiment fact's answer, from torch's value (as a question's choices name it).
EXPERIMENT_ANSWERS = {
    "error": lambda v: (
        Text("torch ran every step.") if v == "none" else Text("torch raises {error}.", error=v)
    ),
    "strict": lambda v: (
        Text("load_state_dict(strict=True) loads it.")
        if v == "ok"
        else Text("load_state_dict(strict=True) raises {error}.", error=v)
    ),
    "missing_keys": lambda v: (
        Text("No key is missing.") if v == "none" else Text("Missing: {names}.", names=v)
    ),
    "unexpected_keys": lambda v: (
        Text("No key is unexpected.") if v == "none" else Text("Unexpected: {names}.", names=v)
    ),
    "in_optimizer": lambda v: Text("The optimizer holds {names}.", names=v),
    "changed_by_optimizer": lambda v: (
        Text("The step changed nothing.") if v == "none" else Text("The step changed {names}.", names=v)
    ),
    "optimizer_holds_model_parameters": lambda v: (
        Text("The optimizer still holds the model's parameters.")
        if v == "true"
        else Text("The optimizer no longer holds the model's parameters.")
    ),
    "optimizer_param_dtypes": lambda v: Text("The optimizer's parameters are {dtypes}.", dtypes=v),
    "to_cpu": lambda v: (
        Text("model.to('cpu') works.") if v == "ok" else Text("model.to('cpu') raises {error}.", error=v)
    ),
    "needs_reinit": lambda v: Text("{names} must be initialised again.", names=v),
}
# A tensor's fact in an experiment: its answer, from torch's value and the tensor's name.
TENSOR_ANSWERS = {
    "has_grad": lambda v, t: Text(
        "{member} has a .grad." if v == "true" else "{member} has no .grad.", member=t
    ),
    "changed": lambda v, t: Text(
        {"true": "The values of {member} changed.", "false": "The values of {member} did not change."}.get(
            v, "The values of {member} cannot be compared."
        ),
        member=t,
    ),
    "same_object": lambda v, t: Text(
        "{member} is still the same Python object." if v == "true" else "{member} is a new Python object.",
        member=t,
    ),
    "device_after": lambda v, t: Text("{member} is on {device}.", member=t, device=v),
    "dtype_after": lambda v, t: Text("{member} is {dtype}.", member=t, dtype=v),
}


@pytest.mark.parametrize("query", STATES, ids=range(len(STATES)))
def test_an_experiments_answer_says_torchs_value_and_its_reason_what_torch_saw(query: str) -> None:
    """Every fact of an experiment: the answer is torch's value in words; the reason names the
    experiment a tensor was watched in, and what torch saw it as before and after."""
    state = read_state(query, BOUNDS)
    if state.experiment is None:
        return
    seen = {t.name: t for t in state.experiment.tensors}
    title = EXPERIMENTS[state.experiment.experiment].title
    for fact, value in facts(state).items():
        if not fact.startswith("experiment."):
            continue
        why = explain(fact, state)
        if not fact.startswith("experiment.tensor."):
            assert why.answer == EXPERIMENT_ANSWERS[fact.removeprefix("experiment.")](value), fact
            if value not in ("none", "ok", "true", "false"):  # names, an exception type, dtypes
                assert all(value in why.reason[lang] for lang in LANGS), (fact, why.reason[EN])
            if fact == "experiment.strict" and value != "ok":  # the keys that differ, each named
                differ = [*state.experiment.facts["missing_keys"], *state.experiment.facts["unexpected_keys"]]
                assert differ and all(k in why.reason[lang] for k in differ for lang in LANGS), why.reason[EN]
            continue
        name, _, key = fact.removeprefix("experiment.tensor.").rpartition(".")
        t = seen[name]
        assert why.answer == TENSOR_ANSWERS[key](value, name), fact
        words, term = TENSOR_KINDS[t.kind]
        assert why.term == term
        for lang in LANGS:
            assert why.reason[lang].startswith(name) and words[lang] in why.reason[lang], (fact, lang)
            if key != "has_grad" or (value == "false" and t.requires_grad_before):
                assert title[lang] in why.reason[lang], (fact, lang)
            if key == "device_after":
                assert t.device_before in why.reason[lang] and value in why.reason[lang]
            if key == "dtype_after":
                assert t.dtype_before in why.reason[lang] and value in why.reason[lang]
        if key in ("has_grad", "changed", "same_object"):
            backward = any("backward()" in step for step in state.experiment.steps)
            said = {"member": name, "term": words, "experiment": title}
            assert why.reason == Text(tensor_reason(key, value, t.requires_grad_before, backward), **said)


def tensor_reason(key: str, value: str, requires_grad: bool, backward: bool) -> str:
    """The reason for a tensor's yes/no in an experiment, from what torch saw of it."""
    said = "{member} is {term}"
    if key == "has_grad" and value == "true":
        return f"{said} that requires grad, so backward() computed its gradient."
    if key == "has_grad" and not requires_grad:
        return f"{said} that does not require grad, so autograd computes none."
    if key == "has_grad" and not backward:
        return f"{said}, but the experiment “{{experiment}}” never calls backward()."
    if key == "has_grad":
        return (
            f"{said} that requires grad, but the loss of the experiment “{{experiment}}” does not depend on "
            "it, so backward() never reaches it."
        )
    if key == "changed" and value in ("true", "false"):
        differs = "it differs" if value == "true" else "it is the same"
        return f"{said}; torch read it before and after the experiment “{{experiment}}”: {differs}."
    if key == "changed":
        return f"{said} without readable values before or after the experiment “{{experiment}}”."
    held_ = "the very tensor it held before" if value == "true" else "another tensor under its name"
    return f"{said}; after the experiment “{{experiment}}” the module holds {held_}."


STRICT_CASES = [
    # (saved styles, the styles of the module loaded into): one member saved by one and not the other
    ("positional_encoding", {"pe": "non_persistent_buffer"}, {"pe": "buffer"}),
    ("positional_encoding", {"pe": "buffer"}, {"pe": "non_persistent_buffer"}),
    ("testmodel", {}, {"buffer1": "parameter", "buffer2": "plain_tensor"}),
    ("testmodel", {}, {"parameter1": "plain_tensor", "parameter2": "plain_tensor"}),
    (
        "testmodel",
        {"parameter1": "plain_tensor", "parameter2": "plain_tensor"},
        {"parameter1": "parameter", "parameter2": "parameter"},
    ),
]


@pytest.mark.parametrize(("preset", "saved", "into"), STRICT_CASES)
def test_a_refused_strict_load_names_the_keys_torch_names_and_why_each_is_there_or_not(
    preset: str, saved: dict[str, str], into: dict[str, str]
) -> None:
    """Compared with torch's own load_state_dict: one key missing or unexpected is explained by the
    member's style on the side that lacks it; several, or both kinds, are listed as torch lists them."""
    defaults = TUTORIAL_DEFAULTS.get(preset, {})
    query = f"preset={preset}&device=cpu&experiment=load_into" + "".join(
        [*(f"&style.{m}={s}" for m, s in saved.items()), *(f"&into.{m}={s}" for m, s in into.items())]
    )
    state = read_state(query, BOUNDS)
    source = reference(preset, {**defaults, **saved}).state_dict()
    module = reference(preset, {**defaults, **saved, **into}, into=True)
    with pytest.raises(Exception) as refused:
        module.load_state_dict(source)
    error = type(refused.value).__name__
    result = module.load_state_dict(source, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    assert missing or unexpected
    strict, lacking, extra = (
        explain(f"experiment.{k}", state) for k in ("strict", "missing_keys", "unexpected_keys")
    )
    assert strict.answer == Text("load_state_dict(strict=True) raises {error}.", error=error)
    sd, names = STATE_DICT, ", ".join
    if missing and not unexpected and len(missing) == 1:
        words = KINDS[{**defaults, **saved}[missing[0]]][0]
        assert strict.reason == Text(
            "{member} is {term} in the saved module, so its state_dict() has no {member}; the module loaded "
            "into expects it, and strict=True refuses a missing key: {error}.",
            member=missing[0],
            term=words,
            error=error,
        )
        assert lacking.reason == Text(
            "{member} is {term} in the saved module, so its state_dict() does not carry it; the module "
            "loaded into expects it, so torch reports it missing.",
            member=missing[0],
            term=words,
        )
    elif unexpected and not missing and len(unexpected) == 1:
        words = KINDS[into[unexpected[0]]][0]
        assert strict.reason == Text(
            "In the module loaded into, {member} is {term}, so its state_dict() has no {member}; the saved "
            "one has it, and strict=True refuses an unexpected key: {error}.",
            member=unexpected[0],
            term=words,
            error=error,
        )
        assert extra.reason == Text(
            "In the module loaded into, {member} is {term}, so its state_dict() has no {member}; the saved "
            "one has it, so torch reports it unexpected.",
            member=unexpected[0],
            term=words,
        )
    elif missing and unexpected:
        assert strict.reason == Text(
            "The saved {term} and the module loaded into do not have the same keys (missing: {missing}; "
            "unexpected: {unexpected}), and strict=True refuses that: {error}.",
            term=sd,
            missing=names(missing),
            unexpected=names(unexpected),
            error=error,
        )
    elif unexpected:
        assert strict.reason == Text(
            "The saved {term} has keys the module loaded into does not expect ({names}), and strict=True "
            "refuses them: {error}.",
            term=sd,
            names=names(unexpected),
            error=error,
        )
        assert extra.reason == Text(
            "The saved {term} has {names}, which the module loaded into does not expect.",
            names=names(unexpected),
            term=sd,
        )
    else:
        assert strict.reason == Text(
            "The module loaded into expects keys the saved {term} does not have ({names}), and strict=True "
            "refuses that: {error}.",
            term=sd,
            names=names(missing),
            error=error,
        )
        assert lacking.reason == Text(
            "The module loaded into expects {names}, and the saved {term} does not have them.",
            names=names(missing),
            term=sd,
        )


def test_readings_torch_gives_no_preset_here_are_still_said_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every preset holds a tensor meta cannot copy back, and every key of a strict load that torch
    refused differs: were torch to say otherwise (a module without tensors, a refusal over shapes),
    the sentence follows torch's word."""
    state = read_state("preset=testmodel&device=meta&experiment=meta_roundtrip", BOUNDS)
    monkeypatch.setattr("app.classroom.why.facts", lambda _: {"experiment.to_cpu": "ok"})
    moved = explain("experiment.to_cpu", state)
    assert moved.answer == Text("model.to('cpu') works.") and moved.term == "meta"
    assert moved.reason == Text("torch moved every tensor back from the {term}.", term=Text("meta device"))
    state = read_state("preset=testmodel&device=cpu&experiment=load_into", BOUNDS)
    assert state.experiment.facts["strict"] == "ok"  # the same keys on both sides
    monkeypatch.setattr("app.classroom.why.facts", lambda _: {"experiment.strict": "RuntimeError"})
    strict = explain("experiment.strict", state)
    assert strict.answer == Text("load_state_dict(strict=True) raises {error}.", error="RuntimeError")
    assert strict.reason == Text(
        "torch refused the strict load of the saved {term}: {error}.", term=STATE_DICT, error="RuntimeError"
    )
    assert strict.term == "state-dict"
