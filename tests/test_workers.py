"""Scale-out: the server keeps no state, so `MRE_WORKERS=N python -m app` serves from N processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.browser import ROOT, free_port, wait_healthy

pytestmark = pytest.mark.servers  # starts server processes (left out of mutation runs)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_several_workers_serve_the_same_answers() -> None:
    port = free_port()
    env = {**os.environ, "MRE_WORKERS": "2", "MRE_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base + "/api/health")
        # Both workers up: uvicorn's supervisor has one child process per worker (spawned, not
        # forked, so no CUDA state is ever inherited).
        deadline = time.monotonic() + 30
        while len(workers := [c for c in children(proc.pid) if b"multiprocessing" in _cmdline(c)]) < 2:
            assert time.monotonic() < deadline, f"workers: {workers}"
            time.sleep(0.1)
        bodies = set()
        for _ in range(40):  # a new connection each time, so the kernel spreads them over workers
            with urllib.request.urlopen(base + "/api/lab?preset=testmodel&device=meta") as response:
                bodies.add(response.read())
        assert len(bodies) == 1
        assert json.loads(bodies.pop())["spec"]["device"] == "meta"
    finally:
        proc.terminate()
        proc.wait(20)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""
