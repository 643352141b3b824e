"""The inspector's answers, read in this process: what a child sends for each outcome of its work,
what the parent makes of each way a child can end, the pipe read to a deadline or a cap, and the
stop on a signal. (tests/doctor/test_isolated.py sends crafted files to a real server.)"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError
from safetensors.torch import save_file

from app.doctor import isolated
from app.doctor.examine import inspect_files
from app.doctor.report import CheckpointError
from app.langs import Text
from tests.support.aio import run
from tests.support.checkpoints import LIMITS

BUDGET = isolated.Budget(memory_bytes=1000, cpu_seconds=7, wall_seconds=2.5, report_max_bytes=40)


class Small(BaseModel):
    text: str


def answer(work: object, budget: isolated.Budget = BUDGET) -> tuple[str, object]:
    """The child's answer to ``work``: ("R", the report) or ("E", the refusal)."""
    body = isolated._answer(isolated.Job(work, ()), budget)  # type: ignore[arg-type]
    return body[:1].decode(), json.loads(body[1:])


def raising(exc: BaseException) -> object:
    def work() -> BaseModel:
        raise exc

    return work


def test_a_report_is_sent_whole_up_to_its_cap() -> None:
    fits = Small(text="x" * (40 - len('{"text":""}')))
    assert len(fits.model_dump_json()) == 40
    assert answer(lambda: fits) == ("R", {"text": fits.text})
    over = Small(text=fits.text + "x")
    assert answer(lambda: over) == (
        "E",
        {
            "status": 413,
            "text": dict(
                Text(
                    "the report on this file would be {size} bytes, over the cap of {cap} bytes"
                    " (MRE_CHECKPOINT_REPORT_MAX_BYTES)",
                    size=41,
                    cap=40,
                )
            ),
        },
    )


@pytest.mark.parametrize(
    ("exc", "status", "english"),
    [
        (CheckpointError(Text("the file is empty"), status=410), 410, "the file is empty"),
        (
            RecursionError("deep"),
            422,
            "the file nests its values too deeply to be read (RecursionError in the inspector)",
        ),
        (
            MemoryError(),
            413,
            "reading this file needs more than 1000 bytes of memory beyond the file itself"
            " (MRE_CHECKPOINT_MEMORY_BYTES)",
        ),
        (
            RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes"),
            413,
            "reading this file needs more than 1000 bytes of memory beyond the file itself"
            " (MRE_CHECKPOINT_MEMORY_BYTES)",
        ),
        (
            RuntimeError("std::bad_alloc"),
            413,
            "reading this file needs more than 1000 bytes of memory beyond the file itself"
            " (MRE_CHECKPOINT_MEMORY_BYTES)",
        ),
        (ValueError("odd"), 422, "the inspector could not read this file: ValueError: odd"),
        (
            ValueError("v" * 3000),
            422,
            "the inspector could not read this file: " + ("ValueError: " + "v" * 3000)[:2000],
        ),
    ],
)
def test_each_failure_of_the_work_is_sent_as_a_refusal(exc: BaseException, status: int, english: str) -> None:
    tag, refusal = answer(raising(exc))
    assert tag == "E" and refusal["status"] == status and refusal["text"]["en"] == english  # type: ignore[index]
    assert refusal["text"]["zh-CN"] and refusal["text"]["zh-CN"] != english  # type: ignore[index]


def test_a_name_that_is_no_unicode_is_refused_and_other_serialization_errors_are_not_hidden() -> None:
    tag, refusal = answer(lambda: Small(text="\udc80"))
    assert (tag, refusal["status"], refusal["text"]["en"]) == ("E", 422, isolated.SURROGATES["en"])  # type: ignore[index]
    with pytest.raises(PydanticSerializationError):
        answer(raising(PydanticSerializationError("Unable to serialize unknown type")))


