"""How ``python -m app`` runs uvicorn: its options from Settings, and the deadlines it lacks.

uvicorn (0.54, httptools) closes a connection idle after a response (``timeout_keep_alive``), but
nothing else: a connection that never sends a byte, or sends half a request head and stops, or
stops in the middle of a body, or never reads its answers, is kept open forever, and a few thousand
of them take every file descriptor. ``DeadlineProtocol`` adds the four deadlines, and a cap on the
bytes a request head may make it buffer (httptools has none; the app's own 431 comes only once the
head is whole). It also writes cache hits itself (``_write_hit``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import socket
import struct
from functools import cache, partial
from importlib.metadata import version
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from app.http.cache import FastHits
from app.http.security import security_headers
from app.settings import Settings

# The uvicorn the protocol was written against and byte-for-byte tested with (tests/http): the
# version pyproject.toml pins. Another one still runs it if every hook below is there.
TESTED_UVICORN = "0.54.0"
# What the protocol overrides or reads of uvicorn's private classes. A missing one would mean a
# deadline never armed or a hit written with a half-made cycle: then uvicorn's own protocol serves.
PROTOCOL_METHODS = (
    "connection_made", "connection_lost", "data_received", "on_message_begin", "on_headers_complete",
    "on_message_complete", "on_response_complete", "_start_asgi_task", "handle_websocket_upgrade",
    "pause_writing", "resume_writing", "send_400_response", "_unset_keepalive_if_required",
)  # fmt: skip
PROTOCOL_FIELDS = ("app", "loop", "flow", "pipeline", "cycle", "server_state", "access_log")
CYCLE_FIELDS = (
    "scope", "keep_alive", "response_started", "response_complete", "waiting_for_100_continue",
    "access_log", "access_logger", "message_event", "on_response", "disconnected",
)  # fmt: skip
log = logging.getLogger("uvicorn.error")


@cache
def missing_hooks() -> tuple[str, ...]:
    """What of uvicorn's protocol and request cycle the installed uvicorn lacks (empty: all there)."""
    missing = [
        f"HttpToolsProtocol.{m}"
        for m in PROTOCOL_METHODS
        if not callable(getattr(HttpToolsProtocol, m, None))
    ]
    for cls, fields in ((HttpToolsProtocol, PROTOCOL_FIELDS), (RequestResponseCycle, CYCLE_FIELDS)):
        try:
            made = inspect.getsource(cls.__init__)
        except (OSError, TypeError):
            made = ""
        missing += [
            f"{cls.__name__}.{f}" for f in fields if f"self.{f} " not in made and f"self.{f}:" not in made
        ]
    return tuple(missing)


