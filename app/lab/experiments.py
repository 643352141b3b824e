"""Experiments: what torch does to each tensor of a module when you train, save, load, cast and move.

Each experiment builds the module of a resolved spec, notes every tensor, runs real torch steps and
notes every tensor again. When torch refuses a step, its exception type and message are part of
the result, not an error of the app.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import BaseModel, Field
from torch import nn

from app.lab import codegen
from app.lab.presets import lookup
from app.lab.report import build, dtype_name
from app.lab.spec import LabSpec
from app.lab.tensors import tensors
from app.langs import Text

CASTS = {"half": torch.float16, "bfloat16": torch.bfloat16, "double": torch.float64}
SMALL = 16  # a tensor this small has its values in the result: a student can read them


class TorchError(BaseModel):
    step: str = Field(description="The step torch refused, as code.")
    type: str = Field(examples=["RuntimeError"])
    message: str


class Observation(BaseModel):
    name: str
    kind: str = Field(description="parameter, buffer or tensor (a plain attribute torch does not track)")
    device_before: str
    device_after: str
    dtype_before: str
    dtype_after: str
    requires_grad_before: bool
    requires_grad_after: bool
    has_grad: bool = Field(description="A .grad is present after the experiment.")
    changed: bool | None = Field(description="Values differ after the experiment; null where not comparable.")
    same_object: bool = Field(description="Still the same Python object under the same name.")
    values_before: list[float] | None = Field(
        None,
        description=f"The values, flattened, to 6 significant digits (tensors of at most {SMALL} elements).",
    )
    values_after: list[float] | None = Field(
        None, description="The same after the experiment; null where there is no data or it is garbage."
    )


class ExperimentResult(BaseModel):
    experiment: str
    spec: LabSpec
    steps: list[str] = Field(description="What was run, as code, in order.")
    tensors: list[Observation]
    facts: dict[str, list[str] | bool | str] = Field(default_factory=dict)
    error: TorchError | None = None
    code: str = Field(
        "", description="A runnable script of this experiment that prints the same observations."
    )


@dataclass
class Snapshot:
    kind: str
    obj: torch.Tensor
    device: str
    dtype: str
    requires_grad: bool
    values: torch.Tensor | None  # a copy; None on meta, which has no data


def snapshot(model: nn.Module) -> dict[str, Snapshot]:
    return {
        name: Snapshot(
            kind,
            t,
            str(t.device),
            dtype_name(t.dtype),
            t.requires_grad,
            None if t.is_meta else t.detach().clone(),
        )
        for name, (kind, t) in tensors(model).items()
    }


def _changed(before: Snapshot, after: torch.Tensor) -> bool | None:
    if before.values is None or after.is_meta:
        return None
    if before.values.shape != after.shape:
        return True
    # Compare as float64 on the CPU, so a cast alone (exactly representable values) is not a change.
    return not torch.equal(before.values.cpu().double(), after.detach().cpu().double())


def _values(t: torch.Tensor | None) -> list[float] | None:
    """A small tensor's values to 6 significant digits: torch's last bits vary with the thread
    count (sums in another order), and a reported fact must not."""
    if t is None or t.numel() > SMALL:
        return None
    return [float(f"{x:.6g}") for x in t.detach().cpu().double().flatten().tolist()]


def observe(
    before: dict[str, Snapshot], model: nn.Module, garbage: set[str] = frozenset()
) -> list[Observation]:
    now = tensors(model)
    rows = []
    for name, b in before.items():
        _, t = now.get(name, (b.kind, b.obj))
        rows.append(
            Observation(
                name=name,
                kind=b.kind,
                device_before=b.device,
                device_after=str(t.device),
                dtype_before=b.dtype,
                dtype_after=dtype_name(t.dtype),
                requires_grad_before=b.requires_grad,
                requires_grad_after=t.requires_grad,
                has_grad=t.grad is not None,
                changed=None if name in garbage else _changed(b, t),
                same_object=t is b.obj,
                values_before=_values(b.values),
                values_after=None if name in garbage or t.is_meta else _values(t),
            )
        )
    return rows


class Refused(Exception):
    """Torch refused a step; the experiment stops there and reports it."""

    def __init__(self, step: str, error: Exception) -> None:
        super().__init__(step)
        self.error = TorchError(step=step, type=type(error).__name__, message=str(error))


class Run:
    """One experiment in progress: the module watched, the steps taken as code, what was found."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.facts: dict[str, list[str] | bool | str] = {}
        self.model: nn.Module | None = None
        self.before: dict[str, Snapshot] = {}
        self.uninitialised: set[str] = set()  # values not comparable: to_empty() left them garbage

    def watch(
        self, model: nn.Module, name: str = "model", before: tuple[nn.Module, str] | None = None
    ) -> nn.Module:
        """Observe ``model`` at the end, against a snapshot of ``before`` (itself, by default) now."""
        source, source_name = before if before is not None else (model, name)
        self.model = model
        self.before = snapshot(source)
        self.steps.append(f"watched, before = {name}, snapshot({source_name})")
        return model

    def setup(self, code: str) -> None:
        """A line the script needs that cannot fail (making a module, an input, a buffer)."""
        self.steps.append(code)

    def do(self, code: str, action: Callable[[], object]) -> object:
        self.steps.append(code)
        try:
            return action()
        except Exception as exc:  # torch's own refusal is the result
            raise Refused(code, exc) from exc

    def attempt(self, key: str, code: str, action: Callable[[], object]) -> None:
        """A step torch may refuse without ending the experiment: its outcome becomes a fact."""
        try:
            action()
            self.facts[key] = "ok"
        except Exception as exc:  # torch's refusal, recorded; the experiment goes on
            self.facts[key] = f"{type(exc).__name__}: {exc}"
        self.steps.append(
            f"try:\n    {code}\nexcept Exception as error:  # torch may refuse this; the experiment goes on\n"
            f"    print({key!r}, type(error).__name__, error)"
        )


