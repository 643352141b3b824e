"""The checkpoint doctor on the command line, for people who never open a browser:

    mre inspect FILE|FOLDER... [--into PRESET|ARCHITECTURE|config.json] [--style NAME=STYLE]
                [--state-dict AT] [--depth N] [--script] [--json]
    mre inspect A... --compare B... [--state-dict AT] [--other-state-dict AT] [--json]
    mre fix FILE|FOLDER... --into TARGET -o fixed.safetensors

The same domain code, limits and refusals as POST /api/checkpoints (limits from the same MRE_*
settings); the child process is forked from this one (torch is imported once). Several FILEs are one
sharded checkpoint (its shards and index); a FOLDER is a model folder (save_pretrained's: the
index, the shards, config.json, which is loaded into when no --into is given) or a DCP folder; an
index alone brings its shards from beside it. ``--json`` prints the API's JSON; ``--script`` only the
whole fix script. Exit status: 0 it loads as saved (without a module: it was read, and a sharded
one's index agrees with its shards; --compare: no difference; fix: the file was written), 1 it does
not (or they differ, or no fix makes it load), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from app.errors import Refusal
from app.langs import EN, LANGS, Text
from app.settings import Settings

if TYPE_CHECKING:
    from app.doctor.compare import Comparison
    from app.doctor.report import CheckpointReport
    from app.doctor.targets import Target

LOADS, DOES_NOT, BAD_INPUT = 0, 1, 2
NOT_FIXABLE = 409  # a refusal that means "it does not load", not "bad input": exit 1
GROUPS_SHOWN = 16  # patterns printed per cause; --json has them all
LINES_OF_TORCH = 1  # lines of torch's refusal printed; --json has the whole
TREE_ALONE, TREE_WITH_LOAD = 24, 8  # lines of the tensor tree without --depth


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mre", description="The Module Registration Explorer's checkpoint doctor."
    )
    commands = top.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser(
        "inspect",
        help="what a checkpoint holds, why it does not load into a module and how to fix it",
        description="Several FILEs are read as one sharded checkpoint (shards and index); a FOLDER is "
        "a model folder (index, shards, config.json) or a torch.distributed.checkpoint folder.",
    )
    _common(inspect)
    inspect.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        metavar="OTHER",
        help="compare with this checkpoint (files or a folder)",
    )
    inspect.add_argument(
        "--other-state-dict",
        dest="other_at",
        metavar="AT",
        help="with --compare: where OTHER's state_dict is",
    )
    inspect.add_argument(
        "--depth", type=int, metavar="N", help="levels of the tensor tree (default: what fits)"
    )
    inspect.add_argument("--json", action="store_true", help="print the JSON API's answer")
    inspect.add_argument("--script", action="store_true", help="print only the whole fix script (python)")
    fix = commands.add_parser(
        "fix",
        help="write the fixed checkpoint: the proven fix applied, loaded with strict=True before writing",
        description="Applies the fixes `mre inspect` proves and writes a safetensors file that loads "
        "into the module with strict=True (checked before and after writing). Written only when every "
        "tensor of the module comes from the file.",
    )
    _common(fix)
    fix.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT", help="the .safetensors to write"
    )
    fix.add_argument("--json", action="store_true", help="print what was written as JSON")
    return top


def _common(command: argparse.ArgumentParser) -> None:
    command.add_argument("files", nargs="+", type=Path, metavar="FILE")
    command.add_argument(
        "--into",
        metavar="MODULE",
        help="load it into this preset's module (/api/presets), architecture (/api/architectures), or "
        "the model a transformers config.json describes (a path to it, or to its folder)",
    )
    command.add_argument(
        "--style", action="append", default=[], metavar="NAME=STYLE", help="a member's registration style"
    )
    command.add_argument("--state-dict", dest="at", metavar="AT", help="where in the file the state_dict is")
    command.add_argument("--lang", choices=LANGS, default=EN, help="language of the causes")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The doctor (and torch, a second or more) only once the arguments are read: mre --help is instant.
    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    settings = Settings()
    try:
        _check(args)
        from app.doctor.files import gather

        files = gather(args.files)
        if args.command == "fix":
            return _fix(args, files, settings, out)
        if args.compare:
            return _compare(args, files, gather(args.compare), settings, out)
        return _inspect(args, files, settings, out)
    except Refusal as exc:
        err.print("mre: " + exc.text(args.lang), style="bold red", markup=False)
        return DOES_NOT if exc.status == NOT_FIXABLE else BAD_INPUT


def _check(args: argparse.Namespace) -> None:
    from app.doctor.report import CheckpointError

    for path in [*args.files, *(getattr(args, "compare", None) or [])]:
        if not path.exists():
            raise CheckpointError(Text("{path}: no such file", path=str(path)))
    if getattr(args, "compare", None) and (args.into or args.style):
        raise CheckpointError(
            Text("--compare compares two checkpoints' tensors; --into and --style are for one checkpoint")
        )
    if getattr(args, "other_at", None) and not args.compare:
        raise CheckpointError(Text("--other-state-dict is the state_dict of --compare's checkpoint"))
    if getattr(args, "depth", None) is not None and args.depth < 1:
        raise CheckpointError(Text("--depth is a number of levels, at least 1"))


def _budget(settings: Settings) -> tuple:
    from app.doctor import caps

    return caps.limits(settings), caps.budget(settings)


def _inspect(args: argparse.Namespace, files: list[Path], settings: Settings, out: Console) -> int:
    from app.doctor import isolated
    from app.doctor.report import CheckpointReport

    target = _target(args, settings)
    limits, budget = _budget(settings)
    names = [str(p) for p in files]
    body = isolated.run_now(isolated.inspection_job(files, names, limits, target, args.at), budget)
    report = CheckpointReport.model_validate_json(body)
    if args.json:
        _print_json(body)
    elif args.script:
        if report.load is None:
            from app.doctor.report import CheckpointError

            raise CheckpointError(
                Text("--script needs a module to load into: --into, or a folder's config.json")
            )
        sys.stdout.write(report.load.script)
    else:
        show_report(out, report, args.lang, args.depth)
    return status(report)


def status(report: CheckpointReport) -> int:
    if report.shards is not None and report.shards.problems:  # the index and shards disagree
        return DOES_NOT
    if report.load is None:
        return LOADS
    verdict = report.load.diagnosis.verdict if report.load.diagnosis else ""
    return LOADS if report.load.strict == "ok" and verdict in ("loads", "") else DOES_NOT


def _compare(args: argparse.Namespace, a: list[Path], b: list[Path], settings: Settings, out: Console) -> int:
    from app.doctor import isolated
    from app.doctor.compare import Comparison

    limits, budget = _budget(settings)
    job = isolated.comparison_job(
        a,
        [str(p) for p in a],
        b,
        [str(p) for p in b],
        limits,
        settings.checkpoint_compare_max_elements,
        at_a=args.at,
        at_b=args.other_at,
    )
    body = isolated.run_now(job, budget)
    comparison = Comparison.model_validate_json(body)
    _print_json(body) if args.json else show_comparison(out, comparison, args.lang)
    return LOADS if comparison.identical else DOES_NOT


def _fix(args: argparse.Namespace, files: list[Path], settings: Settings, out: Console) -> int:
    from app.doctor import isolated
    from app.doctor.report import CheckpointError
    from app.doctor.writer import Written

    if args.output.suffix != ".safetensors":
        raise CheckpointError(
            Text("-o: the fixed checkpoint is written as safetensors: name it *.safetensors")
        )
    if args.output.resolve() in {p.resolve() for p in files}:
        raise CheckpointError(Text("-o: write the fixed checkpoint beside the file, not over it"))
    target = _target(args, settings)
    limits, budget = _budget(settings)
    job = isolated.fixing_job(files, [str(p) for p in files], limits, target, args.at, args.output)
    body = isolated.run_now(job, budget)
    written = Written.model_validate_json(body)
    if args.json:
        _print_json(body)
    else:
        out.print(
            f"wrote {written.path}: {written.tensors} tensors, {_size(written.bytes)}; "
            f"it loads with strict=True ({written.verdict}; fixes applied: {len(written.fixes)})",
            markup=False,
        )
    return LOADS


def _target(args: argparse.Namespace, settings: Settings) -> Target | None:
    from app.architectures.catalogue import ARCHITECTURES
    from app.doctor.report import CheckpointError
    from app.doctor.targets import architecture_target, read_config
    from app.lab.devices import device_ids
    from app.lab.presets import PRESETS
    from app.lab.spec import LabSpec, SpecError, resolve

    if args.into is None:
        if args.style:
            raise SpecError(("style",), Text("--style needs --into PRESET"))
        return None
    if args.into not in PRESETS or args.into in ARCHITECTURES:  # a tiny architecture: a preset too
        if args.style:
            raise SpecError(("style",), Text("--style is for a preset's members, not an architecture"))
        if args.into in ARCHITECTURES:
            return architecture_target(args.into, settings.architectures)
        path = Path(args.into)
        if path.is_dir():
            path = path / "config.json"
        if path.is_file():
            return read_config(path.read_bytes(), str(path))
        raise CheckpointError(
            Text(
                "--into {into!r}: no preset, architecture or config.json of that name. Presets: "
                "{presets}. Architectures: {architectures}. Or the path to a transformers config.json "
                "(or to its folder)",
                into=args.into,
                presets=", ".join(PRESETS),
                architectures=", ".join(ARCHITECTURES) if settings.architectures else "(turned off)",
            )
        )
    styles = {}
    for pair in args.style:
        name, sep, style = pair.partition("=")
        if not sep:
            raise SpecError(("style",), Text("--style {pair!r}: write NAME=STYLE", pair=pair))
        styles[name] = style
    return resolve(LabSpec(preset=args.into, styles=styles), device_ids(), settings.custom_max_elements)


def _print_json(body: bytes) -> None:
    sys.stdout.buffer.write(body + b"\n")
    sys.stdout.flush()


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _say(out: Console, text: str, style: str | None = None, code: bool = False) -> None:
    """Every message printed as it is (never read as rich markup: a key may hold "[/x]"); code is
    never wrapped, so a fix pasted from the terminal or a file runs."""
    out.print(text, markup=False, highlight=False, style=style, soft_wrap=code, emoji=False)


def show_report(out: Console, report: CheckpointReport, lang: str, depth: int | None = None) -> None:
    from app.doctor.outline import outline

    dtypes = ", ".join(f"{d} {t.tensors}" for d, t in report.dtypes.items())
    _say(
        out,
        f"{report.format}: {len(report.tensors):,} tensors, {report.total_elements:,} elements, "
        f"{_size(report.unique_bytes)} ({dtypes}); file {_size(report.file_bytes)}",
        "bold",
    )
    if report.shards is not None:
        shards = report.shards
        index = f", index {shards.index}" if shards.index else ", no index"
        agree = "" if shards.problems else (": the index and the shards agree" if shards.index else "")
        _say(out, f"shards: {len(shards.files)} files{index}{agree}")
        for problem in shards.problems[:GROUPS_SHOWN]:
            _say(out, f"  {problem.kind}: {problem.key} ({problem.detail})", "red")
        if len(shards.problems) > GROUPS_SHOWN:
            _say(out, f"  (+{len(shards.problems) - GROUPS_SHOWN} more problems: --json has them)")
    if len(report.state_dicts) > 1 or (report.state_dicts and report.state_dicts != [""]):
        counts = {
            s: sum(1 for t in report.tensors if ".".join(t.location[:-1]) == s) for s in report.state_dicts
        }
        chosen = report.load.state_dict if report.load else None
        named = ", ".join(
            f"{s or '(the whole file)'} ({counts[s]}{', loaded' if s == chosen else ''})"
            for s in report.state_dicts[:8]
        )
        more = f" (+{len(report.state_dicts) - 8})" if len(report.state_dicts) > 8 else ""
        _say(out, f"state dicts: {named}{more}; choose one with --state-dict")
    for note in report.notes:
        _say(out, f"note: {note[lang]}", "yellow")
    # Beside a load's causes, a shorter tree: the whole report fits on a screen.
    lines, used = outline(report.tensors, depth, TREE_WITH_LOAD if report.load else TREE_ALONE)
    if lines:
        deep = f" to depth {used} (--depth N for more)" if used else ""
        _say(out, f"tensors{deep}:", "bold")
        for line in lines:
            times = f" x{line.times}" if line.times > 1 else ""
            _say(out, f"{'  ' * (line.depth + 1)}{line.name}{times}  {line.detail}")
    if report.load is not None:
        _show_load(out, report, lang)


def _show_load(out: Console, report: CheckpointReport, lang: str) -> None:
    load = report.load
    assert load is not None
    where = f" (state_dict at {load.state_dict!r})" if load.state_dict else ""
    diagnosis = load.diagnosis
    loads = load.strict == "ok"
    _say(out, f"load_state_dict into {load.target}{where}:", "bold")
    if diagnosis is not None and diagnosis.headline:
        _say(out, "  " + diagnosis.headline[lang], "green" if diagnosis.verdict == "loads" else "red")
    if not loads:
        first = load.strict.split("\n")
        more = (
            f" (+{len(first) - LINES_OF_TORCH} lines: --json has them)" if len(first) > LINES_OF_TORCH else ""
        )
        _say(out, f"  torch says: {first[0].strip()}{more}")
    if diagnosis is None or not diagnosis.causes:
        return
    for number, cause in enumerate(diagnosis.causes, 1):
        _say(out, f"{number}. {cause.title[lang]} [{cause.id}, {cause.severity}]", "bold")
        _say(out, "   " + cause.explanation[lang])
        for group in cause.groups[:GROUPS_SHOWN]:
            # A pattern stands for exactly its keys: its count is said only where it is not shown.
            shapes = ""
            if group.checkpoint_shape is not None and group.checkpoint_shape != group.module_shape:
                shapes = f": file {group.checkpoint_shape}, model {group.module_shape}"
            elif group.checkpoint_dtype is not None and group.checkpoint_dtype != group.module_dtype:
                shapes = f": file {group.checkpoint_dtype}, model {group.module_dtype}"
            _say(out, f"   {group.pattern}{shapes}", code=True)
        if len(cause.groups) > GROUPS_SHOWN:
            _say(out, f"   (+{len(cause.groups) - GROUPS_SHOWN} more patterns: --json has them)")
        if cause.after_fix is not None:
            after = cause.after_fix.split("\n")[0]
            _say(out, f"   after this fix torch says: {after}", "green" if after == "ok" else None)
    if diagnosis.fixes:
        _say(out, "the whole script (mre inspect ... --script prints it alone):", "bold")
        _say(out, load.script.rstrip("\n"), code=True)


def show_comparison(out: Console, comparison: Comparison, lang: str = EN) -> None:
    sm = comparison.summary
    _say(out, f"a: {', '.join(comparison.a)} ({comparison.format_a}, {sm.tensors_a} tensors)", "bold")
    _say(out, f"b: {', '.join(comparison.b)} ({comparison.format_b}, {sm.tensors_b} tensors)", "bold")
    if comparison.headline:
        _say(out, comparison.headline[lang], "green" if comparison.identical else "red")
    for name, value in sm.model_dump().items():
        if value not in (0, None) and name not in ("tensors_a", "tensors_b"):
            _say(
                out,
                f"  {name.replace('_', ' ')}: {value:.3g}"
                if isinstance(value, float)
                else f"  {name.replace('_', ' ')}: {value}",
            )
    for group in comparison.groups[:GROUPS_SHOWN]:
        detail = f": {group.a or '-'} -> {group.b or '-'}" if (group.a or group.b) else ""
        diff = f", max abs diff {group.max_abs_diff:.3g}" if group.max_abs_diff is not None else ""
        count = f" ({group.count} keys)" if group.count > 1 else ""
        _say(out, f"  {', '.join(group.changes)}: {group.pattern}{count}{detail}{diff}", code=True)
    if len(comparison.groups) > GROUPS_SHOWN:
        _say(out, f"  (+{len(comparison.groups) - GROUPS_SHOWN} more patterns: --json has every row)")


if __name__ == "__main__":
    sys.exit(main())
