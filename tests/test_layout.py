"""The layout holds: every module of a feature is either domain (in the import contract that keeps
the web stack and the settings out of it) or one of the feature's web or wiring modules; every
module with logic has its mirrored test module; test modules import helpers from tests/support only."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ("lab", "doctor", "architectures", "classroom")
# A feature's modules that are not domain: its routes and page model (the web side), and those
# that read Settings or a request for it (its wiring). Anything else must be in the domain contract.
WEB_SIDE = {
    "app.lab.routes", "app.lab.page", "app.lab.deps",
    "app.doctor.routes", "app.doctor.page", "app.doctor.uploads", "app.doctor.runs", "app.doctor.caps",
    "app.architectures.routes", "app.architectures.page",
    "app.classroom.routes", "app.classroom.page", "app.classroom.brokers",
}  # fmt: skip
# Modules with no logic of their own to test: a dependency or an entry point of one line, the
# report's models. Each is exercised by the tests of the modules that use it.
NO_LOGIC = {
    "app/__main__.py": "runs uvicorn with uvicorn_options (tests/http/test_serving.py starts it)",
    "app/resources.py": "one path choice (tests/test_packaging.py serves from an installed copy)",
    "app/web/deps.py": "one FastAPI dependency (every route test goes through it)",
    "app/lab/deps.py": "one FastAPI dependency (tests/lab/test_routes.py goes through it)",
    "app/doctor/report.py": "the report's pydantic models and refusal classes (tests/test_errors.py)",
}


def modules(package: str) -> set[str]:
    return {
        f"app.{package}.{p.stem}" for p in (ROOT / "app" / package).glob("*.py") if p.name != "__init__.py"
    }


def test_every_feature_module_is_domain_or_its_features_web_side() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    domain = set(next(c for c in contracts if c["name"].startswith("Domain modules"))["source_modules"])
    for feature in FEATURES:
        unclassified = modules(feature) - domain - WEB_SIDE
        assert unclassified == set(), (
            f"add to the domain contract in pyproject.toml or to WEB_SIDE: {unclassified}"
        )
    assert not domain & WEB_SIDE


def test_every_module_with_logic_has_its_mirrored_test_module() -> None:
    missing = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        relative = path.relative_to(ROOT / "app")
        if path.name == "__init__.py" or f"app/{relative}" in NO_LOGIC:
            continue
        test = ROOT / "tests" / relative.parent / f"test_{path.name}"
        if not test.exists():
            missing.append(str(test.relative_to(ROOT)))
    assert missing == []


def test_test_modules_take_their_helpers_from_tests_support_only() -> None:
    wrong = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            # tests.mutants is a tool (make mutants), not a test module: its own test imports it.
            if module.startswith("tests.") and not module.startswith(("tests.support", "tests.mutants")):
                wrong.append(f"{path.relative_to(ROOT)}: from {module}")
    assert wrong == []
