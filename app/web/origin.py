"""Where a state-changing request comes from: a browser names the page that sent it (``Origin``,
and ``Sec-Fetch-Site``), so a form on another site, or on another port of this host, cannot drive
what a visitor's cookies allow. A client that names no origin (curl, a program) is not a browser
acting for someone else, and passes.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request

from app.errors import Refusal
from app.langs import Text

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class CrossOrigin(Refusal):
    status = 403


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an absolute URL or a ``scheme://host[:port]`` origin; None if it is none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or port is None:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


def own_origin(request: Request) -> tuple[str, str, int] | None:
    """The origin the browser was at when it loaded this site: its scheme and the Host it asked."""
    return origin_of(f"{request.scope.get('scheme', 'http')}://{request.headers.get('host', '')}")


def check_origin(request: Request, *also: str) -> None:
    """Refuse (403) a request a browser sent from a page of another origin than this site's own or
    one of ``also`` (e.g. the address students are given).

    ``Sec-Fetch-Site`` decides first: every current browser sends it, whatever the referrer policy
    (this site's ``no-referrer`` makes Chrome send ``Origin: null`` even from its own pages). Without
    it, ``Origin`` must name this site; a request with neither is no browser's."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site in ("same-origin", "none"):
        return
    allowed = {own_origin(request), *(origin_of(url) for url in also if url)} - {None}
    if origin is not None and origin != "null" and origin_of(origin) in allowed:
        return
    if site is None and origin is None:
        return
    raise _refused((origin if origin not in (None, "null") else site or origin or "")[:100])


def _refused(source: str) -> CrossOrigin:
    return CrossOrigin(
        Text(
            "this change was sent from another site ({source}); open this server's own page and try there",
            source=source,
        )
    )
