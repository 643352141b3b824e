"""Torch work off the event loop. Building a report of a never-seen spec takes 1-300 ms of CPU (a
16-member custom module); on the loop it would stall every other request, cached ones included.
A route runs it here instead: in a thread, at most ``threads`` at a time, a request waiting for
one at most ``wait`` seconds before it is told to come back (503), so a flood of cold pages can
neither stall the loop nor queue without end."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

import anyio
import anyio.to_thread

from app.errors import Refusal
from app.langs import Text

T = TypeVar("T")


class Offload:
    """The app's workers for cold torch work (one per app: its limiter belongs to the app's loop)."""

    def __init__(self, threads: int, wait: float) -> None:
        self.threads, self.wait = threads, wait
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # made in the loop that first uses it
            self._limiter = anyio.CapacityLimiter(self.threads)
        return self._limiter

    async def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        limiter = self.limiter
        with anyio.move_on_after(self.wait) as waited:
            await limiter.acquire()
        if waited.cancelled_caught:
            raise Refusal(
                Text(
                    "the server is busy building {n} labs at once; try again in a moment (MRE_BUILD_THREADS)",
                    n=self.threads,
                ),
                status=503,
            )
        try:
            return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), abandon_on_cancel=False)
        finally:
            limiter.release()
