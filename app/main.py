"""create_app(): routers, error handlers, limits. ``app = create_app()`` is the ASGI app."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache

import torch
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from app.architectures import routes as architectures_routes
from app.architectures.catalogue import ArchitectureError
from app.classroom import routes as classroom_routes
from app.classroom.brokers import make_broker
from app.classroom.rooms import ClassError
from app.doctor import routes as doctor_routes
from app.doctor import runs
from app.doctor.caps import InProgress, Slots, body_caps
from app.doctor.report import CheckpointError
from app.doctor.uploads import UploadError
from app.http.cache import FastHits, HttpCache, ResponseStore
from app.http.head import HeadAsGet
from app.http.limits import BodyLimit, HeadLimit
from app.http.security import SecurityHeaders, security_headers
from app.lab import page as lab_page
from app.lab import routes as lab_routes
from app.lab.spec import SpecError, UnknownPreset
from app.settings import Settings, get_settings
from app.web import i18n
from app.web.assets import static_assets

SWAGGER = "swagger-ui-5.35.0"  # vendored from npm swagger-ui-dist, like htmx
# GET routes whose answer is a pure function of path, query and the headers they name in Vary.
CACHED_PATHS = ("/", "/api/lab", "/api/styles", "/api/presets", "/api/experiments", "/api/matrix", "/lessons")
# A lesson step, like an architecture's report, is a pure function of its URL too.
CACHED_PREFIXES = ("/api/experiments/", "/api/architectures", "/architectures", "/lessons/")


# Remembered for the few values browsers send; 256 values under the 16 KiB header cap are 4 MiB at most.
@lru_cache(maxsize=256)
def _language(value: bytes) -> str:
    return i18n.from_accept_language(value.decode("latin-1"))


def _is_true(value: bytes) -> bool:
    return value == b"true"


def keyed_by(settings: Settings) -> dict:
    """What the pages read of each header they name in Vary, which the HTTP cache keys them by: the
    language chosen, the spec of the page an htmx swap came from (read as the page reads it, under
    this app's settings), whether a flag is "true"."""

    @lru_cache(maxsize=256)
    def previous(value: bytes) -> str | None:
        spec = lab_page.previous_spec(value.decode("latin-1"), settings.custom_max_elements)
        return spec.query() if spec else None

    return {
        b"accept-language": _language,
        b"hx-current-url": previous,
        b"hx-request": _is_true,
        b"hx-history-restore-request": _is_true,
    }


def _printable(value: object, depth: int = 0) -> object:
    """``value`` as JSON can carry it: a lone surrogate escaped, bytes decoded, NaN and infinities
    as text, nesting past a few levels cut. (JSON has no NaN, UTF-8 no surrogates, and an input
    nested a thousand deep would exhaust the stack: an error echoing them must not fail.)"""
    if depth > MAX_ECHO_DEPTH:
        return "…"
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"  # str() of a huge int is refused
    if isinstance(value, dict):
        return {_printable(k, depth + 1): _printable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v, depth + 1) for v in value]
    return value


def _error(detail: object, status: int) -> JSONResponse:
    """Every error body: its detail, whatever the client put in it, rendered without failing."""
    return JSONResponse({"detail": jsonable_encoder(_printable(detail))}, status_code=status)


def _unknown_preset(request: Request, exc: Exception) -> JSONResponse:
    return _error(str(exc), 404)


def _spec_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecError)
    error = {"loc": list(exc.loc), "msg": exc.message, "type": "value_error"}
    return _error([error], 422)


def _refused(request: Request, exc: Exception) -> JSONResponse:
    # An upload or checkpoint the inspector cannot take: the status and message it chose.
    assert isinstance(exc, UploadError | CheckpointError | ArchitectureError)
    return _error(exc.message, exc.status)