def test_a_jobs_work_is_the_inspection_of_its_files(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "m.pt")
    job = isolated.inspection_job([tmp_path / "m.pt"], ["m.pt"], LIMITS, None, None)
    assert job.paths == (str(tmp_path / "m.pt"),) and job.copies == 0
    direct = inspect_files([tmp_path / "m.pt"], ["m.pt"], LIMITS, None, None)
    assert job.run().model_dump() == direct.model_dump()
    shown = isolated.inspection_job([tmp_path / "m.pt"], ["m.pt"], LIMITS, None, None, shown=1).run()
    assert type(shown).__name__ == "PageReport"
    fixing = isolated.fixing_job([tmp_path / "m.pt"], ["m.pt"], LIMITS, None, None, tmp_path / "out")
    assert fixing.paths == job.paths and fixing.copies == 3
    both = isolated.comparison_job([tmp_path / "m.pt"], ["a"], [tmp_path / "m.pt"], ["b"], LIMITS, 10)
    assert both.paths == (str(tmp_path / "m.pt"),) * 2 and both.copies == 0


def test_a_safetensors_file_is_mapped_twice_and_a_torch_file_once(tmp_path: Path) -> None:
    save_file({"w": torch.ones(3)}, tmp_path / "m.safetensors")
    torch.save({"w": torch.ones(3)}, tmp_path / "m.pt")
    (tmp_path / "short").write_bytes(b"\x01" * 8 + b"{")
    (tmp_path / "eight").write_bytes(b"\x01" * 7 + b"{")
    for name, times in (("m.safetensors", 2), ("m.pt", 1), ("short", 2), ("eight", 1)):
        assert isolated._mapped(tmp_path / name) == times * (tmp_path / name).stat().st_size, name


def test_the_address_space_read_is_the_processes() -> None:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    assert abs(isolated._vm_bytes() - pages * resource.getpagesize()) < 64 * 1024**2


def failed(body: bytes, cause: str, exitcode: int | None, stopped: bool = False) -> tuple[int, str]:
    with pytest.raises(isolated.InspectionFailed) as refused:
        isolated._outcome(body, cause, exitcode, stopped, BUDGET)
    return refused.value.status, refused.value.message


def test_a_childs_report_or_refusal_is_what_it_sent() -> None:
    assert isolated._outcome(b'R{"a": 1}', "", 0, False, BUDGET) == b'{"a": 1}'
    sent = isolated._refusal(410, Text("the file is empty"))
    status, message = failed(sent, "", 0)
    assert (status, message) == (410, "the file is empty")
    with pytest.raises(isolated.InspectionFailed) as refused:
        isolated._outcome(sent, "", 0, False, BUDGET)
    assert refused.value.text("zh-CN") == Text("the file is empty")["zh-CN"]


@pytest.mark.parametrize(
    ("body", "cause", "exitcode", "stopped", "status", "message"),
    [
        (b"R{}", "", 0, True, 503, isolated.STOPPING["en"]),  # stopped wins over a report
        (
            b"",
            "deadline",
            None,
            False,
            504,
            "reading this file took longer than 2.5 seconds (MRE_CHECKPOINT_WALL_SECONDS); the inspection "
            "was stopped",
        ),
        (
            b"R" + b"x" * 41,
            "cap",
            -signal.SIGKILL,
            False,
            413,
            "the report on this file would be over the cap of 40 bytes (MRE_CHECKPOINT_REPORT_MAX_BYTES)",
        ),
        (
            b"",
            "",
            -signal.SIGXCPU,
            False,
            504,
            "reading this file used more than 7 seconds of CPU time (MRE_CHECKPOINT_CPU_SECONDS); the "
            "inspection was stopped",
        ),
        (
            b"",
            "",
            -signal.SIGKILL,
            False,
            504,
            "the inspector process was killed (SIGKILL): over 7 seconds of CPU time "
            "(MRE_CHECKPOINT_CPU_SECONDS), or the server ran out of memory",
        ),
        (
            b"",
            "",
            -signal.SIGSEGV,
            False,
            422,
            "the inspector process died (signal 11, SIGSEGV) reading this file",
        ),
        (
            b"R{}",
            "",
            -signal.SIGABRT,
            False,
            422,
            "the inspector process died (signal 6, SIGABRT) reading this file",
        ),
        (
            b"",
            "",
            -signal.SIGHUP,
            False,
            422,
            "the inspector process died (signal 1, SIGHUP) reading this file",
        ),
        (b"", "", -99, False, 422, "the inspector process died (signal 99, ?) reading this file"),
        (b"", "", 0, False, 422, "the inspector process ended (status 0) without an answer"),
        (b"R{}", "", 1, False, 422, "the inspector process ended (status 1) without an answer"),
        (b"X{}", "", 0, False, 422, "the inspector process ended (status 0) without an answer"),
    ],
)
def test_each_way_a_child_ends_is_said(
    body: bytes, cause: str, exitcode: int | None, stopped: bool, status: int, message: str
) -> None:
    assert failed(body, cause, exitcode, stopped) == (status, message)


