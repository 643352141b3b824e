"""Why torch answered as it did: a question's answer in words, and the reason in a sentence or two.

Both are built from the live facts of the question's state: the member's style (how the code attaches
it), what torch registered it as (a parameter, a buffer, or nothing: read from the report, not from
the style) and the value torch gave. A reason is chosen by what torch did, so it is never written per
lesson, and a reading that no rule below explains gets a plain "torch reports ..." instead of a
made-up cause. Every sentence is a ``Text``; its ``{term}`` is the key term, linked by the page to the
lab's glossary entry ``term``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from app.classroom.facts import LabState, facts, read_state
from app.classroom.lessons import Lesson, Question
from app.lab.experiments import EXPERIMENTS, Observation
from app.lab.query import Bounds
from app.lab.report import MemberRow
from app.lab.styles import ALL_STYLES
from app.lab.tensors import member_tensors
from app.langs import Text, verbatim


@dataclass(frozen=True)
class Why:
    answer: Text  # torch's answer in words: "buffer1 stayed on cpu."
    reason: Text  # why, from torch's facts; its value {term} is the key term
    term: str  # the glossary entry of the key term (``g-<term>`` on the lab page); "" for none


# How the code attaches a member, as the reasons name it, and its glossary entry.
KINDS: dict[str, tuple[Text, str]] = {
    "parameter": (Text("an nn.Parameter attribute"), "parameter"),
    "register_parameter": (Text("a parameter registered with register_parameter()"), "parameter"),
    "frozen_parameter": (Text("a frozen parameter (requires_grad=False)"), "frozen"),
    "buffer": (Text("a buffer registered with register_buffer()"), "buffer"),
    "non_persistent_buffer": (Text("a non-persistent buffer (persistent=False)"), "persistent"),
    "nn_buffer": (Text("an nn.Buffer attribute"), "buffer"),
    "plain_tensor": (Text("a plain tensor attribute"), "plain"),
    "python_list": (Text("a plain Python list of layers"), "plain"),
    "module_list": (Text("an nn.ModuleList of layers"), "submodule"),
    "sequential": (Text("an nn.Sequential of layers"), "submodule"),
}
# What an experiment observes a tensor as (``Observation.kind``).
TENSOR_KINDS: dict[str, tuple[Text, str]] = {
    "parameter": (Text("a parameter"), "parameter"),
    "buffer": (Text("a buffer"), "buffer"),
    "tensor": (Text("a plain tensor attribute"), "plain"),
}
# Key terms of the facts that name no member.
STATE_DICT = Text("state_dict()")
META = Text("meta device")
PARAMETERS = Text("model.parameters()")
# The experiment a matrix column runs (its refusal leaves the column empty).
COLUMN_EXPERIMENT = {"cast_by_half": "cast", "gets_grad": "step", "changed_by_step": "step"}
COLUMN_EXPERIMENT["restored_by_load"] = "save_load"


def kind(style: str) -> tuple[Text, str]:
    """A style in words (``a plain tensor attribute``) and its glossary entry (every style has both:
    a test holds KINDS to ALL_STYLES)."""
    return KINDS[style]


def names(values: object) -> str:
    return ", ".join(map(str, values)) if isinstance(values, list | tuple) else str(values)


@dataclass(frozen=True)
class _Member:
    """A member as torch holds it: how its code attaches it and what torch registered it as."""

    row: MemberRow
    kind: Text
    term: str
    tracked: str  # "parameter", "buffer" or "" (torch holds it in neither)
    frozen: bool  # a parameter none of whose tensors requires grad


def _member(state: LabState, name: str) -> _Member | None:
    row = next((m for m in state.report.members if m.name == name), None)
    if row is None:
        return None
    words, term = kind(row.style)
    container = ALL_STYLES[row.style].kind == "container"
    params = {p.name: p for p in state.report.named_parameters}
    own = [params[n] for n in member_tensors(params, name, container)]
    tracked = "parameter" if row.in_parameters else "buffer" if row.in_buffers else ""
    frozen = bool(own) and not any(p.requires_grad for p in own)
    return _Member(row, words, term, tracked, frozen)


def explain(fact: str, state: LabState) -> Why:
    """Torch's answer to the fact a question names, in words, and why, from the state's live facts."""
    value = facts(state).get(fact, "")
    kind_of, _, rest = fact.partition(".")
    if kind_of in ("member", "matrix"):
        name, _, key = rest.rpartition(".")
        m = _member(state, name)
        if m is not None:
            if m.row.refused:
                return _refused_member(m)
            if kind_of == "member" or key in ("in_parameters", "in_buffers", "in_state_dict"):
                return _member_fact(m, key, value, state)
            return _matrix_fact(m, key, value, state)
    if kind_of == "experiment" and state.experiment is not None:
        if rest.startswith("tensor."):
            name, _, key = rest.removeprefix("tensor.").rpartition(".")
            seen = next((t for t in state.experiment.tensors if t.name == name), None)
            if seen is not None:
                return _tensor_fact(seen, key, value, state)
        else:
            return _experiment_fact(rest, value, state)
    return _reported(fact, value)


def _reported(fact: str, value: str) -> Why:
    """A fact no rule here explains: torch's reading, said as it is."""
    return Why(
        Text("torch reports {value}.", value=value),
        Text("This is what torch reports for {fact}, read from the live module.", fact=fact),
        "",
    )


