"""LabSpec: the whole state of a lab. It is the JSON request, the page URL and the cache key.

Validation has two layers: pydantic checks the form (types, sizes), ``resolve`` checks it against
the presets, styles and devices that exist and fills in every member's default style, which
gives each lab exactly one canonical spec.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from math import prod
from typing import Annotated
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import Refusal
from app.lab.presets import PRESETS, Member, find, lookup
from app.lab.styles import STYLES
from app.langs import EN, Text, rendered

STYLE_PREFIX = "style."
SHAPE_PREFIX = "shape."
# Caps keep a hostile request cheap to reject; real presets are far below them.
MAX_NAME = 64
MAX_MEMBERS = 64
# The custom module: a handful of small tensors is all a lesson needs.
MAX_CUSTOM_MEMBERS = 16
MAX_DIMS = 4
DEFAULT_SHAPE = (3,)
# ASCII digits only (str.isdigit also takes "²", which int() refuses), and few enough of them that
# int() never meets its digit limit: any size of 10 digits is far over every element cap anyway.
SHAPE_TEXT = re.compile(r"[0-9]{1,9}(?:x[0-9]{1,9})*")
# A size as JSON gives it: as the query's (at most 9 digits), so no message ever prints a huge product.
Size = Annotated[int, Field(ge=0, le=999_999_999)]


class SpecError(Refusal):
    """A spec that names something which does not exist; ``loc`` is the offending field."""

    def __init__(self, loc: Sequence[str], text: Text) -> None:
        super().__init__(text, loc=loc)


class UnknownPreset(SpecError):
    status = 404


class LabSpec(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"preset": "testmodel", "device": "meta", "styles": {"buffer1": "buffer"}}]
        },
    )

    preset: str = Field(max_length=MAX_NAME, description="Preset id, see GET /api/presets.")
    device: str = Field(
        "cpu", max_length=MAX_NAME, description="Device to move the module to, see GET /api/devices."
    )
    styles: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_MEMBERS,
        description="Registration style per member; members left out keep the preset's default.",
    )
    shapes: dict[str, list[Size]] = Field(
        default_factory=dict,
        max_length=MAX_MEMBERS,
        description="custom preset only: the shape of each member's tensor (default [3]).",
    )

    @field_validator("styles", "shapes")
    @classmethod
    def _unicode(cls, value: dict) -> dict:
        # JSON can carry a lone surrogate ("\ud800"), which no URL, cache key or script can hold;
        # pydantic refuses one in a str field, not in a dict's keys.
        for text in [*value, *value.values()]:
            if isinstance(text, str) and not text.encode(errors="replace").decode() == text:
                raise ValueError(f"{text!r} is not Unicode text: it holds a lone surrogate")
        return value

    def query(self) -> str:
        """Canonical query string (``preset=..&device=..&style.NAME=..``) in member order."""
        pairs = [("preset", self.preset), ("device", self.device)]
        pairs += [(STYLE_PREFIX + name, style) for name, style in self.styles.items()]
        pairs += [(SHAPE_PREFIX + name, "x".join(map(str, dims))) for name, dims in self.shapes.items()]
        return urlencode(pairs)


def _spec(where: str, **fields: object) -> LabSpec:
    """A LabSpec from user data: pydantic's refusal becomes the one spec error, at ``where``."""
    try:
        return LabSpec(**fields)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = (where, *map(str, first["loc"]))
        where, limit = ".".join(loc), first.get("ctx", {}).get("max_length")
        if first["type"] == "string_too_long" and limit is not None:
            ours = Text("{where} is too long: at most {limit} characters", where=where, limit=limit)
        elif first["type"] == "too_long" and limit is not None:
            ours = Text("{where} is too long: at most {limit} items", where=where, limit=limit)
        else:
            ours = Text("{where} is invalid (pydantic's words): {error}", where=where, error=first["msg"])
        # The API keeps pydantic's own words; a page in another language says it in ours.
        raise SpecError(loc, rendered({**ours, EN: first["msg"]})) from None


def members(spec: LabSpec) -> tuple[Member, ...]:
    """The members of a resolved spec: the preset's, or the custom module's own."""
    preset = lookup(spec.preset)
    if not preset.custom:
        return preset.members
    return tuple(
        Member(name, f"torch.randn({', '.join(map(str, spec.shapes[name]))})", style)
        for name, style in spec.styles.items()
    )


def loaded_into(spec: LabSpec, styles: dict[str, str]) -> LabSpec:
    """The module a load_into experiment loads into: same preset and device, its own styles, and
    (a custom module) the same sizes for the names it shares."""
    shapes = {name: dims for name, dims in spec.shapes.items() if name in styles}
    return _spec("into", preset=spec.preset, device=spec.device, styles=styles, shapes=shapes)


