"""The checkpoint page's model: the form's choices (a lab preset or an architecture to load into),
what the inspector found, and the context its template reads."""

from __future__ import annotations

from fastapi.responses import Response

from app.architectures.catalogue import ARCHITECTURES
from app.doctor.targets import architecture_target, listed
from app.lab.presets import PRESETS
from app.lab.query import Bounds, read_page
from app.lab.spec import LabSpec
from app.lab.styles import ALL_STYLES
from app.langs import LANGS
from app.settings import Settings
from app.web.html import View
from app.web.html import respond as page_response

PAGE = "doctor/checkpoints.html"
FORM_FIELDS = ("lang", "present", "state_dict")  # beside the spec (preset, device, style.*)


def architecture_of(pairs: list[tuple[str, str]], settings: Settings) -> str | None:
    """The architecture chosen in the same field as a preset. The tiny architectures are lab presets
    too (registered at start-up): the doctor loads into the architecture, as ``mre --into`` does."""
    chosen = dict(pairs).get("preset", "")
    if chosen not in ARCHITECTURES:
        return None
    return architecture_target(chosen, settings.architectures)


def spec_of(pairs: list[tuple[str, str]], bounds: Bounds) -> LabSpec | None:
    """The module to load into, read as the lab page reads its URL; none when no preset is chosen."""
    pairs = [(k, v) for k, v in pairs if k not in FORM_FIELDS]
    return listed(read_page(pairs, bounds, "cpu").spec if dict(pairs).get("preset") else None)


def context(view: View, **extra: object) -> dict:
    return {
        "view": view,
        "langs": LANGS,
        "presets": {k: p for k, p in PRESETS.items() if p.make is None},  # real models: architectures
        "styles": ALL_STYLES,
        "spec": None,
        "architecture": None,  # the architecture chosen instead of a preset
        "architectures": {},  # those the form offers: none where they are off
        "state_dict": "",
        "report": None,
        "comparison": None,
        "tensors": 0,
        "hidden": {},
        "filename": "",
        "error": None,
        **extra,
    }


def respond(view: View, status: int = 200, **extra: object) -> Response:
    return page_response(view, PAGE, context(view, **extra), ("result",), status)


def offered(settings: Settings) -> dict:
    return ARCHITECTURES if settings.architectures else {}
