"""Any member name, any style: a user's string reaches generated code only as a literal.

Each script must parse and have exactly the statements of its template (the AST of the script for
a benign name, constants aside), carry the name as a constant equal to it, and, run, build what
torch builds. Names that collide with nn.Module's own attributes show torch's refusal (or its
failure right after taking them) on the member row, never a 500.
"""

from __future__ import annotations

import ast
import contextlib
import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from torch import nn

from app.lab import codegen
from app.lab.devices import device_ids
from app.lab.experiments import run_experiment
from app.lab.report import inspect
from app.lab.spec import LabSpec, SpecError, from_query, resolve
from app.lab.styles import STYLES
from app.langs import ZH
from app.main import create_app
from tests.support.cases import CAP
from tests.support.reference import attach
from tests.support.scripts import expected, parse, run_scripts

# Names that have broken out of, or been rewritten by, generated code: quotes that end a docstring
# or literal, escapes, braces (format templates), NUL (no source may hold it), line breaks Python
# sees (and U+2028, which it does not), Python's rewriting of "__x" (private) and "ﬁ" (NFKC).
NASTY = [
    '"""',
    "'''",
    'x"""\nimport os; os.system("echo pwned")\n"""',
    "\\",
    '\\"',
    "'",
    '"',
    "{name}",
    "{",
    "\x00",
    "\r",
    "\n",
    "\u2028",
    "\ufeff",
    "__x",
    "ﬁ",
    "__debug__",
    "__dict__",  # found by Hypothesis: self.__dict__ = ... replaces the instance's dictionary
    "__class__",
    "None",
    "class",
    "a.b",
    "",
    "to",
    "_parameters",
    "# comment",
    "😀",
]
NAMES = st.one_of(st.sampled_from(NASTY), st.text(max_size=12))
SPECS = st.dictionaries(NAMES, st.sampled_from(list(STYLES)), min_size=1, max_size=3)


