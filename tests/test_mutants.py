"""The mutation tool's own reading of the code: which functions it leaves unmutated, and why."""

from __future__ import annotations

from pathlib import Path

from tests.mutants import leave_unmutated, run_at_import, shown_as_source, target, used_in_functions, wilson

MODULE = """\
import inspect


def helper(x):
    return x + 1


def table_row(name):
    return {"name": name}


def both(name):
    return name.upper()


TABLE = [table_row(n) for n in ("a", "b")]
UPPER = both("a")


class Holder:
    ROW = table_row("c")


def printed():
    return 0


def script():
    return inspect.getsource(helper) + "".join(inspect.getsource(f) for f in (printed,))


def later():
    return both("b")
"""


def write(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "m.py").write_text(MODULE)
    return app


def test_functions_only_the_import_calls_are_found_and_those_called_later_are_not(tmp_path: Path) -> None:
    app = write(tmp_path)
    # table_row: at module level and in a class body; both: at module level, and again in later().
    assert run_at_import(app / "m.py", used_in_functions(app)) == {"table_row"}
    (app / "other.py").write_text("from app.m import table_row\n\ndef f():\n    return table_row('d')\n")
    assert (
        run_at_import(app / "m.py", used_in_functions(app)) == set()
    )  # another module calls it when running


def test_functions_printed_with_getsource_are_found(tmp_path: Path) -> None:
    assert shown_as_source(write(tmp_path)) == {"helper", "printed"}


def test_leaving_a_function_unmutated_marks_its_signature_and_nothing_else(tmp_path: Path) -> None:
    path = write(tmp_path) / "m.py"
    assert leave_unmutated(path, {"helper", "absent"}) == ["helper"]
    lines = path.read_text().splitlines()
    marked = [line for line in lines if "no mutate" in line]
    assert marked == ["def helper(x):  # pragma: no mutate block"]
    assert path.read_text().replace("  # pragma: no mutate block", "") == MODULE


def test_a_samples_interval_holds_its_share_and_narrows_with_its_size() -> None:
    low, high = wilson(1.0, 30)
    assert 0.88 < low < 0.89 and high == 1.0  # 30 of 30 caught: not proof of 100 %
    low, high = wilson(0.9, 400)
    assert round(low, 3) == 0.867 and round(high, 3) == 0.926
    assert wilson(0.5, 0) == (0.0, 1.0)


def test_a_packages_tests_are_its_folder_and_the_files_named_after_it_elsewhere() -> None:
    files, tests = target("app/lab")
    assert "app/lab/report.py" in files and "app/lab/routes.py" not in files  # domain modules only
    assert tests == ["tests/lab", "tests/architectures/test_lab.py"]  # browser tests stay out
    assert target("app/lab/report.py") == (["app/lab/report.py"], tests)
    assert target("app/doctor")[1] == ["tests/doctor"]