NOT_UTF8 = {"loc": ["body"], "msg": "the body is not UTF-8 JSON", "type": "json_invalid"}
# Starlette's "error parsing the body" for UTF-8 text: JSON nested past the parser's depth, or a
# number of more digits than Python converts.
UNREADABLE = {
    "loc": ["body"],
    "msg": "the body is JSON this server does not read: nested too deep, or a number of too many digits",
    "type": "json_invalid",
}
MAX_ECHO_DEPTH = 8  # levels of a client's input an error echoes


async def _http_error(request: Request, exc: Exception) -> Response:
    # FastAPI answers a body its parser cannot read at all (not UTF-8, nested too deep) with a 400;
    # to a client that is malformed JSON like any other, which the contract answers with 422.
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        # Why the parser gave up is the exception it was raised from.
        error = NOT_UTF8 if isinstance(exc.__cause__, UnicodeDecodeError) else UNREADABLE
        return JSONResponse({"detail": [error]}, status_code=422)
    return await http_exception_handler(request, exc)


def _not_utf8(error: dict) -> bool:
    # A body sent as text/plain or with no type reaches validation as raw bytes.
    value = error.get("input")
    if not isinstance(value, bytes):
        return False
    try:
        value.decode()
    except UnicodeDecodeError:
        return True
    return False


def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own 422, with inputs that JSON cannot carry made printable instead of a 500.
    assert isinstance(exc, RequestValidationError)
    return _error([NOT_UTF8 if _not_utf8(e) else e for e in exc.errors()], 422)


def _surrogate(request: Request, exc: Exception) -> Response:
    # JSON can spell a lone surrogate ("\\ud800"); pydantic lets one through in a dict key (a
    # member name), and the first encode of it to UTF-8 fails, in our code or pydantic's. Only a
    # client's text holds one: Python decodes nothing else into a surrogate.
    if "surrogates not allowed" not in str(exc):
        raise exc
    error = {"loc": ["body"], "msg": "text with a lone surrogate (\\ud800-\\udfff) is not Unicode"}
    return _error([{**error, "type": "string_unicode"}], 422)


def _invalid(request: Request, exc: Exception) -> JSONResponse:
    # A LabSpec built from query pairs inside a dependency: same 422 shape as FastAPI's own.
    assert isinstance(exc, ValidationError)
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    detail = [{**e, "loc": ["query", *e["loc"]]} for e in errors]
    return _error(detail, 422)


def _class_error(request: Request, exc: Exception) -> Response:
    # A class refused (no such room, not the teacher, a cap, Redis down): a page naming why.
    assert isinstance(exc, ClassError)
    return classroom_routes.error_page(request, exc)


async def _docs(request: Request) -> HTMLResponse:
    assets = static_assets()
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Module Registration Explorer - API",
        swagger_js_url=assets.url(f"{SWAGGER}/swagger-ui-bundle.js"),
        swagger_css_url=assets.url(f"{SWAGGER}/swagger-ui.css"),
        swagger_favicon_url=assets.url("favicon.svg"),
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """What runs once the server starts: the doctor's start-up (stale uploads, its forkserver)."""
    runs.start(app.state.settings)
    yield


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
    app.state.responses = ResponseStore(
        settings.response_cache_entries, settings.response_cache_bytes, normalisers=keyed_by(settings)
    )
    app.add_exception_handler(UnknownPreset, _unknown_preset)
    app.add_exception_handler(SpecError, _spec_error)
    app.add_exception_handler(ValidationError, _invalid)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(UnicodeEncodeError, _surrogate)
    app.add_exception_handler(PydanticSerializationError, _surrogate)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(UploadError, _refused)
    app.add_exception_handler(CheckpointError, _refused)
    app.add_exception_handler(ArchitectureError, _refused)
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
    app.add_exception_handler(ClassError, _class_error)
    app.add_route("/docs", _docs, include_in_schema=False)
    app.add_route("/static/{name:path}", static_assets(), methods=["GET"], include_in_schema=False)
    app.state.checkpoint_slots = Slots(settings.checkpoint_slots, settings.checkpoint_wait_seconds)
    app.state.checkpoint_uploads = InProgress(settings.checkpoint_uploads)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, larger=body_caps(settings))
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
    return app


app = create_app()
