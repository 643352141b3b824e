"""Mutation testing of the domain: ``make mutants WHAT=app/classroom`` (a package or one module).

mutmut (3.8) plants small bugs one at a time in the target's domain modules (those of the import
contract that keeps the web stack out of them) and runs the tests that cover each; a mutant no test
notices "survived". The run happens in a scratch copy of the project with a [tool.mutmut] section
made for the target, so the checkout is untouched. It prints the killed share per module and every
survivor, as a diff with ``--show``. Tests that start browsers or server processes are left out:
they take seconds each, and the domain's own tests are what should catch a domain bug.

Not part of ``make test``: a package takes minutes to an hour on two cores.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO

ROOT = Path(os.environ.get("MRE_MUTANTS_ROOT") or Path(__file__).resolve().parents[1])
COPIED = (
    "app",
    "tests",
    "bench",
    "templates",
    "static",
    "lessons",
    "babel.cfg",
    "README.md",
    "docs",
    "Makefile",
)
SKIPPED_TESTS = "not browser and not servers"
# mutmut's statuses: what counts as caught, and what is no verdict at all.
CAUGHT = {"killed", "timeout", "caught by type check", "segfault"}
NO_VERDICT = {"skipped", "not checked"}


def domain_modules() -> list[str]:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["name"].startswith("Domain modules"))["source_modules"]


def target(what: str) -> tuple[list[str], list[str]]:
    """The files to mutate and the tests to run for ``what`` (app/<package> or app/<package>/<m>.py)."""
    path = Path(what.rstrip("/"))
    if path.suffix == ".py":
        files = [path.as_posix()]
    else:
        prefix = ".".join(path.parts) + "."
        files = [m.replace(".", "/") + ".py" for m in domain_modules() if m.startswith(prefix)]
    if not files or not all((ROOT / f).is_file() for f in files):
        raise SystemExit(f"mutants: nothing to mutate in {what!r} (a package of app/ or one of its modules)")
    package = Path(files[0]).parent.relative_to("app")
    if not package.parts:
        return files, ["tests"]
    # The mirrored folder, and test files elsewhere named after the package: the lab's code for
    # real models (a preset's ``make``) is tested with the architectures (tests/architectures/test_lab.py).
    named = sorted(
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "tests").rglob(f"test_{package.name}*.py")
        if path.parent.name not in (package.name, "browser")
    )
    return files, [f"tests/{package.as_posix()}", *named]


def shown_as_source(app: Path) -> set[str]:
    """Names of the functions the app prints with ``getsource`` (the generated scripts carry them):
    ``getsource(name)``, and ``getsource(f) for f in (a, b)``."""

    def printing(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) == "getsource"
        )

    names, looped = set(), set()  # looped: a comprehension's own variable (the f above), no function
    for path in app.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if printing(node) and node.args and isinstance(node.args[0], ast.Name):
                names.add(node.args[0].id)
            elif isinstance(node, ast.GeneratorExp | ast.ListComp) and printing(node.elt):
                names.update(getattr(e, "id", "") for e in getattr(node.generators[0].iter, "elts", ()))
                looped.add(getattr(node.generators[0].target, "id", ""))
    return names - looped


def _inside_functions(tree: ast.Module) -> set[ast.AST]:
    """Every node of ``tree`` inside a function's body (run when called, not at import)."""
    inside: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            body = node.body if isinstance(node.body, list) else [node.body]
            inside.update(n for b in body for n in ast.walk(b))
    return inside


def used_in_functions(app: Path) -> set[str]:
    """Every name the app's functions refer to (called, or passed on to be called later)."""
    names = set()
    for module in app.rglob("*.py"):
        for n in _inside_functions(ast.parse(module.read_text())):
            names.add(n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else "")
    return names


