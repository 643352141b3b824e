"""Each checkpoint inspection in a child process of its own, under a memory limit, a CPU-time limit and
a wall-clock deadline: a file that crashes the reader, runs it without end or fills memory costs that
child only, and the server answers with the limit it hit.

Children come from a multiprocessing *forkserver*: a single-threaded process started once (a fresh
interpreter, never a fork of the threaded server) that imported torch and this module before it forks
anything, so a child starts in milliseconds with torch already loaded. The report comes back as JSON
bytes over a pipe, read by the event loop without a thread waiting on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import multiprocessing
import os
import resource
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import torch
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from app.doctor import compare
from app.doctor.describe import bounded
from app.doctor.examine import inspect_files
from app.doctor.report import CheckpointError, Limits
from app.doctor.targets import Target
from app.errors import Refusal, out_of_memory
from app.langs import Text, rendered

READ = 1 << 20  # bytes per read from the pipe
SURROGATES = Text("tensor names, keys and metadata must be valid Unicode text (no lone surrogates)")
STOPPING = Text("the server is stopping; send the file again in a moment")
PR_SET_PDEATHSIG = 1  # prctl(2)
NICE = 5  # inspections yield the CPU to the server's own requests


@dataclass(frozen=True)
class Budget:
    """What one inspection may spend; each limit is named by the setting that sets it."""

    memory_bytes: int  # address space beyond the child's start and the file itself (mapped or read)
    cpu_seconds: int
    wall_seconds: float
    report_max_bytes: int
    threads: int = 1


class InspectionFailed(CheckpointError):
    """The child hit a limit or died; ``status`` says which kind of answer the client gets."""

    def __init__(self, status: int, text: Text) -> None:
        super().__init__(text, status=status)


# -- the child ---------------------------------------------------------------------------------


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


def _limit(budget: Budget, file_bytes: int) -> None:
    # No core files: a crafted file could otherwise fill the disk with one per crash.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The soft CPU limit sends SIGXCPU (which ends the process); the hard one a second later SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (budget.cpu_seconds, budget.cpu_seconds + 1))
    # Address space, not RSS (Linux enforces no RSS limit): torch's own mappings are already
    # counted in VmSize, and the file is mapped (zip) or read whole (legacy), so both are added.
    ceiling = _vm_bytes() + file_bytes + budget.memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))


def _die_with_parent() -> None:
    """SIGKILL when the forkserver (the parent, whose one thread forks) ends, as it does once the
    server is gone, even killed by SIGKILL: a runaway inspection does not outlive the server until
    its CPU limit. The forkserver ends when no process holds its "alive" pipe, which multiprocessing
    gives every child too: this one lets go of it. Linux only; elsewhere the limits still end it."""
    from multiprocessing import forkserver

    alive = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
    if alive is not None:
        with contextlib.suppress(OSError):
            os.close(alive)
        forkserver._forkserver._forkserver_alive_fd = None
    with contextlib.suppress(OSError, AttributeError):
        parent = os.getppid()
        set_ = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0
        if set_ and os.getppid() != parent:  # the parent went before the prctl took effect
            os._exit(1)


@dataclass(frozen=True)
class Job:
    """What one child does: ``run`` (a module-level function with its arguments: it is pickled to the
    child) reads ``paths`` and returns the report; the memory limit sits above the files' sizes."""

    run: Callable[[], BaseModel]
    paths: tuple[str, ...]
    copies: int = 0  # the files' bytes it holds in memory beside their maps (a fixed file written)


def _answer(job: Job, budget: Budget) -> bytes:
    try:
        report = job.run().model_dump_json().encode()
    except PydanticSerializationError as exc:
        if "surrogate" not in str(exc):
            raise
        return _refusal(422, SURROGATES)
    except Refusal as exc:  # the reader's own, or the module's (an architecture that cannot be built)
        return _refusal(exc.status, exc.words)
    except RecursionError:
        return _refusal(
            422, Text("the file nests its values too deeply to be read (RecursionError in the inspector)")
        )
    except Exception as exc:
        if out_of_memory(exc):
            return _refusal(413, _memory_message(budget))
        error = f"{type(exc).__name__}: {exc}"[:2000]
        return _refusal(422, Text("the inspector could not read this file: {error}", error=error))
    if len(report) > budget.report_max_bytes:
        return _refusal(413, _report_message(budget, len(report)))
    return b"R" + report


