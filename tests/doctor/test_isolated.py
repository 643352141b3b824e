"""Files made to crash, stall or swell the inspector, sent to a real server process (uvicorn, small
limits from MRE_ settings): each costs its child process only, the answer names the limit, and the
server is alive and answering afterwards, removes its temporary files and still stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from app.doctor.uploads import owner
from tests.support.browser import ROOT, free_port, wait_healthy
from tests.support.crafted import EMPTY_DICT, big_string, deep_key, deep_value, fan_out, torch_zip
from tests.support.inspectors import LIMITS, MIB, inspectors, post, rest_of, saved, server

pytestmark = pytest.mark.servers  # starts server processes (left out of mutation runs)

INUSE = f"{owner()}-inuse"  # an upload directory of this (live) process


def healthy(base: str) -> bool:
    """Alive and answering: health, and a real inspection (a fresh child) of a good file."""
    with urllib.request.urlopen(base + "/api/health", timeout=5) as response:
        ok = response.status == 200
    status, report = post(base, saved({"w": torch.ones(2, 3)}))
    return ok and status == 200 and report["tensors"][0]["shape"] == [2, 3]


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def live(tmp_dir: Path) -> Iterator[str]:
    # What a server killed mid-upload leaves (also one whose id a new process now has, as pid 1 in
    # every new container), and what a live one (this test) is using.
    (tmp_dir / f"mre-checkpoint-{dead_pid()}.123-abc123").mkdir()
    (tmp_dir / f"mre-checkpoint-{dead_pid()}.456-def456" / "upload").mkdir(parents=True)
    (tmp_dir / f"mre-checkpoint-{os.getpid()}.1-reused").mkdir()
    (tmp_dir / f"mre-checkpoint-{INUSE}").mkdir()
    with server(tmp_dir) as (base, proc):
        yield base
        assert proc.poll() is None, "the server died"


def test_upload_dirs_of_dead_servers_are_removed_at_start(live: str, tmp_dir: Path) -> None:
    assert [d.name for d in tmp_dir.iterdir()] == [f"mre-checkpoint-{INUSE}"]


@pytest.mark.parametrize(
    "pickle",
    [
        pytest.param(deep_key(300_000), id="tuple-key-300k"),  # a segfault in the reader, hashing it
        pytest.param(deep_key(100_000), id="tuple-key-100k"),  # a RecursionError
        pytest.param(deep_value(300_000), id="lists-300k"),
        pytest.param(deep_value(200_000, EMPTY_DICT), id="dicts-200k"),
    ],
)
def test_a_file_that_crashes_the_reader_is_422_and_costs_the_child_only(
    live: str, tmp_dir: Path, pickle: bytes
) -> None:
    """Described where it can be (a key too deep to print is said so), else a 422 saying why."""
    status, answer = post(live, torch_zip(pickle))
    if status == 200:
        assert answer["values"][0]["name"] == "<tuple: repr() failed: RecursionError>"
    else:
        assert status == 422, answer
        assert any(
            words in answer["detail"]
            for words in ("the inspector process died (signal 11, SIGSEGV)", "nested deeper than 32")
        ), answer
    assert healthy(live)
    assert [d.name for d in tmp_dir.iterdir()] == [f"mre-checkpoint-{INUSE}"]


def test_ten_crashing_uploads_at_once_leave_the_server_answering(live: str) -> None:
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: post(live, torch_zip(deep_key(300_000)))[0], range(10)))
    assert answers == [422] * 10
    assert healthy(live)


def test_a_cpu_runaway_is_stopped_at_the_cpu_limit(live: str) -> None:
    status, answer = post(live, torch_zip(fan_out(10, 9)))  # a few hundred bytes, 10**9 lists
    assert status == 504
    # The CPU limit, not the wall deadline (120 s here), is what the answer names.
    assert "more than 2 seconds of CPU time (MRE_CHECKPOINT_CPU_SECONDS)" in answer["detail"]
    assert healthy(live)


def test_a_memory_bomb_is_413_naming_the_memory_limit(live: str) -> None:
    bomb = torch_zip(big_string(240 * MIB))  # a 240 MiB string, deflated to about 240 KB
    assert len(bomb) < MIB
    status, answer = post(live, bomb)
    assert status == 413, answer
    assert f"more than {200 * MIB} bytes of memory" in answer["detail"]
    assert "MRE_CHECKPOINT_MEMORY_BYTES" in answer["detail"]
    assert healthy(live)


def trickle(base: str, seconds: float) -> tuple[bytes, float]:
    """(the answer, when it came)."""
    answer = _trickle(base, seconds)
    return answer, time.monotonic()


def _trickle(base: str, seconds: float) -> bytes:
    """An upload that announces 1000 bytes and sends one every half second; the server's answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=seconds + 5) as s:
        head = (
            "POST /api/checkpoints HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: 1000\r\n\r\n"
        )
        s.sendall(head.encode())
        deadline = time.monotonic() + seconds
        s.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                answer = s.recv(4096)
                if answer:
                    return answer + rest_of(s)
            except TimeoutError:
                pass
            try:
                s.sendall(b"\0")
            except OSError:
                break
        s.settimeout(5)
        return rest_of(s)


