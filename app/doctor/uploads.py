"""Receiving one uploaded file: streamed to disk under a cap as it arrives, never whole in memory.

Takes ``multipart/form-data`` (the file in the part named ``file``, small text fields beside it,
as a browser form sends them) or the raw bytes (``application/octet-stream``, as ``curl
--data-binary`` sends them).
"""

from __future__ import annotations

import asyncio
import bisect
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.doctor.caps import InProgress, check_available
from app.doctor.report import UploadError
from app.doctor.shards import MAX_SHARDS
from app.langs import Text
from app.settings import Settings

FILE_FIELD = "file"
OTHER_FIELD = "other"  # the part of the second checkpoint, to compare with the first
PREFIX = "mre-checkpoint-"  # then its server process: mre-checkpoint-<pid>.<start time>-<random>
MAX_FIELDS = 80  # the page's form: preset, device, a style per member, state_dict ...
MAX_FIELD_BYTES = 1024
MAX_FILES = 2 * (MAX_SHARDS + 1)  # two sharded checkpoints to compare, each with its index


@dataclass(frozen=True)
class Pace:
    """How slowly a body may come: every ``grace_seconds`` must bring at least ``min_rate`` bytes a
    second, over a sliding window, so a client trickling a byte now and then is cut off however much
    it sent before, and a slow but real upload is not."""

    min_rate: int
    grace_seconds: float

    @property
    def window_bytes(self) -> int:
        return max(int(self.min_rate * self.grace_seconds), 1)

    def refusal(self, received: int) -> UploadError:
        return UploadError(
            408,
            Text(
                "the upload came too slowly ({received} bytes so far): every {grace_seconds:g} s of "
                "an upload must bring at least {window_bytes} bytes ({min_rate} bytes a second; "
                "MRE_CHECKPOINT_UPLOAD_MIN_BYTES_PER_SECOND, MRE_CHECKPOINT_UPLOAD_GRACE_SECONDS)",
                received=received,
                grace_seconds=self.grace_seconds,
                window_bytes=self.window_bytes,
                min_rate=self.min_rate,
            ),
        )


class _Window:
    """When the body last arrived, to tell how long the bytes of the last ``grace_seconds`` last:
    the arrival times of the chunks with the running total after each, the first at the start."""

    def __init__(self, pace: Pace) -> None:
        self.pace = pace
        self.times, self.totals = [time.monotonic()], [0]
        self.first = 0  # the entries before it are older than the window needs

    def add(self, received: int) -> None:
        now = time.monotonic()
        self.times.append(now)
        self.totals.append(received)
        horizon = now - self.pace.grace_seconds
        while self.first + 1 < len(self.times) and self.times[self.first + 1] <= horizon:
            self.first += 1
        if self.first > 1024:
            del self.times[: self.first], self.totals[: self.first]
            self.first = 0

    def left(self) -> float:
        """Seconds until, with no more bytes, the last ``grace_seconds`` have brought too few: once the
        window has slid past the first chunk after which fewer than its due remain."""
        received = self.totals[-1]
        i = bisect.bisect_right(self.totals, received - self.pace.window_bytes, self.first)
        return self.times[i] + self.pace.grace_seconds - time.monotonic()


@dataclass(frozen=True)
class Received:
    """One file of the request, on disk under a name of ours (never the client's)."""

    field: str
    filename: str  # as the client named it, without any directory part
    path: Path


@dataclass
class Upload:
    filename: str = ""  # the first file's
    size: int = 0  # bytes of all files together: the cap is on the sum
    fields: list[tuple[str, str]] = field(default_factory=list)
    received: bool = False  # a file part (or a raw body) was there
    files: list[Received] = field(default_factory=list)

    def of(self, name: str) -> list[Received]:
        return [f for f in self.files if f.field == name]


