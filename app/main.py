"""The composition root: ``create_app(settings)`` puts the features' routes, the page kit and the
HTTP edge together. ``app = create_app()`` is the ASGI app. Nothing imports this module."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
import torch
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.architectures import config_store
from app.architectures import lab as architecture_lab
from app.architectures import memo as architecture_memo
from app.architectures import routes as architectures_routes
from app.classroom import routes as classroom_routes
from app.classroom.brokers import make_broker
from app.doctor import routes as doctor_routes
from app.doctor import runs
from app.doctor.caps import body_caps
from app.doctor.runs import Inspector
from app.http.cache import FastHits, HttpCache, ResponseStore
from app.http.head import HeadAsGet
from app.http.limits import BodyLimit, HeadLimit
from app.http.security import SecurityHeaders, security_headers
from app.http.serving import missing_hooks
from app.lab import presets as lab_presets
from app.lab import routes as lab_routes
from app.settings import Settings, get_settings
from app.web import errors, html
from app.web.assets import api_docs, static_assets
from app.web.offload import Offload

log = logging.getLogger("uvicorn.error")
# GET routes whose answer is a pure function of path, query and the headers they name in Vary.
CACHED_PATHS = ("/", "/api/lab", "/api/styles", "/api/presets", "/api/experiments", "/api/matrix", "/lessons")
# What a class's students see of a state (/follow?room=<code>&state=...) is one URL for the class.
CACHED_PATHS += ("/follow",)
# A lesson step, like an architecture's report, is a pure function of its URL too.
CACHED_PREFIXES = ("/api/experiments/", "/api/architectures", "/architectures", "/lessons/")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """What runs once the server starts, before it reports healthy: the doctor's start-up (stale
    uploads, its forkserver); the architectures' warm-up (transformers imported, every catalogue
    tree built), their tiny models registered as lab presets and the pasted configs kept for the lab
    as a source of more; then the lab warmed (CUDA contexts, the default page in each language, with
    those presets listed), each timed in the log. Last,
    everything made so far moved out of the garbage collector's sight: torch, transformers and the
    app are ~200k objects that live for ever, and a full collection that scans them stalls every
    request for ~80 ms (the p99 of cached answers), a few times a minute under load."""
    settings: Settings = app.state.settings
    runs.start(settings)
    took: dict[str, float] = {}
    if settings.architectures:
        started = time.perf_counter()
        await anyio.to_thread.run_sync(architecture_memo.warm_up)
        took["transformers and architectures"] = time.perf_counter() - started
        for preset in architecture_lab.presets():  # the tiny architectures open in the lab
            lab_presets.register(preset)
        # And pasted configs small enough, by the digest they are kept under (/?preset=config:...).
        lab_presets.add_source(config_store.PREFIX, architectures_routes.config_store(settings).preset)
    else:
        lab_presets.remove_source(config_store.PREFIX)
    # Warm before healthy (after the doctor's forkserver exists: it never holds a CUDA context).
    took |= await anyio.to_thread.run_sync(lab_routes.warm, settings)
    log.info("warm start: %s", ", ".join(f"{what} {seconds:.2f} s" for what, seconds in took.items()))
    await app.state.classroom.start()
    if not gc.get_freeze_count():  # once per process: an app made later (a test's) stays collectable
        gc.collect()
        gc.freeze()
    try:
        yield
    finally:
        await app.state.classroom.close()


class ExplorerApp(FastAPI):
    """FastAPI with the HTTP cache's plain hits answered in front of it (``app.http.cache.FastHits``):
    a repeated spec then costs about what the server itself does, not the framework's middleware."""

    hits: FastHits | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hits is not None and scope["type"] == "http" and await self.hits.answer(scope, send):
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    torch.set_num_threads(settings.torch_threads)
    on = settings.telemetry
    app = ExplorerApp(
        # FastAPI asks the OpenTelemetry providers on every request whether to trace it: about 10 us
        # of a cached answer's 15. Off unless an operator wants the spans and metrics.
        telemetry={"tracing": on, "metrics": on, "logs": on},
        docs_url=None,  # served below from vendored Swagger UI: no CDN
        redoc_url=None,
        title="Module Registration Explorer",
        version="1",
        summary="What nn.Module does with every tensor attached to it, read live from torch.",
        lifespan=lifespan,  # checkpoint inspections: stale temp files, their forkserver, shutdown
    )
    app.state.settings = settings
    # What each page reads of the headers it names in Vary: the HTTP cache keys it by that.
    readers = {**html.vary_readers(), **lab_routes.vary_readers(settings)}
    app.state.responses = ResponseStore(
        settings.response_cache_entries, settings.response_cache_bytes, normalisers=readers
    )
    errors.install(app, classroom_routes.ERROR_PAGES)
    for router in (
        lab_routes.api,
        lab_routes.pages,
        doctor_routes.api,
        doctor_routes.pages,
        architectures_routes.api,
        architectures_routes.pages,
        classroom_routes.pages,
    ):
        app.include_router(router)
    app.state.classroom = make_broker(settings)
    app.add_route("/docs", api_docs, include_in_schema=False)
    app.add_route("/static/{name:path}", static_assets(), methods=["GET"], include_in_schema=False)
    app.state.inspector = Inspector.of(settings)
    app.state.offload = Offload(settings.build_threads, settings.build_wait_seconds)
    larger = {**body_caps(settings), **architectures_routes.body_caps(settings)}
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, larger=larger)
    # A hit is answered before routing, validation and the body cap run.
    app.add_middleware(HttpCache, store=app.state.responses, paths=CACHED_PATHS, prefixes=CACHED_PREFIXES)
    app.add_middleware(HeadAsGet)
    app.add_middleware(
        HeadLimit, max_url_bytes=settings.max_url_bytes, max_header_bytes=settings.max_header_bytes
    )
    # Outermost: on every answer, a 500 included.
    app.add_middleware(SecurityHeaders, frame_ancestors=settings.frame_ancestors)
    # In front of it all, a plain hit of what HttpCache stored, checked against the same head caps
    # and carrying the same security headers as every other answer.
    app.hits = FastHits(
        app.state.responses,
        CACHED_PATHS,
        CACHED_PREFIXES,
        max_url_bytes=settings.max_url_bytes,
        max_header_bytes=settings.max_header_bytes,
        headers=security_headers(settings.frame_ancestors),
    )
    # /api/health says whether the server writes hits itself (python -m app with every uvicorn hook).
    app.state.fast_path = lambda: app.hits is not None and app.hits.wired and not missing_hooks()
    return app


app = create_app()
