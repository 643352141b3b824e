"""HTML for every page: templates per language, how a page is viewed, and the htmx rule.

The rule, in one place: an htmx request gets the named blocks of its page and a 2xx (htmx swaps
only those; a refusal is said inside the blocks), a full page gets the whole page and its real
status; both send ``Vary`` naming every header the answer depends on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from app.langs import LANGS
from app.resources import resource_dir
from app.web import i18n
from app.web.assets import static_assets

TEMPLATES = resource_dir("templates")
VARY = "HX-Request, HX-History-Restore-Request, HX-Current-URL, Accept-Language, Accept-Encoding"


def breakable(text: object) -> Markup:
    """``text`` escaped, with line-break chances after dots and underscores: a long torch name
    (``bn.num_batches_tracked``) wraps at its parts instead of running out of its column."""
    return Markup(re.sub(r"([._])", r"\1<wbr>", str(escape(text))))


@cache
def environment(lang: str) -> Environment:
    """One Jinja environment per language: templates compiled once, translations fixed."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.translations(lang), newstyle=True)  # type: ignore[attr-defined]
    env.globals["asset"] = static_assets().url  # content-hashed URLs, cached for a year
    env.filters["breakable"] = breakable
    # Globals rather than a template's own macros: a block rendered alone for htmx sees them too.
    macros = env.get_template("macros.html").module
    env.globals.update({name: getattr(macros, name) for name in dir(macros) if not name.startswith("_")})
    return env


def render(lang: str, page: str, context: dict, blocks: tuple[str, ...] | None = None) -> bytes:
    """The whole page, or only ``blocks`` of it (htmx fragments), in ``lang``."""
    template = environment(lang).get_template(page)
    if blocks is None:
        return compact(template.render(context)).encode()
    ctx = template.new_context(context)
    return compact("".join("".join(template.blocks[b](ctx)) for b in blocks)).encode()


# Indentation, or a run where whitespace is content (the code a reader copies keeps its own).
_INDENT = re.compile(r"<(pre|textarea)\b.*?</\1>|\n[ \t]+", re.DOTALL | re.IGNORECASE)


def compact(html: str) -> str:
    """``html`` without the templates' indentation (about an eighth of a fragment), which the
    browser would parse into text nodes and lay out on every swap. A line break stays where the
    indentation was, so no text runs together; ``<pre>`` and ``<textarea>`` keep theirs."""
    return _INDENT.sub(lambda m: m.group(0) if m.group(1) else "\n", html)


@dataclass(frozen=True)
class View:
    """How a page is shown, apart from what it shows: language, projector mode, embedding."""

    lang: str
    lang_chosen: bool  # given in the URL (kept in links), rather than taken from Accept-Language
    present: bool
    htmx: bool  # an htmx swap rather than a full page load
    embed: bool = False  # the lab alone, for an iframe in slides or a course page


# Remembered for the few values browsers send; 256 values under the 16 KiB header cap are 4 MiB at most.
@lru_cache(maxsize=256)
def _language(value: bytes) -> str:
    return i18n.from_accept_language(value.decode("latin-1"))


def _is_true(value: bytes) -> bool:
    return value == b"true"


def vary_readers() -> dict[bytes, Callable[[bytes], Hashable]]:
    """What every page reads of the headers in ``VARY`` (the HTTP cache keys answers by it, not by
    the raw bytes): the language chosen, whether an htmx flag is "true". HX-Current-URL is read by
    the lab (``app.lab.routes.vary_readers``)."""
    return {
        b"accept-language": _language,
        b"hx-request": _is_true,
        b"hx-history-restore-request": _is_true,
    }


def view_of(request: Request) -> View:
    """How the page of ``request`` is shown: its language, projector mode, htmx or not, embedding."""
    query, headers = request.query_params, request.headers
    return View(
        lang=i18n.choose(query.get("lang"), headers.get("accept-language")),
        lang_chosen=query.get("lang") in LANGS,
        present=query.get("present") == "1",
        # A history restore after a cache miss wants the full page, not a fragment.
        htmx=headers.get("hx-request") == "true" and headers.get("hx-history-restore-request") != "true",
        embed=query.get("embed") == "1",
    )


async def get_view(request: Request) -> View:
    return view_of(request)


ViewDep = Annotated[View, Depends(get_view)]


def respond(
    view: View,
    page: str,
    context: dict,
    blocks: tuple[str, ...],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The page, or for htmx its ``blocks`` with a 200; ``Vary`` on both."""
    if view.htmx:
        body, status = render(view.lang, page, context, blocks), 200
    else:
        body = render(view.lang, page, context)
    return HTMLResponse(body, status, headers={**(headers or {}), "Vary": VARY})