class _Parts:
    """python-multipart callbacks: each part named in ``file_fields`` goes to a file of its own in
    ``directory``, text fields to ``upload.fields``."""

    def __init__(
        self, directory: Path, upload: Upload, max_bytes: int, file_fields: tuple[str, ...], many: bool
    ) -> None:
        self.directory, self.upload, self.max_bytes = directory, upload, max_bytes
        self.file_fields, self.many = file_fields, many
        self.out: BinaryIO | None = None
        self.header_name = self.header_value = b""
        self.disposition = b""
        self.name: str | None = None
        self.is_file = False
        self.value = bytearray()
        self.ended = False  # the closing boundary came

    def on_part_begin(self) -> None:
        self.disposition, self.name, self.is_file, self.value = b"", None, False, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            raise UploadError(
                422, Text('a multipart part has no name (Content-Disposition: form-data; name="...")')
            )
        self.name = options[b"name"].decode("utf-8", "replace")
        self.is_file = self.name in self.file_fields
        if self.is_file:
            if self.upload.received and not self.many:
                raise UploadError(
                    422, Text("one file per request, in the part named {FILE_FIELD!r}", FILE_FIELD=FILE_FIELD)
                )
            if len(self.upload.files) >= MAX_FILES:
                raise UploadError(
                    422, Text("more than {MAX_FILES} files in one request", MAX_FILES=MAX_FILES)
                )
            self.upload.received = True
            filename = options.get(b"filename", b"").decode("utf-8", "replace")
            filename = filename.replace("\\", "/").rpartition("/")[2]  # a name, never a path
            self.upload.filename = self.upload.filename or filename
            path = self.directory / str(len(self.upload.files))
            self.upload.files.append(Received(self.name, filename, path))
            self.out = path.open("wb")
        elif len(self.upload.fields) >= MAX_FIELDS:
            raise UploadError(422, Text("more than {MAX_FIELDS} form fields", MAX_FIELDS=MAX_FIELDS))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.is_file:
            assert self.out is not None
            _write(self.out, self.upload, data[start:end], self.max_bytes)
            return
        self.value += data[start:end]
        if len(self.value) > MAX_FIELD_BYTES:
            raise UploadError(
                422,
                Text(
                    "form field {name!r} over {MAX_FIELD_BYTES} bytes",
                    name=self.name,
                    MAX_FIELD_BYTES=MAX_FIELD_BYTES,
                ),
            )

    def on_end(self) -> None:
        self.ended = True

    def on_part_end(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
        if not self.is_file and self.name is not None:
            self.upload.fields.append((self.name, self.value.decode("utf-8", "replace")))


def _write(out: BinaryIO, upload: Upload, chunk: bytes, max_bytes: int) -> None:
    upload.size += len(chunk)
    if upload.size > max_bytes:
        raise UploadError(
            413,
            Text(
                "the files sent are over the cap of {max_bytes} bytes in all (MRE_CHECKPOINT_MAX_BYTES per "
                "checkpoint, twice that for two to compare)",
                max_bytes=max_bytes,
            ),
        )
    out.write(chunk)


def check_size(files: list[Received], max_bytes: int, which: Text) -> None:
    """One checkpoint's files (of a request that may carry two) under the cap, named if not."""
    size = sum(f.path.stat().st_size for f in files)
    if size > max_bytes:
        raise UploadError(
            413,
            Text(
                "{which} is {size} bytes, over the cap of {max_bytes} bytes per checkpoint "
                "(MRE_CHECKPOINT_MAX_BYTES)",
                which=which,
                size=size,
                max_bytes=max_bytes,
            ),
        )


def sent(files: list[Received]) -> list[Received]:
    """The files really chosen: a file input left empty still sends a part, with no name and no bytes."""
    return [f for f in files if f.filename or f.path.stat().st_size]


async def receive(
    request: Request,
    directory: Path,
    max_bytes: int,
    pace: Pace | None = None,
    file_fields: tuple[str, ...] = (FILE_FIELD,),
    many: bool = False,
) -> Upload:
    """Stream the request's files into ``directory`` (each file part, or the raw body); ``many``
    takes several (a sharded checkpoint, two to compare). The caller removes ``directory``
    whatever happens."""
    try:
        return await _receive(request, directory, max_bytes, pace, file_fields, many)
    except ClientDisconnect as exc:  # nobody reads the answer; this keeps it out of the error log
        raise UploadError(400, Text("the client went away before the upload ended")) from exc


async def _paced(request: Request, pace: Pace | None) -> AsyncIterator[bytes]:
    """The body's chunks; a body slower than ``pace`` ends in a 408 even while nothing arrives."""
    chunks = request.stream().__aiter__()
    window = _Window(pace) if pace is not None else None
    received = 0
    while True:
        try:
            if window is None:
                chunk = await chunks.__anext__()
            else:
                chunk = await asyncio.wait_for(chunks.__anext__(), max(window.left(), 0))
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise pace.refusal(received) from None  # type: ignore[union-attr]
        received += len(chunk)
        if window is not None and chunk:
            window.add(received)
        yield chunk


async def _receive(
    request: Request,
    directory: Path,
    max_bytes: int,
    pace: Pace | None,
    file_fields: tuple[str, ...],
    many: bool,
) -> Upload:
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    upload = Upload()
    truncated = False
    if kind == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise UploadError(422, Text("multipart/form-data without a boundary"))
        parts = _Parts(directory, upload, max_bytes, file_fields, many)
        callbacks = {name: getattr(parts, name) for name in dir(parts) if name.startswith("on_")}
        try:  # python-multipart raises its own errors (FormParserError and below) on all three
            parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
            async for chunk in _paced(request, pace):
                parser.write(chunk)
            parser.finalize()
        except FormParserError as exc:
            raise UploadError(422, Text("malformed multipart body: {exc}", exc=exc)) from exc
        finally:
            if parts.out is not None:
                parts.out.close()
        truncated = not parts.ended
    elif kind in (b"application/octet-stream", b""):
        upload.received = True
        path = directory / "0"
        upload.files.append(Received(file_fields[0], "", path))
        with path.open("wb") as out:
            async for chunk in _paced(request, pace):
                _write(out, upload, chunk, max_bytes)
    else:
        raise UploadError(
            415, Text("send the file as multipart/form-data (field 'file') or as application/octet-stream")
        )
    if not upload.received:
        raise UploadError(
            422, Text("no file: send it in the multipart part named {FILE_FIELD!r}", FILE_FIELD=FILE_FIELD)
        )
    if truncated:
        raise UploadError(
            422, Text("the multipart body ends before its closing boundary: the file may be truncated")
        )
    return upload


@asynccontextmanager
async def uploaded(
    request: Request,
    settings: Settings,
    in_progress: InProgress,
    file_fields: tuple[str, ...] = (FILE_FIELD,),
    checkpoints: int = 1,
) -> AsyncIterator[Upload]:
    """The request's files on disk while the block runs (several: a sharded checkpoint, or two
    checkpoints to compare); gone afterwards, whatever happened. The cap is on their sum:
    MRE_CHECKPOINT_MAX_BYTES for each of ``checkpoints``."""
    check_available(settings)
    with in_progress.taken():
        directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{owner()}-", dir=settings.checkpoint_tmp_dir))
        try:
            pace = Pace(
                settings.checkpoint_upload_min_bytes_per_second, settings.checkpoint_upload_grace_seconds
            )
            cap = checkpoints * settings.checkpoint_max_bytes
            yield await receive(request, directory, cap, pace, file_fields, True)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def owner(pid: int | None = None) -> str:
    """A process as upload directories name it: its id and start time, so that a new process given
    a dead one's id (pid 1 in every new container) is not taken for it."""
    pid = pid or os.getpid()
    return f"{pid}.{_started(pid)}"


def _started(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"  # gone (or no /proc): only the id is checked
    return stat.rsplit(")", 1)[1].split()[19]  # starttime, field 22, after the command's name


def remove_stale(tmp_dir: str | None) -> list[Path]:
    """Remove the upload directories of server processes that no longer run (killed, crashed)."""
    removed = []
    for directory in Path(tmp_dir or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        pid, _, started = directory.name.removeprefix(PREFIX).split("-", 1)[0].partition(".")
        if directory.is_dir() and not (pid.isdigit() and _alive(int(pid), started)):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to clean
        return True
    return started == "?" or _started(pid) in ("?", started)
