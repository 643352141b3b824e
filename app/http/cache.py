"""An in-process HTTP cache in front of the app: finished responses kept by request identity.

Every cacheable route here answers with a pure function of its path, query and the request
headers it names in ``Vary``, so a stored answer is exactly a fresh one. A hit is served before
routing, middleware or validation run, which is what lets a repeated spec cost about as little
as the web stack's own fixed-bytes route. Each entry is gzipped once and carries a strong ETag
(304 on If-None-Match). Bounded LRU, in entries and in bytes, so memory stays flat under any traffic.

A header in ``Vary`` is keyed by what the app reads of it, through a normaliser the app gives
(Accept-Language by the language it picks), never by its raw bytes: a thousand distinct 1 MB values
that pick English are one entry. A header without a normaliser is keyed by a digest when long.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.head import without_body
from app.http.limits import url_bytes

Headers = list[tuple[bytes, bytes]]
MIN_GZIP = 1024  # smaller bodies gain nothing from compression
# Request headers that select the representation inside one entry rather than being part of the key.
NOT_KEYS = {b"accept-encoding"}
HIT = [(b"server-timing", b'cache;desc="hit"')]
Normaliser = Callable[[bytes], Hashable]
# Per path: where each Vary header goes in the key, its reader, the part for it absent or empty.
Learnt = tuple[dict[bytes, int], tuple[Normaliser, ...], tuple[Hashable, ...]]
SHORT = 64  # a header value up to this long is its own key part; a longer one, its digest
OVERHEAD = 512  # bytes an entry costs beyond its bodies and key: objects, header lists


# What uvicorn refuses in a header it sends (its httptools protocol's checks, done there per header
# per response): a form whose headers pass once can go to the socket as bytes (``Form.lines``).
BAD_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


def header_lines(headers: Headers) -> bytes | None:
    """``headers`` as the lines of a response head, or None when one is not valid on the wire."""
    if any(BAD_NAME.search(name) or BAD_VALUE.search(value) for name, value in headers):
        return None
    return b"".join(name.lower() + b": " + value + b"\r\n" for name, value in headers)


@dataclass(frozen=True)
class Form:
    """One representation of an entry as sent: its headers also as the lines of a head, built once."""

    status: int
    headers: Headers
    body: bytes
    lines: bytes | None

    @classmethod
    def of(cls, status: int, headers: Headers, body: bytes) -> Form:
        return cls(status, headers, body, header_lines(headers))


@dataclass(frozen=True)
class Entry:
    etag: bytes
    status: int
    body: bytes
    gzipped: bytes | None
    # The forms a hit picks from, built once.
    plain: Form
    packed: Form | None
    not_modified: Form
    # The gzipped body is another representation: its own strong tag (unused without one).
    packed_etag: bytes
    packed_not_modified: Form

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"") + OVERHEAD


def compress(body: bytes) -> bytes | None:
    return gzip.compress(body, 6, mtime=0) if len(body) >= MIN_GZIP else None


def _with_vary(headers: Headers, name: bytes) -> Headers:
    """``headers`` whose Vary names ``name``: what a shared cache needs to keep both forms apart."""
    for i, (key, value) in enumerate(headers):
        if key == b"vary":
            if name.lower() in (v.strip().lower() for v in value.split(b",")):
                return headers
            return [*headers[:i], (b"vary", value + b", " + name), *headers[i + 1 :]]
    return [*headers, (b"vary", name)]


def make_entry(status: int, headers: Headers, body: bytes, gzipped: bytes | None = None) -> Entry:
    """The entry for a finished response; ``gzipped`` when the caller compressed ``body`` already."""
    kept = [(k, v) for k, v in headers if k not in (b"content-length", b"etag", b"content-encoding")]
    gzipped = gzipped if gzipped is not None else compress(body)
    if gzipped is not None:
        kept = _with_vary(kept, b"Accept-Encoding")  # the same URL answers in two encodings
    digest = hashlib.blake2b(body, digest_size=12).hexdigest().encode()
    etag, packed_etag = b'"' + digest + b'"', b'"' + digest + b'-gzip"'
    plain_kept, packed_kept = [*kept, (b"etag", etag)], [*kept, (b"etag", packed_etag)]
    packed_length = b"%d" % len(gzipped or b"")
    packed_headers = [*packed_kept, (b"content-encoding", b"gzip"), (b"content-length", packed_length)]
    return Entry(
        etag,
        status,
        body,
        gzipped,
        plain=Form.of(status, [*plain_kept, (b"content-length", b"%d" % len(body))], body),
        packed=None if gzipped is None else Form.of(status, packed_headers, gzipped),
        not_modified=Form.of(304, plain_kept, b""),
        packed_etag=packed_etag,
        packed_not_modified=Form.of(304, packed_kept, b""),
    )


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return b""


@lru_cache(maxsize=64)  # browsers send a handful of distinct values
def accepts_gzip(accept_encoding: bytes) -> bool:
    """Whether gzip has a q-value above 0 (RFC 9110 12.5.3): named (or x-gzip), else by ``*``."""
    weights: dict[bytes, float] = {}
    for part in accept_encoding.lower().split(b","):
        coding, _, params = part.partition(b";")
        q = 1.0
        for param in params.split(b";"):
            name, _, value = param.partition(b"=")
            if name.strip() == b"q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        weights.setdefault(coding.strip(), q)
    q = weights.get(b"gzip", weights.get(b"x-gzip", weights.get(b"*", 0.0)))
    return 0.0 < q <= 1.0


def none_match(if_none_match: bytes, etag: bytes) -> bool:
    """If-None-Match (RFC 9110 13.1.2): ``*``, or a list of tags compared weakly."""
    if if_none_match.strip() == b"*":
        return True
    return any(tag.strip().removeprefix(b"W/") == etag for tag in if_none_match.split(b","))


def representation(entry: Entry, if_none_match: bytes, accept_encoding: bytes) -> Form:
    """The form of ``entry`` for this client: a 304 when it has the form it would get, gzipped when
    it takes gzip."""
    packed = entry.packed is not None and bool(accept_encoding) and accepts_gzip(accept_encoding)
    etag = entry.packed_etag if packed else entry.etag  # the tag of the form this client gets
    if if_none_match and entry.status == 200 and none_match(if_none_match, etag):
        return entry.packed_not_modified if packed else entry.not_modified
    return entry.packed if packed else entry.plain  # type: ignore[return-value]


async def send_form(send: Send, form: Form, extra: Headers) -> None:
    await send({"type": "http.response.start", "status": form.status, "headers": [*form.headers, *extra]})
    await send({"type": "http.response.body", "body": form.body})


async def send_entry(scope: Scope, send: Send, entry: Entry, extra: Headers) -> None:
    """``entry`` as a 304 when the client has it, gzipped when the client takes it."""
    form = representation(entry, _header(scope, b"if-none-match"), _header(scope, b"accept-encoding"))
    await send_form(send, form, extra)


def bounded(value: bytes) -> Hashable:
    """A header value as a key part: itself when short, else a digest (a tuple, so never equal to
    a short value)."""
    return value if len(value) <= SHORT else ("blake2b", hashlib.blake2b(value, digest_size=16).digest())


def _key_size(key: tuple) -> int:
    return sum(len(part) if isinstance(part, bytes | str) else 32 for part in key)


class ResponseStore:
    """The bounded LRU behind the middleware (shared through ``app.state`` for tests).

    ``normalisers`` map a lower-case header name to what the app reads of its value: two requests
    whose values normalise alike must get the same answer from every cached path that varies on it.
    """

    def __init__(
        self,
        max_entries: int,
        max_bytes: int = 64 * 1024**2,
        normalisers: Mapping[bytes, Normaliser] | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.normalisers = dict(normalisers or {})
        self.entries: OrderedDict[tuple, Entry] = OrderedDict()
        self.bytes = 0  # what the entries and their keys hold
        # Per path, learnt from its responses: where each Vary header goes in the key, its reader,
        # and the part for a header absent or empty (which the pages read alike).
        self.vary: dict[str, Learnt] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def key(self, scope: Scope) -> tuple | None:
        learnt = self.vary.get(scope["path"])
        if learnt is None:
            return None
        positions = learnt[0]
        varied = [(at, v) for name, v in scope["headers"] if (at := positions.get(name)) is not None]
        return self.key_of(scope["path"], scope["query_string"], learnt, varied)

    @staticmethod
    def key_of(path: str, query: bytes, learnt: Learnt, varied: list[tuple[int, bytes]]) -> tuple:
        """The key from the values of the path's Vary headers, each at its place in the key, in
        request order: the first of repeated headers counts, as in Starlette."""
        _, readers, absent = learnt
        parts = list(absent)
        found = [False] * len(readers)
        for at, value in varied:
            if not found[at]:
                found[at] = True
                parts[at] = readers[at](value) if value else absent[at]
        return (path, query, *parts)

    def get(self, key: tuple) -> Entry | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, scope: Scope, headers: Headers, entry: Entry) -> None:
        vary = next((v for k, v in headers if k == b"vary"), b"")
        names = [n.strip().lower() for n in vary.split(b",")]
        names = list(dict.fromkeys(n for n in names if n and n not in NOT_KEYS))
        readers = tuple(self.normalisers.get(n, bounded) for n in names)
        positions = {n: at for at, n in enumerate(names)}
        self.vary[scope["path"]] = (positions, readers, tuple(read(b"") for read in readers))
        key = self.key(scope)
        assert key is not None
        if entry.size + _key_size(key) > self.max_bytes:
            return  # would push out everything else
        self.pop(key)
        self.entries[key] = entry
        self.bytes += entry.size + _key_size(key)
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            self.pop(next(iter(self.entries)))

    def pop(self, key: tuple) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size + _key_size(key)


class FastHits:
    """Hits answered before the web framework runs at all: its own middleware (error handling,
    telemetry, body limits, ours) cost about half of a hit's time. Only a plain hit is answered
    here; anything else, a head over the caps included, goes on to the whole stack, which refuses
    it or fills the store. The caps are the ones ``app.http.limits.HeadLimit`` applies; ``headers`` the
    security headers every answer carries. One pass over the request headers reads everything a
    hit needs, since at tens of thousands of hits a second that pass is much of the app's time."""

    def __init__(
        self,
        store: ResponseStore,
        paths: tuple[str, ...],
        prefixes: tuple[str, ...],
        max_url_bytes: int,
        max_header_bytes: int,
        headers: Headers,
    ) -> None:
        self.store = store
        self.paths = frozenset(paths)
        self.prefixes = prefixes
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes
        self.extra = [*HIT, *headers]
        self.extra_lines = header_lines(self.extra)
        self.wired = False  # set by the server's protocol (app.http.serving) once it writes hits itself

    def form(self, scope: Scope) -> Form | None:
        """The stored form for this request when it is a plain hit, else None."""
        method, path = scope["method"], scope["path"]
        if method not in ("GET", "HEAD") or not (path in self.paths or path.startswith(self.prefixes)):
            return None
        learnt = self.store.vary.get(path)
        if learnt is None or url_bytes(scope) > self.max_url_bytes:
            return None
        positions = learnt[0]
        size, if_none_match, accept_encoding = 0, b"", b""
        varied: list[tuple[int, bytes]] = []
        for name, value in scope["headers"]:  # the first of repeated headers counts, as in Starlette
            size += len(name) + len(value) + 4  # as on the wire, like app.http.limits.header_bytes
            at = positions.get(name)
            if at is not None:
                varied.append((at, value))
            elif name == b"accept-encoding":
                accept_encoding = accept_encoding or value
            elif name == b"if-none-match":
                if_none_match = if_none_match or value
        if size > self.max_header_bytes:
            return None  # read nothing of an oversized head: the stack refuses it
        entry = self.store.get(self.store.key_of(path, scope["query_string"], learnt, varied))
        return None if entry is None else representation(entry, if_none_match, accept_encoding)

    async def answer(self, scope: Scope, send: Send) -> bool:
        """Send the stored answer and say True, or send nothing and say False."""
        form = self.form(scope)
        if form is None:
            return False
        await send_form(without_body(send) if scope["method"] == "HEAD" else send, form, self.extra)
        return True

    def wire(self, scope: Scope) -> tuple[int, bytes, bytes] | None:
        """The stored answer for the server to write itself (``app.http.serving``): status, header lines
        and body (none for a HEAD); None where ``answer`` would not answer, or where a header would
        be refused by uvicorn, whose checks the lines have passed once, when the entry was made."""
        form = self.form(scope)
        if form is None or form.lines is None or self.extra_lines is None:
            return None
        return form.status, form.lines + self.extra_lines, b"" if scope["method"] == "HEAD" else form.body