def run_at_import(path: Path, used_later: set[str]) -> set[str]:
    """The top-level functions of ``path`` that only its import calls (a table built by calling a
    helper at module level): mutmut's fork server imports the app once, before any mutant is
    chosen, so a mutant there never runs. A function a function anywhere in the app refers to
    (``used_later``, from used_in_functions) may run later, and stays mutated."""
    tree = ast.parse(path.read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    inside = _inside_functions(tree)
    at_import = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id in defined
        and n not in inside
    }
    return at_import - used_later


def leave_unmutated(path: Path, names: set[str]) -> list[str]:
    """Mark the top-level functions ``names`` of ``path`` ``no mutate block``: mutmut would replace
    them by its trampoline, and ``getsource`` would then print the trampoline into every script."""
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for node in ast.parse("".join(lines)).body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            colon = node.body[0].lineno - 2  # the signature's last line, just above the body
            while not lines[colon].split("#")[0].rstrip().endswith(":"):
                colon -= 1
            lines[colon] = lines[colon].rstrip("\n") + "  # pragma: no mutate block\n"
            kept.append(node.name)
    path.write_text("".join(lines))
    return kept


def configure(scratch: Path, files: list[str], tests: list[str]) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, scratch / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy(source, scratch / name)
    shown = shown_as_source(scratch / "app")
    used_later = used_in_functions(scratch / "app")
    for file in files:
        for name in leave_unmutated(scratch / file, shown):
            print(f"not mutated: {file}:{name} (its source is printed into the generated scripts)")
        for name in leave_unmutated(scratch / file, run_at_import(scratch / file, used_later)):
            print(f"not mutated: {file}:{name} (called only at import, before a mutant is chosen)")
    config = (ROOT / "pyproject.toml").read_text()
    config += (
        "\n[tool.mutmut]\n"
        'source_paths = ["app"]\n'
        f"only_mutate = {files!r}\n"
        f"pytest_add_cli_args_test_selection = {tests!r}\n"
        f"also_copy = {[n for n in COPIED if n not in ('app', 'tests')]!r}\n"
        # tests.mutants_fixtures: a test is credited with what its module and session fixtures called.
        f'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "tests.mutants_fixtures", "-q", "-m", '
        f'"{SKIPPED_TESTS}"]\n'
        # A mutant that hangs a background task (a broker's listener) waits out its timeout: 15 times
        # its tests' time by default, minutes each; 5 times still tells a hang from a loaded machine.
        # mutmut's wall limit is (tests' time + constant) * multiplier: with its default constant, 1 s,
        # a mutant whose tests took 0.02 s had 5 s, and a fresh fork on a busy machine overran it and
        # was counted caught ("timeout") though it survives; 10 s leaves a slow start room.
        "timeout_multiplier = 5.0\n"
        "timeout_constant = 10.0\n"
        # mutmut's default forks each mutant's run from the process that ran the whole suite: every
        # memo, lru_cache and registry the suite filled is inherited, so a mutant in code whose result
        # is kept never runs and "survives". A fork server that only collected the tests has none.
        'process_isolation = "forkserver"\n'
    )
    (scratch / "pyproject.toml").write_text(config)


def results(scratch: Path, mutmut: str) -> dict[str, str]:
    listed = subprocess.run([mutmut, "results", "--all", "true"], cwd=scratch, capture_output=True, text=True)
    found = {}
    for line in listed.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            found[name] = status
    return found