def _refused_member(m: _Member) -> Why:
    error = (m.row.refused or "").partition(":")[0]
    return Why(
        Text("torch refused {member}.", member=m.row.name),
        Text(
            "{member} is {term}, and torch refused to attach it ({error}), so the module does not hold it.",
            member=m.row.name,
            term=m.kind,
            error=error,
        ),
        m.term,
    )


def _member_fact(m: _Member, key: str, value: str, state: LabState) -> Why:
    name, words, t = m.row.name, m.kind, m.tracked
    said = {"member": name, "term": words}
    yes = value == "true"
    if key == "style":
        line = ALL_STYLES[m.row.style].line(
            name, "layers" if ALL_STYLES[m.row.style].kind == "container" else "t"
        )
        return Why(
            Text("{member} is {term}.", **said),
            Text("The module's code attaches {member} with {line}.", member=name, line=line),
            m.term,
        )
    if key == "in_parameters":
        answer_ = (
            Text("named_parameters() lists {member}.", member=name)
            if yes
            else Text("named_parameters() does not list {member}.", member=name)
        )
        if yes and t == "parameter":
            reason = Text(
                "{member} is {term}, so torch registers it as a parameter, and named_parameters() lists "
                "every parameter.",
                **said,
            )
        elif not yes and t == "buffer":
            reason = Text(
                "{member} is {term}: torch registers it as a buffer, not a parameter, so "
                "named_parameters() leaves it out.",
                **said,
            )
        elif not yes and not t:
            reason = Text(
                "{member} is {term}: torch does not register it at all, so named_parameters() leaves it out.",
                **said,
            )
        else:
            reason = _plain(m, value)
        return Why(answer_, reason, m.term)
    if key == "in_buffers":
        answer_ = (
            Text("named_buffers() lists {member}.", member=name)
            if yes
            else Text("named_buffers() does not list {member}.", member=name)
        )
        if yes and t == "buffer":
            reason = Text(
                "{member} is {term}, so torch registers it as a buffer, and named_buffers() lists every "
                "buffer.",
                **said,
            )
        elif not yes and t == "parameter":
            reason = Text(
                "{member} is {term}: torch registers it as a parameter, not a buffer, so named_buffers() "
                "leaves it out.",
                **said,
            )
        elif not yes and not t:
            reason = Text(
                "{member} is {term}: torch does not register it at all, so named_buffers() leaves it out.",
                **said,
            )
        else:
            reason = _plain(m, value)
        return Why(answer_, reason, m.term)
    if key == "in_state_dict":
        answer_ = (
            Text("state_dict() holds {member}.", member=name)
            if yes
            else Text("state_dict() does not hold {member}.", member=name)
        )
        if yes and t == "parameter":
            reason = Text("{member} is {term}; state_dict() holds every parameter, so it is saved.", **said)
        elif yes and t == "buffer":
            reason = Text(
                "{member} is {term}; state_dict() holds every persistent buffer, so it is saved.", **said
            )
        elif not yes and t == "buffer":
            reason = Text(
                "{member} is {term}; state_dict() leaves non-persistent buffers out, so checkpoints do not "
                "carry it.",
                **said,
            )
        elif not yes and not t:
            reason = Text(
                "{member} is {term}: torch does not register it, so state_dict() does not save it.", **said
            )
        else:
            reason = _plain(m, value)
        return Why(answer_, reason, m.term)
    if key == "device_before":
        return Why(
            Text("{member} starts on {device}.", member=name, device=value),
            Text(
                "{member} is {term}; the module makes its tensors on {device} when it is built, before "
                "model.to() runs.",
                device=value,
                **said,
            ),
            m.term,
        )
    if key == "device_after":
        return _device_after(m, value, state)
    return Why(Text("torch reports {value}.", value=value), _plain(m, value), m.term)


