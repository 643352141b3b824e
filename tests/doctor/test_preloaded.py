"""The inspectors' forkserver imports the architectures' models once, where architectures are on:
an inspection child starts with them imported (it used to import transformers and its modeling
code again, ~2 CPU-seconds per inspection into an architecture), and builds the model fresh."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.browser import ROOT

# In a process of its own: the forkserver and its preload list are once per process.
PROBE = """
import json, sys
from app.doctor import isolated, runs
from app.settings import Settings
from tests.support.inspectors import modeling_modules as probe

settings = Settings(architectures={on}, checkpoint_tmp_dir=sys.argv[1])
runs.start(settings)
isolated.warm_up()
context = isolated._context()
queue = context.Queue()
child = context.Process(target=probe, args=(queue,))
child.start()
print(json.dumps(queue.get(timeout=600)))
child.join()
"""


def imported_in_child(on: bool, tmp: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.replace("{on}", str(on)), tmp],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("on", [True, False])
def test_an_inspection_child_starts_with_the_architectures_models_imported_only_when_on(on, tmp_path) -> None:
    from app.architectures import catalogue

    imported = imported_in_child(on, str(tmp_path))
    if not on:
        assert imported == []  # a server without architectures pays nothing for them
        return
    families = {catalogue.get(a).family for a in catalogue.ARCHITECTURES}
    for family in ("llama", "gpt2", "bert", "vit"):  # each catalogue family's modeling code
        assert any(f".{family}.modeling_" in m for m in imported), (family, families)