def test_a_whole_number_of_seconds_is_said_without_decimals() -> None:
    budget = isolated.Budget(memory_bytes=1, cpu_seconds=1, wall_seconds=30.0, report_max_bytes=1)
    with pytest.raises(isolated.InspectionFailed) as refused:
        isolated._outcome(b"", "deadline", None, False, budget)
    assert "longer than 30 seconds" in refused.value.message


def _piped() -> tuple[multiprocessing.connection.Connection, int]:
    reader, writer = multiprocessing.Pipe(duplex=False)
    return reader, os.dup(writer.fileno())


def test_the_pipe_is_read_until_it_closes_up_to_the_cap_and_the_deadline() -> None:
    async def collected(data: bytes, close: bool, cap: int, timeout: float) -> tuple[bytes, str]:
        reader, fd = _piped()
        os.write(fd, data)
        if close:
            os.close(fd)
        try:
            return await isolated._collect(reader, cap, timeout)
        finally:
            reader.close()
            if not close:
                os.close(fd)

    assert run(collected(b"abc", True, 3, 5)) == (b"abc", "")  # exactly the cap: whole
    assert run(collected(b"abcd", True, 3, 5)) == (b"", "cap")
    assert run(collected(b"ab", False, 3, 0.2)) == (b"ab", "deadline")  # the child never closes


def test_a_file_descriptor_is_waited_for_until_ready_or_the_timeout() -> None:
    async def ready(write: bool, timeout: float) -> bool:
        read_fd, write_fd = os.pipe()
        if write:
            os.write(write_fd, b"x")
        try:
            return await isolated._ready(read_fd, timeout)
        finally:
            os.close(read_fd)
            os.close(write_fd)

    assert run(ready(True, 5)) is True
    assert run(ready(False, 0.1)) is False
    assert run(ready(True, -1)) in (True, False)  # a past deadline is no error


@pytest.fixture
def stopping() -> Iterator[None]:
    """stop_all sets a process-wide flag: put it back for the other tests."""
    handlers = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        isolated._stopping.clear()
        isolated._running.clear()
        isolated._stopped.clear()
        for number, handler in handlers.items():
            signal.signal(number, handler)


def test_stopping_kills_every_running_inspection_and_refuses_new_ones(stopping: None) -> None:
    context = multiprocessing.get_context("fork")
    sleepers = [context.Process(target=signal.pause, daemon=True) for _ in range(2)]
    for process in sleepers:
        process.start()
        isolated._running.add(process)
    isolated.stop_all()
    for process in sleepers:
        process.join(10)
        assert process.exitcode == -signal.SIGKILL
    assert isolated._stopped == set(sleepers) and isolated._stopping.is_set()
    job = isolated.Job(lambda: Small(text=""), ())
    with pytest.raises(isolated.InspectionFailed) as refused:
        run(isolated.run_isolated(job, BUDGET))
    assert (refused.value.status, refused.value.message) == (503, isolated.STOPPING["en"])


def test_a_signal_stops_the_inspections_then_calls_the_servers_own_handler(stopping: None) -> None:
    called: list[int] = []
    signal.signal(signal.SIGTERM, lambda number, frame: called.append(number))
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # not a Python handler: left alone
    isolated.kill_children_on_signals()
    isolated.kill_children_on_signals()  # twice: chained once
    handler = signal.getsignal(signal.SIGTERM)
    assert getattr(handler, "stops_inspections", False) and signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    handler(signal.SIGTERM, None)  # type: ignore[operator]
    assert called == [signal.SIGTERM] and isolated._stopping.is_set()


def test_an_inspection_job_loads_the_state_dict_asked_for(tmp_path: Path) -> None:
    from tests.support.checkpoints import ref, spec

    state = ref("testmodel").state_dict()
    torch.save({"ema": dict(state), "model": dict(state)}, tmp_path / "m.pt")
    for at in ("ema", "model"):
        job = isolated.inspection_job([tmp_path / "m.pt"], ["m.pt"], LIMITS, spec("testmodel"), at)
        assert job.run().load.state_dict == at  # type: ignore[attr-defined]
