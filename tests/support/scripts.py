"""Generated scripts run with plain python, many at a time: one interpreter imports torch once,
then forks a fresh child per script, so each starts from the same pristine state and has its own
exit status, stdout and stderr (a fresh interpreter per script would spend ~2 s each on the import)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass

RUNNER = r"""
import json, os, sys, tempfile, traceback
import torch  # noqa: F401  (what every script imports first; the children inherit it)

codes, preload = json.load(sys.stdin)
for name in preload:  # imported once here, inherited by every child
    __import__(name)
results = []
with tempfile.TemporaryDirectory() as tmp:
    for i, code in enumerate(codes):
        out, err = os.path.join(tmp, f"{i}.out"), os.path.join(tmp, f"{i}.err")
        sys.stdout.flush(); sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT), 1)
            os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT), 2)
            status = 0
            try:
                exec(compile(code, "<generated>", "exec"), {"__name__": "__main__"})
            except SystemExit as stop:
                status = stop.code if isinstance(stop.code, int) else 1
            except BaseException:
                traceback.print_exc()
                status = 1
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(status)
        _, wait = os.waitpid(pid, 0)
        with open(out) as o, open(err) as e:
            results.append([os.waitstatus_to_exitcode(wait), o.read(), e.read()])
json.dump(results, sys.__stdout__)
"""


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run_scripts(codes: list[str], timeout: float = 600, preload: tuple[str, ...] = ()) -> list[Ran]:
    """Each script's exit status and output; ``preload``: modules the runner imports once first."""
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps([codes, list(preload)]),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return [Ran(*r) for r in json.loads(done.stdout)]


def parse(output: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in output.splitlines():
        if line.startswith("*" * 20):
            current = sections.setdefault(line.strip("* "), [])
        else:
            current.append(line)
    return sections


def expected(report: dict) -> dict[str, list[str]]:
    device = report["spec"]["device"]
    members = report["members"]

    def row(r: dict, extra: str | None = None) -> str:
        text = f"{r['name']} {r['shape']} torch.{r['dtype']} {r['device']}"
        return f"{text} {extra}" if extra is not None else text

    return {
        f"devices before model.to({device!r})": [f"{m['name']} {m['device_before']}" for m in members],
        "named_parameters": [row(r, str(r["requires_grad"])) for r in report["named_parameters"]],
        "named_buffers": [
            row(r, "persistent" if r["persistent"] else "non-persistent") for r in report["named_buffers"]
        ],
        "state_dict": [row(r) for r in report["state_dict"]],
        f"devices after model.to({device!r})": [f"{m['name']} {m['device_after']}" for m in members],
    }


def ran(text: str) -> str:
    """What a whole script prints, run in this process as plain python would run it."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(text, {"__name__": "__main__"})
    return out.getvalue()
