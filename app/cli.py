"""The checkpoint doctor on the command line, for people who never open a browser:

    mre inspect FILE... [--into PRESET] [--style NAME=STYLE] [--state-dict AT] [--compare OTHER...] [--json]

The same domain code, child process and limits as POST /api/checkpoints (limits from the same
MRE_* settings); tables by rich; ``--json`` prints the API's JSON. Several FILEs are one sharded
checkpoint (its shards and model.safetensors.index.json). Exit status: 0 it loads (without
--into: it was read, and a sharded one's index agrees with its shards; with --compare: no
difference), 1 it does not (they disagree, they differ), 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.errors import Refusal
from app.langs import EN, LANGS, Text
from app.settings import Settings

if TYPE_CHECKING:
    from app.doctor.compare import Comparison
    from app.doctor.report import CheckpointReport
    from app.doctor.targets import Target

LOADS, DOES_NOT, BAD_INPUT = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mre", description="The Module Registration Explorer's checkpoint doctor."
    )
    commands = top.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser(
        "inspect",
        help="what a checkpoint holds, why it does not load into a module and how to fix it",
        description="Several FILEs are read as one sharded checkpoint (shards and index).",
    )
    inspect.add_argument("files", nargs="+", type=Path, metavar="FILE")
    inspect.add_argument(
        "--into",
        metavar="MODULE",
        help="load it into this preset's module (see /api/presets) or architecture (/api/architectures)",
    )
    inspect.add_argument(
        "--style", action="append", default=[], metavar="NAME=STYLE", help="a member's registration style"
    )
    inspect.add_argument("--state-dict", dest="at", metavar="AT", help="where in the file the state_dict is")
    inspect.add_argument(
        "--compare", nargs="+", type=Path, metavar="OTHER", help="compare with this checkpoint"
    )
    inspect.add_argument("--json", action="store_true", help="print the JSON API's answer")
    inspect.add_argument("--lang", choices=LANGS, default=EN, help="language of the causes")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The doctor (and torch, a second or more) only once the arguments are read: mre --help is instant.
    from app.doctor.compare import Comparison
    from app.doctor.report import CheckpointError, CheckpointReport

    out, err = Console(), Console(stderr=True)
    settings = Settings()
    try:
        for path in [*args.files, *(args.compare or [])]:
            if not path.is_file():
                raise CheckpointError(Text("{path}: no such file", path=path))
        spec = _spec(args, settings)
        body = _wait(_run(args, spec, settings))
    except Refusal as exc:
        err.print(f"[bold red]mre:[/] {escape(exc.text(args.lang))}", highlight=False, markup=True)
        return BAD_INPUT
    if args.compare:
        comparison = Comparison.model_validate_json(body)
        _print_json(body) if args.json else show_comparison(out, comparison)
        return LOADS if comparison.identical else DOES_NOT
    report = CheckpointReport.model_validate_json(body)
    _print_json(body) if args.json else show_report(out, report, args.lang)
    broken = report.shards is not None and bool(report.shards.problems)  # the index and shards disagree
    return DOES_NOT if broken or (report.load is not None and report.load.strict != "ok") else LOADS


def _wait(job: Coroutine[Any, Any, bytes]) -> bytes:
    """``job`` run to its end, also where this thread already runs an event loop (a notebook, or a
    test under Playwright's sync API), which asyncio.run refuses: then on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(job)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, job).result()


def _spec(args: argparse.Namespace, settings: Settings) -> Target | None:
    from app.architectures.catalogue import ARCHITECTURES
    from app.doctor.targets import architecture_target
    from app.lab.devices import device_ids
    from app.lab.presets import PRESETS
    from app.lab.spec import LabSpec, SpecError, resolve

    if args.into is None:
        if args.style:
            raise SpecError(("style",), Text("--style needs --into PRESET"))
        return None
    if args.into not in PRESETS and args.into in ARCHITECTURES:
        if args.style:
            raise SpecError(("style",), Text("--style is for a preset's members, not an architecture"))
        return architecture_target(args.into, settings.architectures)
    styles = {}
    for pair in args.style:
        name, sep, style = pair.partition("=")
        if not sep:
            raise SpecError(("style",), Text("--style {pair!r}: write NAME=STYLE", pair=pair))
        styles[name] = style
    return resolve(LabSpec(preset=args.into, styles=styles), device_ids(), settings.custom_max_elements)


async def _run(args: argparse.Namespace, spec: Target | None, settings: Settings) -> bytes:
    from app.doctor import caps as inspections
    from app.doctor import isolated

    limits, budget = inspections.limits(settings), inspections.budget(settings)
    names = [p.name for p in args.files]
    if args.compare:
        other = [p.name for p in args.compare]
        job = isolated.comparison_job(
            args.files, names, args.compare, other, limits, settings.checkpoint_compare_max_elements
        )
        return await isolated.run_isolated(job, budget)
    return await isolated.inspect_isolated(args.files, limits, spec, args.at, budget, None, names)


def _print_json(body: bytes) -> None:
    sys.stdout.buffer.write(body + b"\n")
    sys.stdout.flush()


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def show_report(out: Console, report: CheckpointReport, lang: str) -> None:
    summary = Table(title="Checkpoint", show_header=False)
    summary.add_row("format", report.format)
    summary.add_row("file bytes", _size(report.file_bytes))
    summary.add_row("tensors", f"{len(report.tensors):,} ({report.total_elements:,} elements)")
    summary.add_row("distinct storage", _size(report.unique_bytes))
    if report.shards is not None:
        summary.add_row("shards", str(len(report.shards.files)))
    out.print(summary)
    dtypes = Table("dtype", "tensors", "elements", "bytes", title="By dtype")
    for dtype, total in report.dtypes.items():
        dtypes.add_row(dtype, str(total.tensors), f"{total.elements:,}", _size(total.bytes))
    out.print(dtypes)
    if report.shards is not None and report.shards.problems:
        problems = Table("problem", "key", "detail", title="Shards and index")
        for problem in report.shards.problems:
            problems.add_row(problem.kind, problem.key, problem.detail)
        out.print(problems)
    load = report.load
    if load is None:
        return
    where = f" (from {load.state_dict!r})" if load.state_dict else ""
    into = load.spec.preset if load.spec else load.architecture
    out.print(f"\nload_state_dict into {into}{where}: ", end="")
    out.print(load.strict, style="green" if load.strict == "ok" else "red", markup=False, highlight=False)
    diagnosis = load.diagnosis
    if diagnosis is None or not diagnosis.causes:
        return
    causes = Table(title="Why, and how to fix it", show_lines=True)
    causes.add_column("cause", overflow="fold")
    causes.add_column("keys", overflow="fold")
    causes.add_column("fix", overflow="fold")  # folded, never cut: it is meant to be copied
    causes.add_column("torch after the fix", overflow="fold")
    for cause in diagnosis.causes:
        keys = ", ".join(cause.keys[:6]) + (f" (+{len(cause.keys) - 6})" if len(cause.keys) > 6 else "")
        after = cause.after_fix if cause.after_fix is not None else "-"
        causes.add_row(f"{cause.title[lang]}\n[dim]{cause.id}, {cause.severity}[/]", keys, cause.fix, after)
    out.print(causes)
    if diagnosis.fixes:
        strict = "" if diagnosis.strict_after_fixes else ", strict=False"
        lines = [*diagnosis.fixes, f"model.load_state_dict(state{strict})  # {diagnosis.after_fixes}"]
        out.print("\n".join(lines), markup=False, highlight=False)


def show_comparison(out: Console, comparison: Comparison) -> None:
    summary = Table(title="Compared", show_header=False)
    summary.add_row("a", ", ".join(comparison.a))
    summary.add_row("b", ", ".join(comparison.b))
    for name, value in comparison.summary.model_dump().items():
        summary.add_row(name.replace("_", " "), "-" if value is None else str(value))
    out.print(summary)
    if not comparison.rows:
        out.print("identical: same keys, shapes, dtypes, sharing and values")
        return
    rows = Table("key", "changes", "a", "b", "max abs diff", "max rel diff", title="What differs")
    for row in comparison.rows:
        rows.add_row(
            row.key,
            ", ".join(row.changes),
            row.a or "-",
            row.b or "-",
            "-" if row.max_abs_diff is None else f"{row.max_abs_diff:.3g}",
            "-" if row.max_rel_diff is None else f"{row.max_rel_diff:.3g}",
        )
    out.print(rows)


if __name__ == "__main__":
    sys.exit(main())