def _plain(m: _Member, value: str) -> Text:
    return Text(
        "{member} is {term}, and torch reports {value} for it.", member=m.row.name, term=m.kind, value=value
    )


def _device_after(m: _Member, device: str, state: LabState) -> Why:
    name, before, target = m.row.name, m.row.device_before, state.spec.device
    said = {"member": name, "term": m.kind, "device": device}
    if m.tracked and device == target:
        if before == device:
            return Why(
                Text("{member} is on {device}.", member=name, device=device),
                Text(
                    "{member} is {term}; model.to() moves every parameter and buffer, and it was on "
                    "{device} already.",
                    **said,
                ),
                m.term,
            )
        return Why(
            Text("{member} moved to {device}.", member=name, device=device),
            Text(
                "{member} is {term}; model.to() moves every parameter and buffer, so it moved to {device}.",
                **said,
            ),
            m.term,
        )
    if not m.tracked and device == before:
        stayed = Text("{member} stayed on {device}.", member=name, device=device)
        if device == target:
            stayed = Text("{member} is on {device}.", member=name, device=device)
        return Why(
            stayed,
            Text(
                "{member} is {term}; model.to() moves only parameters and buffers, so it stayed on {device}.",
                **said,
            ),
            m.term,
        )
    return Why(Text("{member} is on {device}.", member=name, device=device), _plain(m, device), m.term)