class HttpCache:
    def __init__(
        self, app: ASGIApp, store: ResponseStore, paths: tuple[str, ...], prefixes: tuple[str, ...]
    ) -> None:
        self.app = app
        self.store = store
        self.paths = frozenset(paths)
        self.prefixes = prefixes
        # Misses being filled, by key: the same URL asked again meanwhile waits for that one answer
        # (a class of 300 refetching one page after a change is one render, not 300).
        self.filling: dict[Hashable, asyncio.Event] = {}

    def cacheable(self, scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and scope["method"] == "GET"  # HEAD too: HeadAsGet, outside, routes it as a GET
            and (scope["path"] in self.paths or scope["path"].startswith(self.prefixes))
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.cacheable(scope):
            await self.app(scope, receive, send)
            return
        key = self.store.key(scope)
        entry = self.store.get(key) if key is not None else None
        # Before the path's Vary is learnt, requests of one URL wait for the first: the answer it
        # stores is then looked up under each one's own key (another language is its own miss).
        flight = key if key is not None else (scope["path"], scope["query_string"])
        if entry is None and flight in self.filling:
            await self.filling[flight].wait()
            key = self.store.key(scope)
            entry = self.store.get(key) if key is not None else None
        if entry is not None:
            await send_entry(scope, send, entry, HIT)
            return
        if flight in self.filling:
            await self._fill(scope, receive, send)
            return
        self.filling[flight] = done = asyncio.Event()
        try:
            await self._fill(scope, receive, send)
        finally:
            del self.filling[flight]
            done.set()

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