def blanked(code: str) -> str:
    """The script's AST with every constant blanked, and every attribute set on ``self``."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            node.value = None
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            node.attr = "_"
    return ast.dump(tree)


def templates(styles: dict[str, str], make) -> set[str]:
    """The shapes the script may have: each member written as an attribute or through setattr."""
    shapes = set()
    for forms in itertools.product(("m{}", "m.{}"), repeat=len(styles)):
        benign = {
            form.format(i): style for i, (form, style) in enumerate(zip(forms, styles.values(), strict=True))
        }
        shapes.add(blanked(make(benign)))
    return shapes


def custom(styles: dict[str, str], device: str = "cpu") -> LabSpec:
    return resolve(LabSpec(preset="custom", device=device, styles=styles), device_ids(), CAP)


def literal_names(code: str) -> tuple[list, list, list]:
    """From the class body: the names given to attaching(), and those each line sets."""
    tree = ast.parse(code)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    given, setting, assigned = [], [], []
    for node in ast.walk(cls):
        if isinstance(node, ast.With):
            given.append(node.items[0].context_expr.args[1].value)
            (line,) = node.body
            if isinstance(line, ast.Assign):  # self.name = ...
                assigned.append(line.targets[0].attr)
            else:  # setattr(self, "name", ...) or self.register_*("name", ...)
                call = line.value
                setting.append(call.args[1 if isinstance(call.func, ast.Name) else 0].value)
    return given, setting, assigned


def check_names(code: str, styles: dict[str, str]) -> None:
    given, setting, assigned = literal_names(code)
    assert given == list(styles)
    assert sorted(setting + assigned) == sorted(styles)
    for name in assigned:  # written as self.<name>: only where Python keeps the name as it is
        namespace: dict = {}
        exec(f"class C:\n    def __init__(self):\n        self.{name} = 1", namespace)
        assert list(vars(namespace["C"]())) == [name]


def run_here(code: str) -> tuple[dict, str]:
    namespace: dict = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<generated>", "exec"), namespace)
    return namespace, out.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SPECS)
def test_lab_script_keeps_any_name_a_literal(styles: dict[str, str]) -> None:
    report = inspect(custom(styles, "meta"))
    assert blanked(report.code) in templates(styles, lambda s: codegen.script(custom(s, "meta")))
    check_names(report.code, styles)
    tree = ast.parse(report.code)
    assert ast.get_docstring(tree, clean=False).startswith(
        f"CustomModule: {', '.join(f'{n}={s}' for n, s in styles.items())};"
    )
    members = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "members")
    assert ast.literal_eval(members.value) == list(styles)
    namespace, _ = run_here(report.code)
    model = namespace["model"]
    assert {n: f"{type(e).__name__}: {e}" for n, e in namespace["refused"].items()} == {
        m.name: m.refused for m in report.members if m.refused
    }
    assert [n for n, _ in model.named_parameters()] == [r.name for r in report.named_parameters]
    assert list(model.state_dict()) == [r.name for r in report.state_dict]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SPECS, st.sampled_from(["save_load", "load_into", "meta_roundtrip"]))
def test_experiment_script_keeps_any_name_a_literal(styles: dict[str, str], experiment: str) -> None:
    def script(s: dict[str, str]) -> str:
        return run_experiment(experiment, custom(s)).code

    code = script(styles)
    assert blanked(code) in templates(styles, script)
    check_names(code, styles)
    assert ast.get_docstring(ast.parse(code), clean=False).startswith(f"The {experiment} experiment on")


def test_a_name_that_ends_the_docstring_runs_no_code(client: TestClient, tmp_path: Path) -> None:
    """The downloaded script of /api/lab (and of an experiment) with a hostile name: nothing of it runs."""
    marker = tmp_path / "ran"
    hostile = f'x"""\nopen({str(marker)!r}, "w")\n"""'
    query = {"preset": "custom", f"style.{hostile}": "plain_tensor", "style.w": "parameter"}
    codes = [client.get("/api/lab", params=query).json()["code"]]
    codes += [client.get(f"/api/experiments/{e}", params=query).json()["code"] for e in ("step", "cast")]
    for done in run_scripts(codes):
        assert done.returncode == 0, done.stderr
        assert not marker.exists()
    assert hostile in ast.get_docstring(ast.parse(codes[0]), clean=False)  # shown, as text


def test_a_lone_surrogate_is_refused_by_the_spec() -> None:
    for spec in ({"styles": {"\ud800": "buffer"}}, {"styles": {"w": "\udfff"}}, {"device": "\ud800"}):
        with pytest.raises(ValidationError, match=r"lone surrogate|unicode string"):
            LabSpec(preset="custom", **spec)
    # Through a URL's query: the refusal names the field; the API keeps pydantic's words, a
    # Chinese page says them inside its own sentence.
    with pytest.raises(SpecError) as refused:
        from_query([("preset", "custom"), ("style.\ud800", "buffer")])
    assert refused.value.loc == ("query", "styles")
    assert "lone surrogate" in refused.value.message and "无效（pydantic 原文）" in refused.value.text(ZH)


# Every attribute and method an nn.Module has, as a member name, in every style.
MODULE_NAMES = sorted(dir(nn.Module()))


def direct(name: str, style: str) -> tuple[nn.Module, str | None]:
    """What torch does, written out here: attach the member, then make the calls a lab makes."""
    torch.manual_seed(0)
    module = nn.Module()
    module.linear = nn.Linear(3, 3)
    try:
        attach(module, name, torch.randn(3), style)
        module.to("cpu")
        module.state_dict()
        list(module.named_parameters())
        list(module.named_buffers())
        list(module.parameters())
    except Exception as exc:
        return module, f"{type(exc).__name__}: {exc}"
    return module, None


@pytest.mark.parametrize("style", list(STYLES))
def test_every_module_attribute_name_is_a_result_never_a_500(style: str) -> None:
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        codes = []
        for name in MODULE_NAMES:
            query = {"preset": "custom", "device": "meta", f"style.{name}": style}
            response = client.get("/api/lab", params=query)
            assert response.status_code == 200, (name, response.text[:300])
            report = response.json()
            (row,) = report["members"]
            module, refusal = direct(name, style)
            assert row["refused"] == refusal, name
            if refusal is None:
                module.to("meta")
                assert [r["name"] for r in report["state_dict"]] == list(module.state_dict()), name
                assert [r["name"] for r in report["named_parameters"]] == [
                    n for n, _ in module.named_parameters()
                ]
            codes.append((name, report))
            for url in ("/api/matrix", "/api/experiments/step", "/api/experiments/save_load", "/"):
                assert client.get(url, params=query).status_code == 200, (url, name)
    # The scripts, run with plain python, print the same refusals (one interpreter for them all).
    runner = (
        "import contextlib, io, json, sys\nout = []\nfor code in json.load(sys.stdin):\n"
        "    buf = io.StringIO()\n    with contextlib.redirect_stdout(buf):\n"
        "        exec(compile(code, '<generated>', 'exec'), {'__name__': '__main__'})\n"
        "    out.append(buf.getvalue())\njson.dump(out, sys.stdout)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", runner],
        input=json.dumps([r["code"] for _, r in codes]),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for (name, report), output in zip(codes, json.loads(done.stdout), strict=True):
        assert parse(output) == expected(report), name  # every table and device the report shows
        _, refusal = direct(name, style)
        refused = [line for line in output.splitlines() if line.startswith("refused ")]
        assert refused == ([f"refused {name} {refusal.replace(': ', ' ', 1)}"] if refusal else []), name


REGISTRIES = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set")


@pytest.mark.parametrize("name", REGISTRIES)
# One style of each way torch takes a tensor: parameter, buffer, non-persistent buffer, attribute.
@pytest.mark.parametrize("style", ["frozen_parameter", "buffer", "non_persistent_buffer", "plain_tensor"])
def test_a_registry_name_then_more_members_is_torchs_answer(name: str, style: str) -> None:
    """A member named like one of Module's registries, then ordinary members: each gets torch's own
    answer (its refusal, or a place in the tables), never a 500, and the script prints the same."""
    members = {name: style, "z": "buffer", "y": "non_persistent_buffer"}
    query = {"preset": "custom", **{f"style.{m}": s for m, s in members.items()}}
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        for url in ("/api/lab", "/api/matrix", "/api/experiments/step", "/api/experiments/save_load", "/"):
            assert client.get(url, params=query).status_code == 200, url
        report = client.get("/api/lab", params=query).json()
    output = subprocess.run(
        [sys.executable, "-c", report["code"]], capture_output=True, text=True, check=True
    )
    printed = [line.split(" ", 2)[1] for line in output.stdout.splitlines() if line.startswith("refused ")]
    assert printed == [m["name"] for m in report["members"] if m["refused"]]
    if style in ("parameter", "frozen_parameter", "plain_tensor") and name == "_non_persistent_buffers_set":
        direct_module = nn.Module()
        attach(direct_module, name, torch.randn(3), style)  # torch takes it, and loses its registry
        with pytest.raises(AttributeError, match="discard"):
            direct_module.register_buffer("z", torch.randn(3))
        (z,) = [m for m in report["members"] if m["name"] == "z"]
        assert z["refused"].startswith("AttributeError") and "discard" in z["refused"]


@pytest.mark.parametrize("name", ["linear.weight", "linear.bias", "linear"])
@pytest.mark.parametrize("style", list(STYLES))
def test_a_member_named_like_the_layers_tensors_takes_none_of_their_places(name: str, style: str) -> None:
    """The custom module has its own nn.Linear: a member "linear.weight" is torch's plain attribute
    (setattr takes the dotted name) or torch's refusal; either way the layer's weight stays the
    layer's, in every table, in the step's facts and in the script."""
    spec = custom({name: style}, device="meta")
    report = inspect(spec)
    (row,) = report.members
    module = nn.Module()
    module.linear = nn.Linear(3, 3)
    refusal = None
    try:
        attach(module, name, torch.randn(3), style)
    except Exception as exc:
        refusal = f"{type(exc).__name__}: {exc}"
    assert row.refused == refusal
    mine = (
        None
        if refusal
        else module.__dict__.get(name, module._parameters.get(name, module._buffers.get(name)))
    )
    params, buffers = dict(module.named_parameters()), dict(module.named_buffers())
    state = module.state_dict(keep_vars=True)
    assert row.in_parameters == any(p is mine for p in params.values())
    assert row.in_buffers == any(b is mine for b in buffers.values())
    assert row.in_state_dict == any(t is mine for t in state.values())
    module.to("meta")
    assert [r.name for r in report.state_dict] == list(module.state_dict())
    step = run_experiment("step", resolve(spec.model_copy(update={"device": "cpu"}), device_ids(), CAP))
    if step.error is None:
        assert {"linear.weight", "linear.bias"} <= set(step.facts["changed_by_optimizer"])
