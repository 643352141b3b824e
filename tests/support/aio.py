"""Coroutines run from a test, whatever loop the thread already has (Playwright's sync API keeps
one running in the main thread once a browser test ran)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor


def run(coroutine: Coroutine) -> object:
    """``asyncio.run`` in a thread of its own: Playwright's sync API may hold this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
