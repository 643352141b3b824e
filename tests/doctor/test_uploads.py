"""What a network's uploads can hold on a real server process: disk (uploads in progress are capped,
a trickle is cut off however much came first) and the event loop (the page of a file with tens of
thousands of tensors is cut short in the child, so health answers at once and memory stays flat)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from tests.support.crafted import fan_out, torch_zip
from tests.support.inspectors import children, cmdline, inspectors, post, rest_of, saved, server

HEAD = (
    "POST /api/checkpoints HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
    "Content-Length: {length}\r\n\r\n"
)


def connect(base: str, length: int) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(HEAD.format(length=length).encode())
    return s


def on_disk(tmp_dir: Path) -> int:
    return sum(f.stat().st_size for f in tmp_dir.glob("*/*"))  # every file of every upload in progress


def test_bytes_sent_early_buy_no_time(tmp_path: Path) -> None:
    """200 KB at once (an average since the start would allow 100 s of nothing), then a byte every
    0.2 s: cut off once a 1 s window brings under 2000 bytes, and its file removed."""
    with server(tmp_path) as (base, _):
        s = connect(base, 10**7)
        s.sendall(b"\0" * 200_000)
        started, answer = time.monotonic(), b""
        s.settimeout(0.2)
        while time.monotonic() - started < 60 and not answer:
            try:
                answer = s.recv(4096)
            except TimeoutError:
                try:
                    s.sendall(b"\0")
                except OSError:
                    break
        answer += rest_of(s)
        took = time.monotonic() - started
        s.close()
        assert answer.startswith(b"HTTP/1.1 408"), (took, answer[:200])
        assert took < 30, took  # a window of 1 s, not the 100 s an average since the start allows
        assert b"every 1 s of an upload must bring at least 2000 bytes" in answer
        time.sleep(0.5)
        assert on_disk(tmp_path) == 0


def test_a_steady_upload_at_the_minimum_rate_is_not_cut_off(tmp_path: Path) -> None:
    with server(tmp_path) as (base, _):
        body = saved({"w": torch.ones(2000)})  # about 9 KB: 1.5 s at 6000 bytes a second
        s = connect(base, len(body))
        for i in range(0, len(body), 300):  # 6000 bytes a second if on time, 2000 at the least
            s.sendall(body[i : i + 300])
            time.sleep(0.05)
        s.settimeout(10)
        answer = s.recv(4096) + rest_of(s)
        s.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


def test_uploads_in_progress_are_capped_before_a_byte_is_written(tmp_path: Path) -> None:
    """Two uploads hold their files (a slow but steady pace); a third is a 503 naming the setting at
    once, and writes nothing; once they end, uploads are taken again."""
    env = {"MRE_CHECKPOINT_UPLOADS": "2", "MRE_CHECKPOINT_UPLOAD_GRACE_SECONDS": "30"}
    with server(tmp_path, **env) as (base, _):
        holders = [connect(base, 10**7) for _ in range(2)]
        for s in holders:
            s.sendall(b"\0" * 300_000)
        deadline = time.monotonic() + 5
        while on_disk(tmp_path) < 600_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        held = on_disk(tmp_path)
        started = time.monotonic()
        status, answer = post(base, saved({"w": torch.ones(2)}), timeout=10)
        took = time.monotonic() - started
        assert (status, took < 15) == (503, True), (status, answer, took)  # not after the 30 s grace
        assert "MRE_CHECKPOINT_UPLOADS" in answer["detail"]
        assert len(list(tmp_path.iterdir())) == 2 and on_disk(tmp_path) == held == 600_000
        for s in holders:
            s.close()
        deadline = time.monotonic() + 5
        while list(tmp_path.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.iterdir()) == []
        assert post(base, saved({"w": torch.ones(2)}))[0] == 200


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024


def empty_tensors(n: int) -> bytes:
    header = json.dumps({f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(n)})
    raw = header.encode()
    return len(raw).to_bytes(8, "little") + raw


@pytest.mark.parametrize("n", [40_000])
def test_the_page_of_a_huge_file_neither_stalls_nor_swells_the_server(tmp_path: Path, n: int) -> None:
    env = {
        "MRE_CHECKPOINT_CPU_SECONDS": "60",
        "MRE_CHECKPOINT_WALL_SECONDS": "120",
        "MRE_CHECKPOINT_MEMORY_BYTES": str(2 * 1024**3),
    }
    with server(tmp_path, **env) as (base, proc):
        boundary = "B"
        body = (
            (
                f"--{boundary}\r\nContent-Disposition: form-data;"
                ' name="file"; filename="x.safetensors"\r\n\r\n'
            ).encode()
            + empty_tensors(n)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        post(base, saved({"w": torch.ones(2)}))  # the forkserver is up
        before = _rss(proc.pid)
        page: dict = {}

        def ask() -> None:
            request = urllib.request.Request(
                base + "/checkpoints",
                data=body,
                headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                page["status"], page["text"] = response.status, response.read().decode()

        asker = threading.Thread(target=ask)
        asker.start()
        slowest = 0.0
        while asker.is_alive():
            started = time.monotonic()
            with urllib.request.urlopen(base + "/api/health", timeout=30) as response:
                assert response.status == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.05)
        asker.join()
        grew = _rss(proc.pid) - before
        print(f"\n{n} tensors: slowest health {slowest:.3f} s, server RSS grew {grew / 2**20:.0f} MiB")
        assert page["status"] == 200
        assert f"<dd>{n:,} (0 elements)" in page["text"]
        assert f"{n - 200:,} more tree nodes" in page["text"]
        assert len(page["text"]) < 200_000
        assert slowest < 1.0, slowest
        assert grew < 60 * 2**20, grew


def test_a_server_killed_by_sigkill_leaves_no_inspection_running(tmp_path: Path) -> None:
    """The forkserver ends with the server, and a runaway inspection with the forkserver (both had
    lived on until the inspection's CPU limit)."""
    env = {"MRE_CHECKPOINT_CPU_SECONDS": "60", "MRE_CHECKPOINT_WALL_SECONDS": "60"}
    with server(tmp_path, **env) as (base, proc):
        threading.Thread(target=_post_quietly, args=(base, torch_zip(fan_out(10, 9))), daemon=True).start()
        deadline = time.monotonic() + 20
        while not inspectors(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = inspectors(proc.pid) + [c for c in children(proc.pid) if b"forkserver" in cmdline(c)]
        assert len(left) == 2, left
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while any(_running(pid) for pid in left) and time.monotonic() < deadline:
            time.sleep(0.05)
        running = [pid for pid in left if _running(pid)]
        for pid in running:  # not to leave them to the next test
            os.kill(pid, signal.SIGKILL)
        assert running == []


def _post_quietly(base: str, content: bytes) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        post(base, content, 70)  # the server is killed before it answers


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