def _matrix_fact(m: _Member, key: str, value: str, state: LabState) -> Why:
    name, t = m.row.name, m.tracked
    said = {"member": name, "term": m.kind}
    if value == "refused":
        experiment = COLUMN_EXPERIMENT.get(key, "")
        error = state.matrix.refusals.get(experiment, "").partition(":")[0]
        return Why(
            Text("torch refused the experiment that answers this."),
            Text(
                "torch refused the experiment “{experiment}” ({error}), so there is no answer for {member}.",
                experiment=_title(experiment),
                error=error,
                member=name,
            ),
            m.term,
        )
    yes = value == "true"
    if key == "moves_with_to":
        if yes and t:
            return Why(
                Text("{member} moves with .to().", member=name),
                Text(
                    "{member} is {term}; .to() moves every parameter and buffer, so it moves with the "
                    "module.",
                    **said,
                ),
                m.term,
            )
        if not yes and not t:
            return Why(
                Text("{member} does not move with .to().", member=name),
                Text(
                    "{member} is {term}; .to() moves only parameters and buffers, so it stays where it was "
                    "made.",
                    **said,
                ),
                m.term,
            )
    if key == "cast_by_half":
        if yes and t:
            return Why(
                Text("model.half() casts {member} to float16.", member=name),
                Text(
                    "{member} is {term}; .half() casts every floating-point parameter and buffer, so it "
                    "became float16.",
                    **said,
                ),
                m.term,
            )
        if not yes and not t:
            return Why(
                Text("model.half() leaves the dtype of {member} as it was.", member=name),
                Text(
                    "{member} is {term}; .half() casts only parameters and buffers, so it kept its dtype.",
                    **said,
                ),
                m.term,
            )
    if key == "gets_grad":
        if yes and t == "parameter" and not m.frozen:
            return Why(
                Text("backward() gives {member} a .grad.", member=name),
                Text(
                    "{member} is {term}: a parameter that requires grad, so backward() computes its "
                    "gradient.",
                    **said,
                ),
                m.term,
            )
        if yes and not t and ALL_STYLES[m.row.style].kind == "container":
            # The classic bug: a plain list's layers still run in forward(), so autograd reaches them.
            return Why(
                Text("backward() gives {member} a .grad.", member=name),
                Text(
                    "{member} is {term}: forward() still calls its layers, so backward() computes their "
                    "gradients, but torch does not register them, so model.parameters() leaves them out.",
                    **said,
                ),
                m.term,
            )
        if not yes and m.frozen:
            return Why(
                Text("backward() gives {member} no .grad.", member=name),
                Text(
                    "{member} is {term}, so autograd computes no gradient for it.",
                    **said,
                ),
                m.term,
            )
        if not yes and t == "parameter":  # trainable, yet no gradient: the loss does not use it
            return Why(
                Text("backward() gives {member} no .grad.", member=name),
                Text(
                    "{member} is {term}: a parameter that requires grad, but the loss forward() computed "
                    "does not depend on it, so backward() never reaches it.",
                    **said,
                ),
                m.term,
            )
        if not yes and t != "parameter":
            return Why(
                Text("backward() gives {member} no .grad.", member=name),
                Text("{member} is {term}: not a parameter, so autograd computes no gradient for it.", **said),
                m.term,
            )
    if key == "changed_by_step":
        if yes and t == "parameter" and not m.frozen:
            return Why(
                Text("The optimizer step changes {member}.", member=name),
                Text(
                    "{member} is {term}: the optimizer holds model.parameters(), and it got a gradient, so "
                    "the step updated it.",
                    **said,
                ),
                m.term,
            )
        if not yes and m.frozen:
            return Why(
                Text("The optimizer step leaves {member} as it was.", member=name),
                Text("{member} is {term}: it gets no gradient, so the step leaves it as it was.", **said),
                m.term,
            )
        if not yes and t == "parameter":
            return Why(
                Text("The optimizer step leaves {member} as it was.", member=name),
                Text(
                    "{member} is {term}: the optimizer holds it, but the loss does not depend on it, so it "
                    "gets no gradient and the step skips it.",
                    **said,
                ),
                m.term,
            )
        if not yes and t != "parameter":
            return Why(
                Text("The optimizer step leaves {member} as it was.", member=name),
                Text(
                    "{member} is {term}; the optimizer is handed model.parameters() only, so the step "
                    "never touches it.",
                    **said,
                ),
                m.term,
            )
    if key == "restored_by_load":
        if yes and m.row.in_state_dict:
            return Why(
                Text("load_state_dict() restores {member}.", member=name),
                Text(
                    "{member} is {term}; state_dict() saved it, so load_state_dict() puts its value back.",
                    **said,
                ),
                m.term,
            )
        if not yes and not m.row.in_state_dict:
            return Why(
                Text("load_state_dict() does not restore {member}.", member=name),
                Text(
                    "{member} is {term}; state_dict() does not carry it, so load_state_dict() cannot put "
                    "it back.",
                    **said,
                ),
                m.term,
            )
    return Why(Text("torch reports {value}.", value=value), _plain(m, value), m.term)