def _refusal(status: int, text: Text) -> bytes:
    return b"E" + json.dumps({"status": status, "text": dict(text)}).encode()


def _mapped(path: Path) -> int:
    """Address space a file takes once read: its size (mapped, or read whole), twice for
    safetensors, which safe_open maps twice while it opens the file (its own map and torch's)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
    return 2 * size if len(head) == 9 and head[8:9] == b"{" else size


def _child(writer: Connection, job: Job, budget: Budget) -> None:
    _die_with_parent()
    torch.set_num_threads(budget.threads)
    os.nice(NICE)
    size = sum(_mapped(Path(path)) for path in job.paths)
    _limit(budget, size + job.copies * sum(Path(path).stat().st_size for path in job.paths))
    try:
        body = _answer(job, budget)
    except MemoryError:  # even building the refusal ran out
        body = _refusal(413, _memory_message(budget))
    view, fd = memoryview(body), writer.fileno()
    while view:
        view = view[os.write(fd, view) :]
    writer.close()


def inspection(
    paths: tuple[str, ...],
    names: tuple[str, ...],
    limits: Limits,
    spec: Target | None,
    at: str | None,
    shown: int | None,
) -> BaseModel:
    """The child's work for an inspection: the report, or (``shown``) the page's cut of it."""
    found = inspect_files([Path(p) for p in paths], list(names), limits, spec, at)
    return found if shown is None else bounded(found, shown)


def fixing(
    paths: tuple[str, ...],
    names: tuple[str, ...],
    limits: Limits,
    spec: Target | None,
    at: str | None,
    out: str,
) -> BaseModel:
    """The child's work for a fixed checkpoint: proven, then written to ``out``."""
    from app.doctor.writer import write_fixed

    return write_fixed([Path(p) for p in paths], list(names), limits, spec, at, Path(out))


def fixing_job(
    paths: Sequence[Path],
    names: Sequence[str],
    limits: Limits,
    spec: Target | None,
    at: str | None,
    out: Path,
) -> Job:
    files = tuple(map(str, paths))
    # The state read (safetensors copies it out of its map), and safetensors' bytes of it as it writes.
    return Job(partial(fixing, files, tuple(names), limits, spec, at, str(out)), files, copies=3)


def inspection_job(
    paths: Sequence[Path],
    names: Sequence[str],
    limits: Limits,
    spec: Target | None,
    at: str | None,
    shown: int | None = None,
) -> Job:
    files = tuple(map(str, paths))
    return Job(partial(inspection, files, tuple(names), limits, spec, at, shown), files)


def _memory_message(budget: Budget) -> Text:
    return Text(
        "reading this file needs more than {memory_bytes} bytes of memory beyond the file itself"
        " (MRE_CHECKPOINT_MEMORY_BYTES)",
        memory_bytes=budget.memory_bytes,
    )


def _report_message(budget: Budget, size: int | None = None) -> Text:
    if size is None:
        return Text(
            "the report on this file would be over the cap of {cap} bytes (MRE_CHECKPOINT_REPORT_MAX_BYTES)",
            cap=budget.report_max_bytes,
        )
    return Text(
        "the report on this file would be {size} bytes, over the cap of {cap} bytes"
        " (MRE_CHECKPOINT_REPORT_MAX_BYTES)",
        size=size,
        cap=budget.report_max_bytes,
    )


def comparison(
    a: tuple[str, ...],
    a_names: tuple[str, ...],
    b: tuple[str, ...],
    b_names: tuple[str, ...],
    limits: Limits,
    value_max_elements: int,
    shown: int | None,
    at_a: str | None = None,
    at_b: str | None = None,
) -> BaseModel:
    """The child's work for a comparison of two checkpoints (each one file or its shards)."""
    found = compare.compare_checkpoints(
        [Path(p) for p in a],
        list(a_names),
        [Path(p) for p in b],
        list(b_names),
        limits,
        value_max_elements,
        at_a,
        at_b,
    )
    return found if shown is None else compare.bounded(found, shown)


def comparison_job(
    a: Sequence[Path],
    a_names: Sequence[str],
    b: Sequence[Path],
    b_names: Sequence[str],
    limits: Limits,
    value_max_elements: int,
    shown: int | None = None,
    at_a: str | None = None,
    at_b: str | None = None,
) -> Job:
    paths_a, paths_b = tuple(map(str, a)), tuple(map(str, b))
    work = partial(
        comparison,
        paths_a,
        tuple(a_names),
        paths_b,
        tuple(b_names),
        limits,
        value_max_elements,
        shown,
        at_a,
        at_b,
    )
    return Job(work, paths_a + paths_b)