def _custom(spec: LabSpec, max_elements: int) -> dict[str, list[int]]:
    """Check a custom module's members; names are left to torch, which may refuse them."""
    if len(spec.styles) > MAX_CUSTOM_MEMBERS:
        raise SpecError(
            ("styles",),
            Text(
                "at most {MAX_CUSTOM_MEMBERS} members in a custom module",
                MAX_CUSTOM_MEMBERS=MAX_CUSTOM_MEMBERS,
            ),
        )
    for name, style in spec.styles.items():
        if style not in STYLES:
            raise SpecError(
                ("styles", name),
                Text("unknown style {style!r}; styles: {names}", style=style, names=", ".join(STYLES)),
            )
    for name, dims in spec.shapes.items():
        if name not in spec.styles:
            raise SpecError(
                ("shapes", name),
                Text("shape for {name!r}, which has no style: add style.{name}", name=name),
            )
        if not 1 <= len(dims) <= MAX_DIMS or any(d < 1 for d in dims):
            raise SpecError(
                ("shapes", name),
                Text("a shape has 1 to {MAX_DIMS} sizes, each at least 1", MAX_DIMS=MAX_DIMS),
            )
        if prod(dims) > max_elements:
            raise SpecError(
                ("shapes", name),
                Text(
                    "{prod} elements; at most {max_elements} per tensor",
                    prod=prod(dims),
                    max_elements=max_elements,
                ),
            )
    return {name: list(spec.shapes.get(name, DEFAULT_SHAPE)) for name in spec.styles}


def resolve(spec: LabSpec, devices: Iterable[str], max_elements: int) -> LabSpec:
    """The canonical form of ``spec``: every member present, in the preset's order.

    ``max_elements`` caps a custom tensor (the caller's MRE_CUSTOM_MAX_ELEMENTS: this module reads
    no settings).
    """
    preset = find(spec.preset)
    if preset is None:
        raise UnknownPreset(
            ("preset",),
            Text("unknown preset {preset!r}; known: {names}", preset=spec.preset, names=", ".join(PRESETS)),
        )
    devices = tuple(devices)
    if spec.device not in devices:
        raise SpecError(
            ("device",),
            Text(
                "device {device!r} is not available here; available: {names}",
                device=spec.device,
                names=", ".join(devices),
            ),
        )
    if preset.custom:
        shapes = _custom(spec, max_elements)
        return LabSpec(preset=preset.id, device=spec.device, styles=dict(spec.styles), shapes=shapes)
    if spec.shapes:
        raise SpecError(("shapes",), Text("only the custom preset takes shapes"))
    for name, style in spec.styles.items():
        member = preset.member(name)
        if member is None:
            raise SpecError(
                ("styles", name),
                Text(
                    "preset {id!r} has no member {name!r}; members: {names}",
                    id=preset.id,
                    name=name,
                    names=", ".join(preset.member_names),
                ),
            )
        if style not in member.styles:
            raise SpecError(
                ("styles", name),
                Text(
                    "unknown style {style!r} for {name!r}; styles: {names}",
                    style=style,
                    name=name,
                    names=", ".join(member.styles),
                ),
            )
    styles = {m.name: spec.styles.get(m.name, m.default_style) for m in preset.members}
    return LabSpec(preset=preset.id, device=spec.device, styles=styles)


def from_query(items: Iterable[tuple[str, str]], allowed: Iterable[str] = ()) -> LabSpec:
    """Read a spec from query pairs; other keys are refused unless listed in ``allowed``."""
    fields: dict[str, str] = {}
    styles: dict[str, str] = {}
    shapes: dict[str, str] = {}
    ignored = set(allowed)
    for key, value in items:
        if key in ignored:
            continue
        if key.startswith(STYLE_PREFIX):
            target, name = styles, key.removeprefix(STYLE_PREFIX)
        elif key.startswith(SHAPE_PREFIX):
            target, name = shapes, key.removeprefix(SHAPE_PREFIX)
            if not SHAPE_TEXT.fullmatch(value):
                shown = repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
                text = Text(
                    "{key} must look like 3x4 (sizes of up to 9 digits), not {shown}", key=key, shown=shown
                )
                raise SpecError(("query", key), text)
        elif key in ("preset", "device"):
            target, name = fields, key
        else:
            text = Text(
                "unknown query parameter {key!r}; use preset, device, style.<member>, shape.<member>", key=key
            )
            raise SpecError(("query", key), text)
        if name in target:
            raise SpecError(
                ("query", key),
                Text("query parameter {key!r} given more than once", key=key),
            )
        target[name] = value
    if "preset" not in fields:
        raise SpecError(("query", "preset"), Text("query parameter 'preset' is required"))
    dims = {name: [int(part) for part in value.split("x")] for name, value in shapes.items()}
    return _spec("query", **fields, styles=styles, shapes=dims)
