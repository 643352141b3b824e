"""Encoded responses kept by request identity, with strong ETags, 304s and gzip.

Everything the app serves is a pure function of the request (the spec, the language, the view),
so a bounded LRU of finished bytes answers repeated requests without building or rendering again.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

MIN_GZIP = 1024  # smaller bodies gain nothing from compression


@dataclass(frozen=True)
class Entry:
    body: bytes
    gzipped: bytes | None
    etag: str
    status: int
    headers: tuple[tuple[str, str], ...]


def make_entry(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Entry:
    gzipped = gzip.compress(body, 6, mtime=0) if len(body) >= MIN_GZIP else None
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    return Entry(body, gzipped, etag, status, tuple((headers or {}).items()))


class ResponseCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def respond(
        self,
        request: Request,
        key: Hashable,
        produce: Callable[[], tuple[bytes, int, dict[str, str]]],
        media_type: str,
        vary: str = "Accept-Encoding",
    ) -> Response:
        """The cached answer for ``key``, produced (body, status, headers) on a miss."""
        entry = self._entries.get(key)
        timing = 'cache;desc="hit"'
        if entry is None:
            self.misses += 1
            start = time.perf_counter()
            entry = make_entry(*produce())
            # Server-side cost of a never-seen request, read by `make bench`.
            timing = f'build;desc="miss";dur={(time.perf_counter() - start) * 1000:.3f}'
            self._entries[key] = entry
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self.hits += 1
            self._entries.move_to_end(key)
        return send(request, entry, media_type, {"Vary": vary, "Server-Timing": timing})


def send(request: Request, entry: Entry, media_type: str, headers: dict[str, str]) -> Response:
    """``entry`` as a 304 when the client has it, gzipped when the client takes it."""
    headers = {**dict(entry.headers), **headers, "ETag": entry.etag}
    if entry.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if entry.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(entry.gzipped, entry.status, headers, media_type)
    return Response(entry.body, entry.status, headers, media_type)