def _into_style(state: LabState, name: str) -> str | None:
    """The style load_into's module gives ``name``, where the state's URL says it (``into.<name>``)."""
    return dict(parse_qsl(state.query)).get("into." + name)


def _experiment_fact(key: str, value: str, state: LabState) -> Why:
    e = state.experiment
    assert e is not None
    title = _title(e.experiment)
    found = e.facts.get(key)
    listed = names(found or [])
    if key == "error":
        if e.error is None:
            return Why(
                Text("torch ran every step."),
                Text("torch accepted every step of the experiment “{experiment}”.", experiment=title),
                "",
            )
        return Why(
            Text("torch raises {error}.", error=e.error.type),
            Text(
                "torch refused {step} with {error}, so the experiment “{experiment}” stopped there.",
                step=e.error.step,
                error=e.error.type,
                experiment=title,
            ),
            "",
        )
    if key == "strict":
        return _strict(value, state)
    if key in ("missing_keys", "unexpected_keys"):
        return _keys(key, list(found or []), state)
    if key == "in_optimizer":
        return Why(
            Text("The optimizer holds {names}.", names=listed or "none"),
            Text(
                "The optimizer is handed {term}, which yields registered parameters only: {names}; buffers "
                "and plain tensors are not among them.",
                term=PARAMETERS,
                names=listed or "none",
            ),
            "parameter",
        )
    if key == "changed_by_optimizer":
        if listed:
            return Why(
                Text("The step changed {names}.", names=listed),
                Text(
                    "The optimizer updates the parameters it holds from {term} that got a gradient: {names}.",
                    term=PARAMETERS,
                    names=listed,
                ),
                "parameter",
            )
        return Why(
            Text("The step changed nothing."),
            Text(
                "No parameter the optimizer holds from {term} got a gradient, so the step changed nothing.",
                term=PARAMETERS,
            ),
            "parameter",
        )
    if key == "optimizer_holds_model_parameters":
        if value == "true":
            return Why(
                Text("The optimizer still holds the model's parameters."),
                Text(
                    "model.to() changes each of {term} in place, so each stays the same Python object, and "
                    "the optimizer made before still holds it.",
                    term=PARAMETERS,
                ),
                "parameter",
            )
        return Why(
            Text("The optimizer no longer holds the model's parameters."),
            Text(
                "The moves made new objects for {term}, so the optimizer made before still holds the old "
                "ones.",
                term=PARAMETERS,
            ),
            "parameter",
        )
    if key == "optimizer_param_dtypes":
        return Why(
            Text("The optimizer's parameters are {dtypes}.", dtypes=value),
            Text(
                "The optimizer holds the tensors it was given from {term}; after the moves torch reports "
                "them as {dtypes}.",
                term=PARAMETERS,
                dtypes=value,
            ),
            "parameter",
        )
    if key == "to_cpu":
        if value == "ok":
            return Why(
                Text("model.to('cpu') works."),
                Text("torch moved every tensor back from the {term}.", term=META),
                "meta",
            )
        return Why(
            Text("model.to('cpu') raises {error}.", error=value),
            Text(
                "A tensor on the {term} has a shape but no data, so there is nothing to copy back: torch "
                "raises {error}; to_empty() allocates new memory instead.",
                term=META,
                error=value,
            ),
            "meta",
        )
    if key == "needs_reinit":
        return Why(
            Text("{names} must be initialised again.", names=listed or "none"),
            Text(
                "to_empty() gives every parameter and buffer new, uninitialised memory on the device, as "
                "the {term} held no values: {names}.",
                term=META,
                names=listed or "none",
            ),
            "meta",
        )
    return _reported("experiment." + key, value)