# -- the parent --------------------------------------------------------------------------------

_running: set[BaseProcess] = set()
_stopped: set[BaseProcess] = set()  # killed because the server is stopping
_stopping = threading.Event()  # set by SIGTERM/SIGINT: no inspection starts after it


# torch's weights-only unpickler takes nested jagged tensors only once torch._dynamo is imported.
_preload = [__name__, "torch._dynamo"]


def preload_architectures() -> None:
    """Before the forkserver starts: it imports the architectures' models too (app.doctor.preloaded)."""
    if "app.doctor.preloaded" not in _preload:
        _preload.append("app.doctor.preloaded")


@cache
def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(_preload))
    return context


def warm_up() -> None:
    """Start the forkserver now (it imports torch, and transformers where architectures are on:
    seconds), not on the first upload."""
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()


def stop_all() -> None:
    """Kill every running inspection and start no other (the server is stopping): they answer 503."""
    _stopping.set()
    for process in list(_running):
        _stopped.add(process)
        if process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


def kill_children_on_signals() -> None:
    """Chain ``stop_all`` before the server's own SIGTERM and SIGINT handlers (uvicorn's), so that a
    graceful shutdown does not wait for a runaway inspection. Only from the main thread, where
    Python allows signal handlers; uvicorn puts its own back when it stops."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(number)
        if not callable(previous) or getattr(previous, "stops_inspections", False):
            continue

        def handler(signum: int, frame: object, previous: object = previous) -> None:
            stop_all()
            previous(signum, frame)  # type: ignore[operator]

        handler.stops_inspections = True  # type: ignore[attr-defined]
        signal.signal(number, handler)


async def _ready(fd: int, timeout: float) -> bool:
    """Wait until ``fd`` is readable, at most ``timeout`` seconds, in the event loop."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(True))
    try:
        return await asyncio.wait_for(ready, max(timeout, 0))
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


async def _collect(reader: Connection, cap: int, timeout: float) -> tuple[bytes, str]:
    """The child's answer, until it closes the pipe: (bytes, "") or (what came, "deadline"/"cap")."""
    loop = asyncio.get_running_loop()
    fd = reader.fileno()
    os.set_blocking(fd, False)
    body = bytearray()
    done: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if done.done():
            return
        if not data:
            done.set_result("")
        elif len(body) + len(data) > cap:
            done.set_result("cap")
        else:
            body.extend(data)

    loop.add_reader(fd, readable)
    try:
        cause = await asyncio.wait_for(done, timeout)
    except TimeoutError:
        cause = "deadline"
    finally:
        loop.remove_reader(fd)
    return bytes(body), cause


async def inspect_isolated(
    path: Path | Sequence[Path],
    limits: Limits,
    spec: Target | None,
    at: str | None,
    budget: Budget,
    shown: int | None = None,
    names: Sequence[str] = (),
) -> bytes:
    """The report on ``path`` (or on several files read as one: a sharded checkpoint; ``names`` are
    what they were called) as JSON bytes, from a child under ``budget``. With ``shown``, a
    PageReport instead: at most that many of each kind of thing, cut short in the child."""
    paths = (str(path),) if isinstance(path, Path) else tuple(map(str, path))
    work = partial(inspection, paths, tuple(names), limits, spec, at, shown)
    return await run_isolated(Job(work, paths), budget)


def run_now(job: Job, budget: Budget) -> bytes:
    """``job`` run to its end from synchronous code (``mre``): forked from this process when it runs
    one thread (the child starts at once, with torch already imported), else through the
    forkserver (a fork of a threaded process may inherit a lock another thread held), also where
    this thread already runs an event loop (a notebook), which asyncio.run refuses."""
    if threading.active_count() == 1:
        return run_forked(job, budget)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_isolated(job, budget))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run_isolated(job, budget)).result()


