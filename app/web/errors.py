"""How a refusal is shown: every domain error is a ``Refusal`` (``app.errors``), rendered here once, as
JSON for the API (in English, the contract's shape) and as a page in the page's language for a
browser. A feature may show its refusals on a page of its own (the join form for a class that
cannot be shown) by giving a renderer for its paths; the composition root wires them.

FastAPI's and Starlette's own refusals (a body it cannot parse, a query it cannot validate, text
with a lone surrogate) keep FastAPI's JSON shape, made safe to echo whatever the client sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import Refusal
from app.langs import Text
from app.web.html import View, render, view_of

# A page that shows a refusal of its feature's paths: (the view, the refusal) -> the answer.
ErrorPage = Callable[[View, Refusal], Response]
PAGE = "error.html"
MAX_ECHO_DEPTH = 8  # levels of a client's input an error echoes
NOT_UTF8 = {"loc": ["body"], "msg": "the body is not UTF-8 JSON", "type": "json_invalid"}
# Starlette's "error parsing the body" for UTF-8 text: JSON nested past the parser's depth, or a
# number of more digits than Python converts.
UNREADABLE = {
    "loc": ["body"],
    "msg": "the body is JSON this server does not read: nested too deep, or a number of too many digits",
    "type": "json_invalid",
}


def wants_json(request: Request) -> bool:
    """The API's paths, and any client that asks for JSON rather than a page."""
    if request.url.path.startswith("/api/"):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def printable(value: object, depth: int = 0) -> object:
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
        return {printable(k, depth + 1): printable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v, depth + 1) for v in value]
    return value


def json_error(detail: object, status: int) -> JSONResponse:
    """Every error body: its detail, whatever the client put in it, rendered without failing."""
    return JSONResponse({"detail": jsonable_encoder(printable(detail))}, status_code=status)


def error_page(view: View, exc: Refusal) -> HTMLResponse:
    """The page of a refusal no feature shows on a page of its own."""
    context = {"view": view, "error": exc.text(view.lang), "status": exc.status}
    return HTMLResponse(render(view.lang, PAGE, context), exc.status, headers={"Cache-Control": "no-store"})


def refusal_handler(pages: Sequence[tuple[str, ErrorPage]]) -> Callable[[Request, Exception], Response]:
    """The one handler of every Refusal: JSON for the API, else the page of the longest path prefix
    in ``pages`` that the request's path has, else the generic error page."""
    ordered = sorted(pages, key=lambda p: len(p[0]), reverse=True)

    def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        if wants_json(request):
            return json_error(exc.detail(), exc.status)
        view = view_of(request)
        path = request.url.path
        page = next((page for prefix, page in ordered if path.startswith(prefix)), error_page)
        return page(view, exc)

    return refused


async def _http_error(request: Request, exc: Exception) -> Response:
    # FastAPI answers a body its parser cannot read at all (not UTF-8, nested too deep) with a 400;
    # to a client that is malformed JSON like any other, which the contract answers with 422.
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        # Why the parser gave up is the exception it was raised from.
        error = NOT_UTF8 if isinstance(exc.__cause__, UnicodeDecodeError) else UNREADABLE
        return JSONResponse({"detail": [error]}, status_code=422)
    if exc.status_code in (404, 405) and not wants_json(request):
        # A browser at an address with no page (a typo, an old link) gets a page, in its language.
        path = request.url.path[:200]
        text = (
            Text("There is no page at {path}.", path=path)
            if exc.status_code == 404
            else Text("{path} takes no {method} request.", path=path, method=request.method)
        )
        response = error_page(view_of(request), Refusal(text, status=exc.status_code))
        response.headers.update(exc.headers or {})  # a 405 says what it allows
        return response
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
    return json_error([NOT_UTF8 if _not_utf8(e) else e for e in exc.errors()], 422)


def _surrogate(request: Request, exc: Exception) -> Response:
    # JSON can spell a lone surrogate ("\\ud800"); pydantic lets one through in a dict key (a
    # member name), and the first encode of it to UTF-8 fails, in our code or pydantic's. Only a
    # client's text holds one: Python decodes nothing else into a surrogate.
    if "surrogates not allowed" not in str(exc):
        raise exc
    error = {"loc": ["body"], "msg": "text with a lone surrogate (\\ud800-\\udfff) is not Unicode"}
    return json_error([{**error, "type": "string_unicode"}], 422)


def _invalid(request: Request, exc: Exception) -> JSONResponse:
    # A model built from query pairs inside a route: same 422 shape as FastAPI's own.
    assert isinstance(exc, ValidationError)
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    detail = [{**e, "loc": ["query", *e["loc"]]} for e in errors]
    return json_error(detail, 422)


def install(app: FastAPI, pages: Sequence[tuple[str, ErrorPage]] = ()) -> None:
    """Every error handler of the app: refusals, and FastAPI's and Starlette's own."""
    app.add_exception_handler(Refusal, refusal_handler(pages))
    app.add_exception_handler(ValidationError, _invalid)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(UnicodeEncodeError, _surrogate)
    app.add_exception_handler(PydanticSerializationError, _surrogate)
    app.add_exception_handler(StarletteHTTPException, _http_error)