def _strict(value: str, state: LabState) -> Why:
    e = state.experiment
    assert e is not None
    missing, unexpected = (list(e.facts.get(k) or ()) for k in ("missing_keys", "unexpected_keys"))
    if value == "ok":
        return Why(
            Text("load_state_dict(strict=True) loads it."),
            Text(
                "The saved {term} has exactly the keys the module loaded into expects, so the strict load "
                "succeeds.",
                term=STATE_DICT,
            ),
            "state-dict",
        )
    answer_ = Text("load_state_dict(strict=True) raises {error}.", error=value)
    if unexpected and not missing:
        name = unexpected[0]
        into = _into_style(state, name)
        if into is not None and len(unexpected) == 1:
            words, term = kind(into)
            return Why(
                answer_,
                Text(
                    "In the module loaded into, {member} is {term}, so its state_dict() has no {member}; "
                    "the saved one has it, and strict=True refuses an unexpected key: {error}.",
                    member=name,
                    term=words,
                    error=value,
                ),
                term,
            )
        return Why(
            answer_,
            Text(
                "The saved {term} has keys the module loaded into does not expect ({names}), and "
                "strict=True refuses them: {error}.",
                term=STATE_DICT,
                names=names(unexpected),
                error=value,
            ),
            "state-dict",
        )
    if missing and not unexpected:
        m = _member(state, missing[0]) if len(missing) == 1 else None
        if m is not None and not m.row.in_state_dict:
            return Why(
                answer_,
                Text(
                    "{member} is {term} in the saved module, so its state_dict() has no {member}; the "
                    "module loaded into expects it, and strict=True refuses a missing key: {error}.",
                    member=m.row.name,
                    term=m.kind,
                    error=value,
                ),
                m.term,
            )
        return Why(
            answer_,
            Text(
                "The module loaded into expects keys the saved {term} does not have ({names}), and "
                "strict=True refuses that: {error}.",
                term=STATE_DICT,
                names=names(missing),
                error=value,
            ),
            "state-dict",
        )
    if missing or unexpected:
        return Why(
            answer_,
            Text(
                "The saved {term} and the module loaded into do not have the same keys (missing: "
                "{missing}; unexpected: {unexpected}), and strict=True refuses that: {error}.",
                term=STATE_DICT,
                missing=names(missing),
                unexpected=names(unexpected),
                error=value,
            ),
            "state-dict",
        )
    return Why(
        answer_,
        Text("torch refused the strict load of the saved {term}: {error}.", term=STATE_DICT, error=value),
        "state-dict",
    )


def _keys(key: str, keys: list[str], state: LabState) -> Why:
    listed = names(keys)
    if key == "missing_keys":
        if not keys:
            return Why(
                Text("No key is missing."),
                Text("Every key the module loaded into expects is in the saved {term}.", term=STATE_DICT),
                "state-dict",
            )
        m = _member(state, keys[0]) if len(keys) == 1 else None
        if m is not None and not m.row.in_state_dict:
            return Why(
                Text("Missing: {names}.", names=listed),
                Text(
                    "{member} is {term} in the saved module, so its state_dict() does not carry it; the "
                    "module loaded into expects it, so torch reports it missing.",
                    member=m.row.name,
                    term=m.kind,
                ),
                m.term,
            )
        return Why(
            Text("Missing: {names}.", names=listed),
            Text(
                "The module loaded into expects {names}, and the saved {term} does not have them.",
                names=listed,
                term=STATE_DICT,
            ),
            "state-dict",
        )
    if not keys:
        return Why(
            Text("No key is unexpected."),
            Text("Every key of the saved {term} is one the module loaded into expects.", term=STATE_DICT),
            "state-dict",
        )
    into = _into_style(state, keys[0]) if len(keys) == 1 else None
    if into is not None:
        words, term = kind(into)
        return Why(
            Text("Unexpected: {names}.", names=listed),
            Text(
                "In the module loaded into, {member} is {term}, so its state_dict() has no {member}; the "
                "saved one has it, so torch reports it unexpected.",
                member=keys[0],
                term=words,
            ),
            term,
        )
    return Why(
        Text("Unexpected: {names}.", names=listed),
        Text(
            "The saved {term} has {names}, which the module loaded into does not expect.",
            names=listed,
            term=STATE_DICT,
        ),
        "state-dict",
    )


