"""A real server process for the inspector's limits: started with small MRE_ caps, sent crafted
files, and its inspector children found by process id."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from tests.support.browser import ROOT, free_port, wait_healthy


@contextmanager
def server(tmp_dir: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """uvicorn serving app.main:app on a free loopback port, its uploads in ``tmp_dir``."""
    port = free_port()
    environment = {**os.environ, **LIMITS, "MRE_CHECKPOINT_TMP_DIR": str(tmp_dir), **env}
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base + "/api/health")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)


def saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def post(base: str, content: bytes, timeout: float = 30) -> tuple[int, dict]:
    request = urllib.request.Request(
        base + "/api/checkpoints", data=content, headers={"content-type": "application/octet-stream"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def inspectors(server_pid: int) -> list[int]:
    """The inspection processes: the children of the server's forkserver."""
    return [
        child
        for forkserver in children(server_pid)
        if b"forkserver" in cmdline(forkserver)
        for child in children(forkserver)
    ]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def rest_of(s: socket.socket) -> bytes:
    """What the server still sends, until it closes the connection or pauses."""
    out = b""
    s.settimeout(1)
    try:
        while chunk := s.recv(4096):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


MIB = 1024**2


LIMITS = {
    "MRE_CHECKPOINT_CPU_SECONDS": "2",
    # Far above what the CPU limit takes on a loaded 2-core machine: the CPU limit is what stops a runaway.
    "MRE_CHECKPOINT_WALL_SECONDS": "120",
    "MRE_CHECKPOINT_MEMORY_BYTES": str(200 * MIB),
    "MRE_CHECKPOINT_PICKLE_MAX_BYTES": str(1024 * MIB),  # so that the memory limit is what stops it
    "MRE_CHECKPOINT_MAX_ENTRIES": str(10**9),  # so that the CPU limit is what stops a fan-out
    "MRE_CHECKPOINT_UPLOAD_GRACE_SECONDS": "1",
    "MRE_CHECKPOINT_UPLOAD_MIN_BYTES_PER_SECOND": "2000",
    "MRE_CHECKPOINT_UPLOADS": "16",  # ten at once below; the cap itself: tests/checkpoints/test_uploads.py
}


def modeling_modules(queue) -> None:
    """Run in an inspection child (pickled by reference): the transformers modeling modules it holds."""
    import sys

    queue.put(sorted(m for m in sys.modules if m.startswith("transformers.models.")))