def report(found: dict[str, str], scratch: Path, mutmut: str, show: bool) -> float:
    by_module: dict[str, Counter] = defaultdict(Counter)
    for name, status in found.items():
        module = re.sub(r"\.x[_ǁ].*$", "", name)
        by_module[module][status] += 1
    print(f"\n{'module':<36}{'mutants':>9}{'caught':>8}{'survived':>10}{'no tests':>10}{'share':>8}")
    total_caught = total = 0
    for module, counts in sorted(by_module.items()):
        judged = sum(n for s, n in counts.items() if s not in NO_VERDICT)
        caught = sum(n for s, n in counts.items() if s in CAUGHT)
        total_caught, total = total_caught + caught, total + judged
        line = f"{module:<36}{judged:>9}{caught:>8}{counts['survived']:>10}{counts['no tests']:>10}"
        print(f"{line}{caught / judged:>8.1%}" if judged else f"{line}{'-':>8}")
    share = total_caught / total if total else 1.0
    print(f"{'all':<36}{total:>9}{total_caught:>8}{'':>20}{share:>8.1%}")
    survivors = [n for n, s in sorted(found.items()) if s not in CAUGHT | NO_VERDICT]
    if survivors:
        print(f"\n{len(survivors)} not caught (mutmut show NAME, in {scratch}):")
        for name in survivors:
            print(f"  {name}: {found[name]}")
            if show:
                diff = subprocess.run(
                    [mutmut, "show", name], cwd=scratch, capture_output=True, text=True
                ).stdout
                print("".join(f"      {line}\n" for line in diff.splitlines() if line[:2] in ("- ", "+ ")))
    return share


def sampled(scratch: Path, run: list[str], env: dict, log: IO[str], size: int, seed: int) -> list[str]:
    """``size`` mutant names drawn at random. mutmut names its mutants only once it has made them: a
    first run asked for a mutant that does not exist makes them (and the tests' stats, which the
    second run reuses), then stops."""
    subprocess.run([*run, "no-such-mutant"], cwd=scratch, env=env, stdout=log, stderr=subprocess.STDOUT)
    names = sorted(
        name
        for meta in (scratch / "mutants").rglob("*.meta")
        for name in json.loads(meta.read_text())["exit_code_by_key"]
    )
    return sorted(random.Random(seed).sample(names, min(size, len(names))))


def wilson(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % interval of a share seen in a sample of n (Wilson's: sound at 0 % and 100 % too)."""
    if n == 0:
        return 0.0, 1.0
    center = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, center - half), min(1.0, center + half)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make mutants", description=__doc__.splitlines()[0])
    parser.add_argument("what", help="app/<package> (its domain modules) or app/<package>/<module>.py")
    parser.add_argument("--show", action="store_true", help="print each survivor's diff")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy (to run mutmut show)")
    parser.add_argument("--tests", nargs="+", help="the tests to run (default: the package's mirrored tests)")
    parser.add_argument("--files", nargs="+", help="the files to mutate (default: WHAT's domain modules)")
    parser.add_argument("--sample", type=int, help="judge this many mutants drawn at random, not all")
    parser.add_argument("--seed", type=int, default=0, help="the draw's seed (--sample)")
    args = parser.parse_args(argv)
    files, tests = target(args.what) if not args.files else (args.files, [])
    tests = args.tests or tests
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    scratch = Path(tempfile.mkdtemp(prefix="mre-mutants-"))
    try:
        configure(scratch, files, tests)
        print(f"mutating {', '.join(files)}; tests: {' '.join(tests)} (-m '{SKIPPED_TESTS}'); in {scratch}")
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        run = [mutmut, "run", "--max-children", str(args.max_children)]
        with open(scratch / "mutmut.log", "w") as log:
            if args.sample:
                run += sampled(scratch, run, env, log, args.sample, args.seed)
            subprocess.run(run, cwd=scratch, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
        found = results(scratch, mutmut)
        if not any(status not in NO_VERDICT for status in found.values()):
            # mutmut stops before judging anything when the unmutated tests fail: say why, not 100 %.
            tail = (scratch / "mutmut.log").read_text(errors="replace")[-4000:]
            print(f"mutants: no mutant was judged; mutmut said:\n{tail}")
            return 1
        share = report(found, scratch, mutmut, args.show)
        judged = sum(status not in NO_VERDICT for status in found.values())
        if args.sample:
            low, high = wilson(share, judged)
            print(f"\n{judged} of {len(found)} mutants drawn at random (seed {args.seed}): the killed share")
            print(f"of all of them is between {low:.1%} and {high:.1%} (95 % interval)")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
