"""A small Server-Sent Events client on asyncio streams, for the class tests and the bench: many
hundreds of them in one process cost little, unlike a thread or a browser each."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field


@dataclass
class SseEvent:
    kind: str
    data: dict
    id: str | None = None


@dataclass
class Stream:
    """An open event stream: its status, headers, and its events as they come."""

    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    buffer: bytes = b""
    chunked: bool = False
    comments: int = 0
    pending: list[SseEvent] = field(default_factory=list)

    async def _more(self) -> bool:
        """Read the next piece of the body into the buffer; False at its end."""
        if not self.chunked:
            data = await self.reader.read(65536)
        else:
            size = int((await self.reader.readline()).strip() or b"0", 16)
            data = await self.reader.readexactly(size + 2) if size else b""
            data = data[:-2]
        self.buffer += data
        return bool(data)

    async def next(self, timeout: float = 10.0) -> SseEvent | None:
        """The next event (comments counted, not returned); None when the stream ends."""
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> SseEvent | None:
        while True:
            while b"\n\n" in self.buffer:
                block, self.buffer = self.buffer.split(b"\n\n", 1)
                event = self._parse(block.decode())
                if event is not None:
                    return event
            if not await self._more():
                return None

    def _parse(self, block: str) -> SseEvent | None:
        kind, data, event_id = "message", [], None
        lines = block.split("\n")
        if all(line.startswith(":") for line in lines):
            self.comments += 1
            return None
        for line in lines:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
        if not data:
            return None  # retry: only
        return SseEvent(kind, json.loads("\n".join(data)), event_id)

    def close(self) -> None:
        self.writer.close()


async def open_stream(host: str, port: int, path: str, cookie: str = "") -> Stream:
    reader, writer = await asyncio.open_connection(host, port)
    head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
    head += f"Cookie: {cookie}\r\n" if cookie else ""
    writer.write((head + "\r\n").encode())
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return Stream(status, headers, reader, writer, chunked=headers.get("transfer-encoding") == "chunked")