def test_slow_uploaders_hold_no_slot_and_are_cut_off(live: str) -> None:
    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(trickle, live, 8) for _ in range(2)]  # as many as there are slots
        time.sleep(0.5)
        status, _ = post(live, saved({"w": torch.ones(2)}))
        answered = time.monotonic()
        answers = [f.result() for f in slow]
    # Answered while both slow uploads still trickled: they held no inspection slot.
    assert status == 200 and answered < min(at for _, at in answers)
    for answer, _ in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"MRE_CHECKPOINT_UPLOAD_MIN_BYTES_PER_SECOND" in answer


def test_sigterm_stops_the_server_while_a_runaway_inspection_runs(tmp_path: Path) -> None:
    # Limits far away, so that only the shutdown can end the inspection quickly.
    slow = {"MRE_CHECKPOINT_CPU_SECONDS": "120", "MRE_CHECKPOINT_WALL_SECONDS": "120"}
    with server(tmp_path, **slow) as (base, proc), ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, base, torch_zip(fan_out(10, 9)), 60)
        deadline = time.monotonic() + 30
        while not inspectors(proc.pid):  # until a child walks its billion lists
            assert time.monotonic() < deadline and not answer.done()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        proc.wait(60)
        assert time.monotonic() - started < 60  # not the inspection's 120 s limits
        assert answer.result()[0] == 503
    assert list(tmp_path.iterdir()) == []


def test_inspections_run_under_several_workers(tmp_path: Path) -> None:
    """MRE_WORKERS=2 (`python -m app`): each spawned worker starts its own forkserver."""
    port = free_port()
    env = {**os.environ, **LIMITS, "MRE_WORKERS": "2", "MRE_PORT": str(port)}
    env["MRE_CHECKPOINT_TMP_DIR"] = str(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base + "/api/health")
        with ThreadPoolExecutor(4) as pool:  # new connections: the kernel spreads them over workers
            crash = torch_zip(deep_key(300_000))
            crashes = list(pool.map(lambda _: post(base, crash)[0], range(2)))
            good = list(pool.map(lambda _: post(base, saved({"w": torch.ones(2)}))[0], range(8)))
        assert crashes == [422] * 2 and good == [200] * 8
    finally:
        proc.terminate()
        proc.wait(20)
    assert list(tmp_path.iterdir()) == []


def test_mre_forks_its_child_under_the_same_limits(tmp_path: Path) -> None:
    """mre's child is forked from mre (torch imported once), with the server's limits."""
    from app.doctor import isolated
    from app.doctor.report import Limits

    limits = Limits(max_bytes=1 << 30, header_max_bytes=1 << 20, max_entries=10**9, pickle_max_bytes=1 << 30)
    budget = isolated.Budget(memory_bytes=200 * MIB, cpu_seconds=5, wall_seconds=30, report_max_bytes=1 << 20)
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2, 3)}, good)
    body = isolated.run_forked(isolated.inspection_job([good], ["good.pt"], limits, None, None), budget)
    assert json.loads(body)["tensors"][0]["shape"] == [2, 3]
    bomb = tmp_path / "bomb.pt"
    bomb.write_bytes(torch_zip(big_string(240 * MIB)))
    with pytest.raises(isolated.InspectionFailed) as refused:
        isolated.run_forked(isolated.inspection_job([bomb], ["bomb.pt"], limits, None, None), budget)
    assert refused.value.status == 413 and "MRE_CHECKPOINT_MEMORY_BYTES" in refused.value.message