def sample_input(spec: LabSpec) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(1)
        return eval(lookup(spec.preset).sample_input, {"torch": torch}).to(spec.device)


def made(run: Run, spec: LabSpec, name: str = "model", move: bool = True, cls: str = "") -> nn.Module:
    """The module of ``spec`` (moved to its device), and the script lines that make it."""
    run.setup(f"torch.manual_seed(0)\n{name} = {cls or lookup(spec.preset).class_name}()")
    if not move:
        return build(spec, cls, refusals={})
    run.setup(f"{name}.to({spec.device!r})")
    return build(spec, cls, refusals={}).to(spec.device)


def _forward(
    run: Run, model: nn.Module, spec: LabSpec, mode: str = "train", grad: bool = True
) -> torch.Tensor:
    run.do(f"model.{mode}()", getattr(model, mode))
    run.setup(f"torch.manual_seed(1)\nx = {lookup(spec.preset).sample_input}.to({spec.device!r})")
    x = sample_input(spec)
    call = lookup(spec.preset).call  # model(x), or a real model's model(x).logits

    def called() -> object:
        return eval(call, {"model": model, "x": x})

    if grad:
        return run.do(f"out = {call}", called)  # type: ignore[return-value]
    with torch.no_grad():
        return run.do(f"with torch.no_grad():\n    out = {call}", called)  # type: ignore[return-value]


def forward(run: Run, spec: LabSpec, mode: str = "train", **_: object) -> None:
    model = run.watch(made(run, spec))
    _forward(run, model, spec, mode, grad=False)


