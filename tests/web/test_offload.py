"""Cold torch work off the event loop: in a thread, at most n at a time, a request waiting too long
told to come back; meanwhile every other request, a cached page first, is answered."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest
from fastapi.testclient import TestClient

from app.errors import Refusal
from app.lab import report
from app.main import create_app
from app.settings import Settings
from app.web.offload import Offload
from tests.support.aio import run

PATIENCE = 60  # seconds a test waits for an event that must come: generous, for a loaded machine


def test_the_work_runs_in_a_thread_of_its_own() -> None:
    async def scenario() -> None:
        loop_thread = threading.get_ident()
        assert await Offload(2, 1.0).run(threading.get_ident) != loop_thread

    run(scenario())


def test_at_most_n_at_a_time_and_the_next_told_to_come_back() -> None:
    async def scenario() -> None:
        offload, release, started = Offload(2, 0.3), threading.Event(), threading.Semaphore(0)

        def busy() -> None:
            started.release()
            release.wait(PATIENCE)

        async with anyio.create_task_group() as group:
            group.start_soon(offload.run, busy)
            group.start_soon(offload.run, busy)
            for _ in range(2):
                await anyio.to_thread.run_sync(started.acquire)
            with pytest.raises(Refusal) as refused:
                await offload.run(busy)  # the third waits its 0.3 s, then 503
            assert refused.value.status == 503 and "MRE_BUILD_THREADS" in refused.value.message
            release.set()
        assert await offload.run(lambda: 42) == 42  # the threads came back

    run(scenario())


def test_a_cached_page_does_not_wait_behind_a_cold_one(monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()
    real = report.inspect

    def slow(spec):  # a cold build that stays in torch until the test lets it go
        if spec.preset == "custom" and "slow" in spec.styles:
            entered.set()
            release.wait(PATIENCE)
        return real(spec)

    monkeypatch.setattr("app.lab.memo.inspect", slow)
    with TestClient(create_app(Settings())) as client, ThreadPoolExecutor(1) as pool:
        assert client.get("/?preset=testmodel").status_code == 200  # cached from here on
        cold = pool.submit(client.get, "/?preset=custom&style.slow=buffer")
        assert entered.wait(PATIENCE)
        try:
            assert client.get("/?preset=testmodel").status_code == 200  # answered while the cold one waits
            assert client.get("/api/health").status_code == 200
            assert not cold.done()
        finally:
            release.set()
        assert cold.result(PATIENCE).status_code == 200
