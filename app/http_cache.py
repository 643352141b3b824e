"""An in-process HTTP cache in front of the app: finished responses kept by request identity.

Every cacheable route here answers with a pure function of its path, query and the request
headers it names in ``Vary``, so a stored answer is exactly a fresh one. A hit is served before
routing, middleware or validation run, which is what lets a repeated spec cost about as little
as the web stack's own fixed-bytes route. Each entry is gzipped once and carries a strong ETag
(304 on If-None-Match). Bounded LRU, so memory stays flat under any traffic.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Headers = list[tuple[bytes, bytes]]
MIN_GZIP = 1024  # smaller bodies gain nothing from compression
# Request headers that select the representation inside one entry rather than being part of the key.
NOT_KEYS = {b"accept-encoding"}
HIT = [(b"server-timing", b'cache;desc="hit"')]


@dataclass(frozen=True)
class Entry:
    etag: bytes
    status: int
    body: bytes
    gzipped: bytes | None
    # Header lists built once, so a hit only picks one.
    plain: Headers
    packed: Headers | None
    not_modified: Headers


def make_entry(status: int, headers: Headers, body: bytes) -> Entry:
    kept = [(k, v) for k, v in headers if k not in (b"content-length", b"etag", b"content-encoding")]
    gzipped = gzip.compress(body, 6, mtime=0) if len(body) >= MIN_GZIP else None
    etag = b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"'
    kept.append((b"etag", etag))
    return Entry(
        etag,
        status,
        body,
        gzipped,
        plain=[*kept, (b"content-length", str(len(body)).encode())],
        packed=None
        if gzipped is None
        else [*kept, (b"content-encoding", b"gzip"), (b"content-length", str(len(gzipped)).encode())],
        not_modified=kept,
    )


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return b""


async def send_entry(scope: Scope, send: Send, entry: Entry, extra: Headers) -> None:
    """``entry`` as a 304 when the client has it, gzipped when the client takes it."""
    if entry.etag in _header(scope, b"if-none-match"):
        status, headers, body = 304, entry.not_modified, b""
    elif entry.packed is not None and b"gzip" in _header(scope, b"accept-encoding"):
        status, headers, body = entry.status, entry.packed, entry.gzipped or b""
    else:
        status, headers, body = entry.status, entry.plain, entry.body
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *extra]})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


class ResponseStore:
    """The bounded LRU behind the middleware (shared through ``app.state`` for tests)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple, Entry] = OrderedDict()
        self.vary: dict[str, tuple[bytes, ...]] = {}  # per path, learnt from its responses

    def __len__(self) -> int:
        return len(self.entries)

    def key(self, scope: Scope) -> tuple | None:
        names = self.vary.get(scope["path"])
        if names is None:
            return None
        return (scope["path"], scope["query_string"], *(_header(scope, n) for n in names))

    def get(self, key: tuple) -> Entry | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, scope: Scope, headers: Headers, entry: Entry) -> None:
        vary = next((v for k, v in headers if k == b"vary"), b"")
        names = tuple(n.strip().lower() for n in vary.split(b",") if n.strip().lower() not in NOT_KEYS)
        self.vary[scope["path"]] = tuple(n for n in names if n)
        self.entries[self.key(scope)] = entry  # type: ignore[index]
        if len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


class HttpCache:
    def __init__(
        self, app: ASGIApp, store: ResponseStore, paths: tuple[str, ...], prefixes: tuple[str, ...]
    ) -> None:
        self.app = app
        self.store = store
        self.paths = frozenset(paths)
        self.prefixes = prefixes

    def cacheable(self, scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and (scope["path"] in self.paths or scope["path"].startswith(self.prefixes))
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.cacheable(scope):
            await self.app(scope, receive, send)
            return
        key = self.store.key(scope)
        entry = self.store.get(key) if key is not None else None
        if entry is not None:
            await send_entry(scope, send, entry, HIT)
            return
        await self._fill(scope, receive, send)

    async def _fill(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        started: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        headers: Headers = list(started.get("headers", []))
        entry = make_entry(started["status"], headers, b"".join(chunks))
        # Server-side cost of a never-seen request, read by `make bench`.
        timing = f'app;desc="miss";dur={(time.perf_counter() - start) * 1000:.3f}'.encode()
        if entry.status == 200 and not any(k == b"set-cookie" for k, _ in headers):
            self.store.put(scope, headers, entry)
        await send_entry(scope, send, entry, [(b"server-timing", timing)])