def step(run: Run, spec: LabSpec, **_: object) -> None:
    model = run.watch(made(run, spec))
    code = "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)"
    optimizer = run.do(code, lambda: torch.optim.SGD(model.parameters(), lr=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    run.facts["in_optimizer"] = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]  # type: ignore[attr-defined]
    out = _forward(run, model, spec)
    # Not out.sum(): after a train-mode BatchNorm its gradient is exactly zero for everything before
    # the norm and for the norm's weight (a normalised batch sums to zero), so torch's values are
    # rounding noise that flips with the thread count. Weights that ramp over the batch are not
    # constant along it, so normalisation does not cancel them.
    code = "weights = torch.linspace(0, 1, out.numel(), device=out.device).view(out.shape)"
    weights = run.do(code, lambda: torch.linspace(0, 1, out.numel(), device=out.device).view(out.shape))
    run.do("(out * weights).sum().backward()", lambda: (out * weights).sum().backward())
    mid = snapshot(model)  # forward may change buffers too: tell the optimizer's own changes apart
    run.do("optimizer.step()", optimizer.step)  # type: ignore[attr-defined]
    now = tensors(model)
    run.facts["changed_by_optimizer"] = [n for n, b in mid.items() if _changed(b, now[n][1])]


def cast(run: Run, spec: LabSpec, dtype: str = "half", **_: object) -> None:
    model = run.watch(made(run, spec))
    run.do(f"model.{dtype}()", getattr(model, dtype))


def save_load(run: Run, spec: LabSpec, **_: object) -> None:
    """Change the module with a forward, save its state_dict, load it into a fresh module.

    Observed against the saved module: "changed" means "did not come back from the checkpoint".
    """
    trained = run.watch(made(run, spec))
    _forward(run, trained, spec, grad=False)
    buffer = io.BytesIO()
    run.setup("buffer = io.BytesIO()")
    run.do("torch.save(model.state_dict(), buffer)", lambda: torch.save(trained.state_dict(), buffer))
    fresh = run.watch(made(run, spec, "fresh"), "fresh", before=(trained, "model"))
    buffer.seek(0)
    run.setup("buffer.seek(0)")
    state = run.do(
        "state = torch.load(buffer, weights_only=True)", lambda: torch.load(buffer, weights_only=True)
    )
    result = run.do("fresh.load_state_dict(state)", lambda: fresh.load_state_dict(state))  # type: ignore[arg-type]
    run.facts["missing_keys"] = list(result.missing_keys)  # type: ignore[attr-defined]
    run.facts["unexpected_keys"] = list(result.unexpected_keys)  # type: ignore[attr-defined]


def load_into(run: Run, spec: LabSpec, other: LabSpec | None = None, **_: object) -> None:
    """Save with ``spec``, load into the module of ``other``: strict first, then strict=False."""
    source = made(run, spec)
    into = lookup(spec.preset).class_name + "Into"
    target = run.watch(made(run, other or spec, "other", cls=into), "other")
    state = run.do("state = model.state_dict()", source.state_dict)
    run.attempt("strict", "other.load_state_dict(state)", lambda: target.load_state_dict(state))  # type: ignore[arg-type]
    code = "other.load_state_dict(state, strict=False)"
    result = run.do(code, lambda: target.load_state_dict(state, strict=False))  # type: ignore[arg-type]
    run.facts["missing_keys"] = list(result.missing_keys)  # type: ignore[attr-defined]
    run.facts["unexpected_keys"] = list(result.unexpected_keys)  # type: ignore[attr-defined]


def identity(run: Run, spec: LabSpec, **_: object) -> None:
    """Which tensors stay the same Python object through .to(device) and .to(float64)."""
    model = run.watch(made(run, spec, move=False))
    code = "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # made before the moves"
    optimizer = run.do(code, lambda: torch.optim.SGD(model.parameters(), lr=0.1))
    run.do(f"model.to({spec.device!r})", lambda: model.to(spec.device))
    run.do("model.to(torch.float64)", lambda: model.to(torch.float64))
    held = [p for g in optimizer.param_groups for p in g["params"]]  # type: ignore[attr-defined]
    current = {id(p) for p in model.parameters()}
    run.facts["optimizer_holds_model_parameters"] = all(id(p) in current for p in held)
    run.facts["optimizer_param_dtypes"] = sorted({dtype_name(p.dtype) for p in held})


def meta_roundtrip(run: Run, spec: LabSpec, **_: object) -> None:
    """To meta, back with .to() (torch refuses), then to_empty(): which tensors need re-initialising."""
    model = run.watch(made(run, spec, move=False))
    run.do('model.to("meta")', lambda: model.to("meta"))
    run.attempt("to_cpu", 'model.to("cpu")', lambda: model.to("cpu"))
    run.do('model.to_empty(device="cpu")', lambda: model.to_empty(device="cpu"))
    # to_empty allocates without initialising: every tensor it touched holds garbage until re-init,
    # so whether its values "changed" is left unsaid (it would differ from run to run).
    run.facts["needs_reinit"] = [n for n, (kind, _) in tensors(model).items() if kind != "tensor"]
    run.uninitialised = set(run.facts["needs_reinit"])
    run.setup('uninitialised = {n for n, (kind, _) in tensors(model).items() if kind != "tensor"}')


@dataclass(frozen=True)
class Experiment:
    id: str
    title: dict[str, str]  # per language (EN, ZH)
    description: dict[str, str]
    run: Callable[..., None]
    params: dict[str, tuple[str, ...]]  # option name -> allowed values (first is the default)


EXPERIMENTS: dict[str, Experiment] = {
    e.id: e
    for e in (
        Experiment(
            "forward",
            Text("Forward pass"),
            Text("The preset's forward on a sample input."),
            forward,
            {"mode": ("train", "eval")},
        ),
        Experiment(
            "step",
            Text("One SGD step"),
            Text("Forward, backward, one SGD step over model.parameters()."),
            step,
            {},
        ),
        Experiment(
            "cast",
            Text("Dtype cast"),
            Text("model.half(), .bfloat16() or .double()."),
            cast,
            {"dtype": tuple(CASTS)},
        ),
        Experiment(
            "save_load",
            Text("Save and load"),
            Text("A forward changes the module; its state_dict is saved and loaded into a fresh module."),
            save_load,
            {},
        ),
        Experiment(
            "load_into",
            Text("Load into another module"),
            Text("Save with this spec, load into another: strict, then strict=False."),
            load_into,
            {},
        ),
        Experiment(
            "identity",
            Text("Object identity"),
            Text(
                "Which tensors stay the same object through .to(device) and .to(float64), and what that "
                "means for an optimizer made before."
            ),
            identity,
            {},
        ),
        Experiment(
            "meta_roundtrip",
            Text("Meta and back"),
            Text("To meta, .to('cpu') refused, then to_empty(): which tensors need re-initialising."),
            meta_roundtrip,
            {},
        ),
    )
}


def run_experiment(
    experiment_id: str, spec: LabSpec, other: LabSpec | None = None, **params: str
) -> ExperimentResult:
    """Run one experiment on the module of a resolved spec."""
    run = Run()
    error = None
    try:
        EXPERIMENTS[experiment_id].run(run, spec, other=other, **params)
    except Refused as refused:
        error = refused.error
    return ExperimentResult(
        experiment=experiment_id,
        spec=spec,
        steps=run.steps,
        tensors=observe(run.before, run.model, run.uninitialised) if run.model is not None else [],
        facts=run.facts,
        error=error,
        code=codegen.experiment_script(spec, experiment_id, run.steps, other),
    )
