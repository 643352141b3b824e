"""Receiving one uploaded file: streamed to disk under a cap as it arrives, never whole in memory.

Takes ``multipart/form-data`` (the file in the part named ``file``, small text fields beside it,
as a browser form sends them) or the raw bytes (``application/octet-stream``, as ``curl
--data-binary`` sends them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

FILE_FIELD = "file"
MAX_FIELDS = 80  # the page's form: preset, device, a style per member, state_dict ...
MAX_FIELD_BYTES = 1024


class UploadError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Pace:
    """How slowly a body may come: after ``grace_seconds`` it must have averaged ``min_rate`` bytes
    a second, so a client trickling a byte now and then is cut off, a slow but real upload is not."""

    min_rate: int
    grace_seconds: float

    def left(self, started: float, received: int) -> float:
        """Seconds until ``received`` bytes are too few."""
        return started + self.grace_seconds + received / self.min_rate - time.monotonic()

    def refusal(self, received: int) -> UploadError:
        return UploadError(
            408,
            f"the upload came too slowly ({received} bytes so far): after {self.grace_seconds:g} s an"
            f" upload must average {self.min_rate} bytes a second"
            " (MRE_CHECKPOINT_UPLOAD_MIN_BYTES_PER_SECOND, MRE_CHECKPOINT_UPLOAD_GRACE_SECONDS)",
        )


@dataclass
class Upload:
    filename: str = ""
    size: int = 0
    fields: list[tuple[str, str]] = field(default_factory=list)
    received: bool = False  # a file part (or a raw body) was there


class _Parts:
    """python-multipart callbacks: the file part goes to ``out``, text fields to ``upload.fields``."""

    def __init__(self, out: BinaryIO, upload: Upload, max_bytes: int) -> None:
        self.out, self.upload, self.max_bytes = out, upload, max_bytes
        self.header_name = self.header_value = b""
        self.disposition = b""
        self.name: str | None = None
        self.is_file = False
        self.value = bytearray()

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
                422, 'a multipart part has no name (Content-Disposition: form-data; name="...")'
            )
        self.name = options[b"name"].decode("utf-8", "replace")
        self.is_file = self.name == FILE_FIELD
        if self.is_file:
            if self.upload.received:
                raise UploadError(422, f"one file per request, in the part named {FILE_FIELD!r}")
            self.upload.received = True
            self.upload.filename = options.get(b"filename", b"").decode("utf-8", "replace")
        elif len(self.upload.fields) >= MAX_FIELDS:
            raise UploadError(422, f"more than {MAX_FIELDS} form fields")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.is_file:
            _write(self.out, self.upload, data[start:end], self.max_bytes)
            return
        self.value += data[start:end]
        if len(self.value) > MAX_FIELD_BYTES:
            raise UploadError(422, f"form field {self.name!r} over {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if not self.is_file and self.name is not None:
            self.upload.fields.append((self.name, self.value.decode("utf-8", "replace")))


def _write(out: BinaryIO, upload: Upload, chunk: bytes, max_bytes: int) -> None:
    upload.size += len(chunk)
    if upload.size > max_bytes:
        raise UploadError(413, f"the file is over the cap of {max_bytes} bytes (MRE_CHECKPOINT_MAX_BYTES)")
    out.write(chunk)


async def receive(request: Request, dest: Path, max_bytes: int, pace: Pace | None = None) -> Upload:
    """Stream the request's file into ``dest``; the caller removes ``dest`` whatever happens."""
    try:
        return await _receive(request, dest, max_bytes, pace)
    except ClientDisconnect as exc:  # nobody reads the answer; this keeps it out of the error log
        raise UploadError(400, "the client went away before the upload ended") from exc


async def _paced(request: Request, pace: Pace | None) -> AsyncIterator[bytes]:
    """The body's chunks; a body slower than ``pace`` ends in a 408 even while nothing arrives."""
    chunks = request.stream().__aiter__()
    started, received = time.monotonic(), 0
    while True:
        try:
            if pace is None:
                chunk = await chunks.__anext__()
            else:
                chunk = await asyncio.wait_for(chunks.__anext__(), max(pace.left(started, received), 0))
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise pace.refusal(received) from None  # type: ignore[union-attr]
        received += len(chunk)
        yield chunk


async def _receive(request: Request, dest: Path, max_bytes: int, pace: Pace | None) -> Upload:
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    upload = Upload()
    with dest.open("wb") as out:
        if kind == b"multipart/form-data":
            boundary = params.get(b"boundary")
            if not boundary:
                raise UploadError(422, "multipart/form-data without a boundary")
            parts = _Parts(out, upload, max_bytes)
            callbacks = {name: getattr(parts, name) for name in dir(parts) if name.startswith("on_")}
            parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
            try:
                async for chunk in _paced(request, pace):
                    parser.write(chunk)
                parser.finalize()
            except MultipartParseError as exc:
                raise UploadError(422, f"malformed multipart body: {exc}") from exc
        elif kind in (b"application/octet-stream", b""):
            upload.received = True
            async for chunk in _paced(request, pace):
                _write(out, upload, chunk, max_bytes)
        else:
            raise UploadError(
                415, "send the file as multipart/form-data (field 'file') or as application/octet-stream"
            )
    if not upload.received:
        raise UploadError(422, f"no file: send it in the multipart part named {FILE_FIELD!r}")
    return upload
