"""Generated scripts run with plain python, many at a time: one interpreter imports torch once,
then forks a fresh child per script, so each starts from the same pristine state and has its own
exit status, stdout and stderr (a fresh interpreter per script would spend ~2 s each on the import)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

RUNNER = r"""
import json, os, sys, tempfile, traceback
import torch  # noqa: F401  (what every script imports first; the children inherit it)

codes = json.load(sys.stdin)
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


def run_scripts(codes: list[str], timeout: float = 600) -> list[Ran]:
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(codes),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return [Ran(*r) for r in json.loads(done.stdout)]