def _tensor_fact(t: Observation, key: str, value: str, state: LabState) -> Why:
    e = state.experiment
    assert e is not None
    words, term = TENSOR_KINDS[t.kind]
    said = {"member": t.name, "term": words, "experiment": _title(e.experiment)}
    yes = value == "true"
    if key == "has_grad":
        if yes:
            return Why(
                Text("{member} has a .grad.", member=t.name),
                Text("{member} is {term} that requires grad, so backward() computed its gradient.", **said),
                term,
            )
        answer_ = Text("{member} has no .grad.", member=t.name)
        if not t.requires_grad_before:
            reason = Text("{member} is {term} that does not require grad, so autograd computes none.", **said)
            return Why(answer_, reason, term)
        if not any("backward()" in step for step in e.steps):
            reason = Text(
                "{member} is {term}, but the experiment “{experiment}” never calls backward().", **said
            )
            return Why(answer_, reason, term)
        reason = Text(
            "{member} is {term} that requires grad, but the loss of the experiment “{experiment}” does not "
            "depend on it, so backward() never reaches it.",
            **said,
        )
        return Why(answer_, reason, term)
    if key == "changed" and value in ("true", "false"):
        return Why(
            Text("The values of {member} changed.", member=t.name)
            if yes
            else Text("The values of {member} did not change.", member=t.name),
            Text(
                "{member} is {term}; torch read it before and after the experiment “{experiment}”: it "
                "differs.",
                **said,
            )
            if yes
            else Text(
                "{member} is {term}; torch read it before and after the experiment “{experiment}”: it is "
                "the same.",
                **said,
            ),
            term,
        )
    if key == "changed":
        return Why(
            Text("The values of {member} cannot be compared.", member=t.name),
            Text(
                "{member} is {term} without readable values before or after the experiment “{experiment}”.",
                **said,
            ),
            term,
        )
    if key == "same_object":
        return Why(
            Text("{member} is still the same Python object.", member=t.name)
            if yes
            else Text("{member} is a new Python object.", member=t.name),
            Text(
                "{member} is {term}; after the experiment “{experiment}” the module holds the very tensor "
                "it held before.",
                **said,
            )
            if yes
            else Text(
                "{member} is {term}; after the experiment “{experiment}” the module holds another tensor "
                "under its name.",
                **said,
            ),
            term,
        )
    if key == "device_after":
        return Why(
            Text("{member} is on {device}.", member=t.name, device=value),
            Text(
                "{member} is {term}; torch saw it on {before} before the experiment “{experiment}” and on "
                "{device} after.",
                before=t.device_before,
                device=value,
                **said,
            ),
            term,
        )
    if key == "dtype_after":
        return Why(
            Text("{member} is {dtype}.", member=t.name, dtype=value),
            Text(
                "{member} is {term}; torch saw it as {before} before the experiment “{experiment}” and "
                "{dtype} after.",
                before=t.dtype_before,
                dtype=value,
                **said,
            ),
            term,
        )
    return Why(
        Text("torch reports {value}.", value=value),
        Text("{member} is {term}, and torch reports {value} for it.", member=t.name, term=words, value=value),
        term,
    )


def _title(experiment: str) -> Text:
    return EXPERIMENTS[experiment].title if experiment in EXPERIMENTS else verbatim(experiment)


def recap(lesson: Lesson, bounds: Bounds) -> tuple[tuple[Question, Why], ...]:
    """What a lesson showed: each question, with torch's answer in words, read live."""
    found = []
    for step in lesson.steps:
        if step.question is not None:
            found.append((step.question, explain(step.question.fact, read_state(step.state, bounds))))
    return tuple(found)