class DeadlineProtocol(HttpToolsProtocol):
    """httptools' protocol with deadlines:

    - a request head must be complete ``head_timeout`` seconds after the connection opened or the
      previous response ended (uvicorn's keep-alive timeout still closes an idle one sooner);
    - a body that brings no byte for ``body_timeout`` seconds closes the connection (while uvicorn
      itself has paused reading, the wait is the app's, not the client's, and does not count);
    - a head of more than ``max_head_bytes`` is answered 431 and the connection closed;
    - a client that reads nothing of its answers for ``send_timeout`` seconds is dropped.

    A head or body that runs out of time is answered 408 before the close (an idle connection
    between requests is just closed). What it answers itself (408, 431, and uvicorn's 400 for a
    request httptools cannot parse) is JSON with the security headers, like every answer of the app.
    """

    def __init__(
        self,
        *args: Any,
        head_timeout: float,
        body_timeout: float,
        max_head_bytes: int,
        send_timeout: float = 30.0,
        frame_ancestors: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.security = security_headers(frame_ancestors)  # as on every answer of the app
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.max_head_bytes = max_head_bytes
        self.deadline: asyncio.TimerHandle | None = None  # fires at or before deadline_at
        self.deadline_at: float | None = None  # loop time when the armed deadline passes
        self.send_timeout = send_timeout
        self.stall: asyncio.TimerHandle | None = None  # armed while the client reads nothing
        self.running: RequestResponseCycle | None = None  # the request the app was last given
        self.hits = hits_of(self.app)
        if self.hits is not None:
            self.hits.wired = True  # /api/health: the hits are written here, not in the app
        self.queued = False  # while a response's end starts the request that waited behind it
        self.server_headers: tuple[list, bytes] = ([], b"")  # uvicorn's date and server, as lines
        self.in_head = False  # between a request's first byte and the end of its head
        self.in_body = False  # between the end of a head and the end of its body
        self.head_bytes = 0

    def _arm(self, seconds: float) -> None:
        # Every request arms and disarms twice; a timer per arming cost more than the rest of a
        # cached answer. So the deadline is a number, and one timer per connection fires at or
        # before it: moved only when a deadline comes sooner than it, rescheduled when it finds
        # the deadline moved later.
        at = self.loop.time() + seconds
        self.deadline_at = at
        if self.deadline is None or self.deadline.when() > at:
            if self.deadline is not None:
                self.deadline.cancel()
            self.deadline = self.loop.call_at(at, self._due)

    def _disarm(self) -> None:
        self.deadline_at = None  # the timer, when it fires, finds nothing due

    def _due(self) -> None:
        self.deadline = None
        if self.deadline_at is None:
            return
        if self.loop.time() < self.deadline_at:
            self.deadline = self.loop.call_at(self.deadline_at, self._due)
            return
        self.deadline_at = None
        self._expired()

    def _expired(self) -> None:
        if self.in_body and self.flow.read_paused:
            self._arm(self.body_timeout)  # the app has not read what came: not the client's delay
        elif self.transport.is_closing():
            pass
        elif self.in_head:
            self._answer_and_close(408, f"the request head was not complete within {self.head_timeout:g} s")
        elif self.in_body and not (self.cycle is not None and self.cycle.response_started):
            self._answer_and_close(408, f"the request body sent nothing for {self.body_timeout:g} s")
        else:
            self.transport.close()  # idle between requests: nothing to answer

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.running is not None and not self.running.response_complete:
            # uvicorn marks only the newest request's cycle: one running while later ones wait in
            # the pipeline would wake from its wait to write and hit the closed transport.
            self.running.disconnected = True
        self._disarm()
        for timer in (self.deadline, self.stall):
            if timer is not None:
                timer.cancel()
        self.deadline = self.stall = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.in_body:
            self._arm(self.body_timeout)
        super().data_received(data)
        if self.in_head and not self.transport.is_closing():
            if self.head_bytes < 0:
                # The head began in this read, after the requests it completed: it is at most
                # what follows the last blank line (more when a body came before it).
                end = data.rfind(b"\r\n\r\n")
                self.head_bytes = len(data) - (end + 4 if end >= 0 else 0)
            else:
                self.head_bytes += len(data)
            if self.head_bytes > self.max_head_bytes:
                self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.head_bytes = True, -1  # -1: begun in the read being parsed
        # A request has begun: the connection is not idle. uvicorn disarms its keep-alive timer only
        # when a read arrives, but a hit written while that read is parsed has armed it again, and
        # it would close the connection under the next request of the same read (a slow answer,
        # an event stream) after keep_alive_seconds.
        self._unset_keepalive_if_required()

    def on_headers_complete(self) -> None:
        self.in_head, self.in_body = False, True
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self.transport.is_closing():
            # A response that ended the connection (HTTP/1.0, Connection: close) was written at
            # once, and the parser goes on through what else the same read brought: nobody can
            # receive an answer to it, so it is not run (uvicorn drops a queued request alike).
            return
        # A cache hit is written here, without a task, a scope's journey or uvicorn's per-header
        # checks. Not for a request that waited behind another (its start comes from the previous
        # response's end: answering at once would recurse along the queue), nor while the client
        # does not read (the ASGI path waits for it), nor past the concurrency limit (then ``app``
        # is uvicorn's 503), nor for a forwarded request when there is an access log (its line
        # names the client that uvicorn's proxy-headers middleware, skipped here, would find).
        if not self.queued and app is self.app and self.hits is not None and not self.flow.write_paused:
            hit = None if self.access_log and forwarded(cycle.scope) else self.hits.wire(cycle.scope)
            if hit is not None:
                self._write_hit(cycle, *hit)
                return
        self.running = cycle
        super()._start_asgi_task(cycle, app)

    def _write_hit(self, cycle: RequestResponseCycle, status: int, lines: bytes, body: bytes) -> None:
        """What ``RequestResponseCycle.send`` does with a start and a final body, in one write."""
        cycle.response_started = cycle.response_complete = True
        cycle.waiting_for_100_continue = False
        if cycle.access_log:
            scope = cycle.scope
            cycle.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),
                scope["method"],
                get_path_with_query_string(scope),
                scope["http_version"],
                status,
            )
        defaults = self.server_state.default_headers  # replaced, not changed, once a second
        if defaults is not self.server_headers[0]:
            self.server_headers = (defaults, b"".join(n + b": " + v + b"\r\n" for n, v in defaults))
        close = b"" if cycle.keep_alive else b"connection: close\r\n"
        head = (STATUS_LINE[status], self.server_headers[1], lines, close, b"\r\n")
        self.transport.write(b"".join((*head, body)))
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        cycle.on_response()

    def on_message_complete(self) -> None:
        if self.in_body:
            self.in_body = False
            if self.cycle is not None and self.cycle.response_complete:
                self._arm(self.head_timeout)  # answered early (a 413): the next head's turn
            else:
                self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the connection is the WebSocket protocol's from here
        self.in_head = self.in_body = False
        super().handle_websocket_upgrade()

    def on_response_complete(self) -> None:
        waiting = not self.pipeline  # otherwise the next request's head is already here
        self.queued = True
        super().on_response_complete()
        self.queued = False
        if waiting and not self.in_body and not self.transport.is_closing():
            self._arm(self.head_timeout)

    def pause_writing(self) -> None:
        # The client reads none of what was sent for ``send_timeout``: it is dropped (it reads
        # nothing, so it gets no answer, and closing would wait to send what it does not read).
        # Otherwise a client that sends requests and never reads holds its buffers for ever.
        super().pause_writing()
        if self.stall is None:
            self.stall = self.loop.call_later(self.send_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None

    def _stalled(self) -> None:
        # Closing is no excuse: once an answer ends, uvicorn's keep-alive timer closes the transport,
        # and a close waits for ever to flush what the client does not read.
        self.stall = None
        if self.flow.write_paused:
            self._disarm()
            sock = self.transport.get_extra_info("socket")
            if sock is not None:  # a reset, so the kernel drops what it still holds for the client too
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()

    def _refuse_head(self) -> None:
        self._disarm()
        self._answer_and_close(431, f"request head over the limit of {self.max_head_bytes} bytes")

    def send_400_response(self, msg: str) -> None:
        # httptools could not parse the request: uvicorn's own 400, with our headers and JSON.
        self._disarm()
        self._answer_and_close(400, msg)

    def _answer_and_close(self, status: int, message: str) -> None:
        """A JSON error written straight to the socket (no request reached the app), then close."""
        body = json.dumps({"detail": message}).encode()
        headers = [*self.security]
        headers += [(b"content-type", b"application/json"), (b"connection", b"close")]
        head = STATUS_LINE[status] + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(head + b"content-length: %d\r\n\r\n" % len(body) + body)
        self.transport.close()


def forwarded(scope: dict) -> bool:
    return any(name == b"x-forwarded-for" for name, _ in scope["headers"])


def hits_of(app: Any) -> FastHits | None:
    """The app's cache hits, under uvicorn's wrappers (its proxy-headers middleware has ``.app``)."""
    for _ in range(8):
        hits = getattr(app, "hits", None)
        if isinstance(hits, FastHits):
            return hits
        app = getattr(app, "app", None)
    return None


def serving_protocol() -> str:
    """One line for the start-up log: whether the deadlines and the written hits are on."""
    installed = version("uvicorn")
    if missing_hooks():
        return (
            f"serving: uvicorn {installed} lacks {', '.join(missing_hooks())}: connection deadlines and "
            f"written cache hits are OFF, uvicorn's own protocol serves (tested with {TESTED_UVICORN})"
        )
    tested = "" if installed == TESTED_UVICORN else f"; not the tested {TESTED_UVICORN}, every hook present"
    return f"serving: connection deadlines and written cache hits on (uvicorn {installed}{tested})"


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments for ``uvicorn.run``: what ``make run`` and the Dockerfile serve with;
    uvicorn's own protocol, said in the log, where the installed uvicorn lacks a hook ours needs."""
    line = serving_protocol()
    (log.warning if missing_hooks() else log.info)(line)
    protocol = partial(
        DeadlineProtocol,
        head_timeout=settings.head_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        max_head_bytes=settings.max_head_buffer_bytes,
        send_timeout=settings.send_timeout_seconds,
        frame_ancestors=settings.frame_ancestors,
    )
    return {
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "http": "httptools" if missing_hooks() else protocol,
        "timeout_keep_alive": settings.keep_alive_seconds,
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,  # event streams never end alone
    }