def run_forked(job: Job, budget: Budget) -> bytes:
    """``job``'s report as JSON bytes, from a child forked from this process, for a caller with one
    thread that has imported torch already (``mre``): the child starts at once, with no second
    import of torch (a forkserver, for the threaded server, costs one). Same limits, same refusals."""
    import select
    import time

    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(writer, job, budget), daemon=True)
    process.start()
    writer.close()
    deadline = time.monotonic() + budget.wall_seconds
    body, cause = bytearray(), ""
    fd = reader.fileno()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                cause = "deadline"
                break
            if not select.select([fd], [], [], left)[0]:
                continue
            data = os.read(fd, READ)
            if not data:
                break
            if len(body) + len(data) > budget.report_max_bytes + 1:  # and the answer's tag byte
                cause = "cap"
                break
            body.extend(data)
        if cause:
            process.kill()
        process.join(max(deadline - time.monotonic(), 1.0))
    finally:
        reader.close()
        if process.exitcode is None:
            process.kill()
            process.join(5.0)
    return _outcome(bytes(body), cause, process.exitcode, False, budget)


async def run_isolated(job: Job, budget: Budget) -> bytes:
    """``job``'s report as JSON bytes, from a child under ``budget``; a refusal raises CheckpointError
    (the reader's own) or InspectionFailed (a limit hit, a crash)."""
    context = _context()
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(writer, job, budget), daemon=True)
    loop = asyncio.get_running_loop()
    if _stopping.is_set():
        raise InspectionFailed(503, STOPPING)
    # In a thread: the first start waits for the forkserver to import torch. Shielded: a request
    # cancelled meanwhile (a shutdown's timeout) still kills the child it started.
    starting = asyncio.ensure_future(asyncio.to_thread(process.start))
    starting.add_done_callback(lambda _: writer.close())
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:
        starting.add_done_callback(lambda done: done.exception() is None and process.kill())
        raise
    _running.add(process)
    deadline = loop.time() + budget.wall_seconds
    if _stopping.is_set():  # the signal came while it started
        _stopped.add(process)
        process.kill()
    try:
        # the report's cap, and the answer's tag byte
        body, cause = await _collect(reader, budget.report_max_bytes + 1, deadline - loop.time())
        if cause:
            process.kill()
        # The pipe closes as the child exits; its status follows at once (or after the kill).
        await _ready(process.sentinel, max(deadline - loop.time(), 1.0))
    finally:
        reader.close()
        if process.exitcode is None:
            process.kill()
            await _ready(process.sentinel, 5.0)
        _running.discard(process)
    stopped = process in _stopped
    _stopped.discard(process)
    return _outcome(body, cause, process.exitcode, stopped, budget)


def _outcome(body: bytes, cause: str, exitcode: int | None, stopped: bool, budget: Budget) -> bytes:
    if stopped:
        raise InspectionFailed(503, STOPPING)
    if cause == "deadline":
        raise InspectionFailed(
            504,
            Text(
                "reading this file took longer than {wall_seconds:g} seconds "
                "(MRE_CHECKPOINT_WALL_SECONDS); the inspection was stopped",
                wall_seconds=budget.wall_seconds,
            ),
        )
    if cause == "cap":
        raise InspectionFailed(413, _report_message(budget))
    if exitcode == 0 and body[:1] == b"R":
        return body[1:]
    if exitcode == 0 and body[:1] == b"E":
        refusal = json.loads(body[1:])
        raise InspectionFailed(refusal["status"], rendered(refusal["text"]))
    if exitcode == -signal.SIGXCPU:
        raise InspectionFailed(
            504,
            Text(
                "reading this file used more than {cpu_seconds} seconds of CPU time "
                "(MRE_CHECKPOINT_CPU_SECONDS); the inspection was stopped",
                cpu_seconds=budget.cpu_seconds,
            ),
        )
    if exitcode == -signal.SIGKILL:  # not ours: the CPU limit's hard stop, or the kernel's OOM killer
        raise InspectionFailed(
            504,
            Text(
                "the inspector process was killed (SIGKILL): over {cpu_seconds} seconds of CPU time "
                "(MRE_CHECKPOINT_CPU_SECONDS), or the server ran out of memory",
                cpu_seconds=budget.cpu_seconds,
            ),
        )
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else "?"
        raise InspectionFailed(
            422,
            Text(
                "the inspector process died (signal {value}, {name}) reading this file",
                value=-exitcode,
                name=name,
            ),
        )
    raise InspectionFailed(
        422, Text("the inspector process ended (status {exitcode}) without an answer", exitcode=exitcode)
    )
