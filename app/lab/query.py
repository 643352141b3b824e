"""The one reader of a lab's URL. The lab page, the JSON API, lessons and classes all read a lab's query
here, so what a URL asks for can never differ between them.

A lab URL holds the spec (``preset``, ``device``, ``style.<member>``, ``shape.<member>``), maybe an
experiment (``experiment=<id>``, its options by name, ``into.<member>`` for load_into's module), and
on a page how it is shown (``lang``, ``present``, ``embed``, ``table``) and an edit of the custom
module (``add``, ``new``, ``new_shape``, ``new_style``, ``drop``). The API and a lesson's state are
read strictly (anything else is refused, naming it); a page is read as a browser sends it: without
a preset it opens the default lab, and the member controls of the module it came from are dropped
and said.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

import torch

from app.lab.devices import device_ids
from app.lab.experiments import EXPERIMENTS, Experiment
from app.lab.presets import find
from app.lab.spec import SHAPE_PREFIX, STYLE_PREFIX, LabSpec, SpecError, from_query, loaded_into, resolve
from app.langs import Text

Pairs = Sequence[tuple[str, str]]
INTO = "into."  # load_into: the member styles of the module the state_dict is loaded into
EXPERIMENT = "experiment"
VIEW_KEYS = ("lang", "present", "embed", "table")  # how a page is shown, not what it shows
EDIT_KEYS = ("add", "new", "new_shape", "new_style", "drop")  # the custom module's form
OPTION_KEYS = tuple(sorted({name for e in EXPERIMENTS.values() for name in e.params}))
DEFAULT_PRESET = "testmodel"  # the richer tutorial: a parameter, a buffer and a plain tensor side by side
# The query as the API documents it (OpenAPI parameters of every route that reads a spec).
OPENAPI_PARAMETERS = [
    {"name": "preset", "in": "query", "required": True, "schema": {"type": "string"}, "example": "testmodel"},
    {"name": "device", "in": "query", "schema": {"type": "string", "default": "cpu"}, "example": "meta"},
    {
        "name": "style.{member}",
        "in": "query",
        "description": "One per member to change, e.g. style.buffer1=buffer; see GET /api/presets. "
        "For the custom preset also shape.{member}=3x4.",
        "schema": {"type": "string"},
    },
]


@dataclass(frozen=True)
class Bounds:
    """What a lab may ask of this server: the devices it has and the largest custom tensor it
    builds (MRE_CUSTOM_MAX_ELEMENTS). The routes make it from their app's settings."""

    devices: tuple[str, ...]
    max_elements: int

    @classmethod
    def here(cls, max_elements: int) -> Bounds:
        """This process's devices, and the cap its app was given."""
        return cls(device_ids(), max_elements)


@dataclass(frozen=True)
class LabQuery:
    """What one lab URL asks for, checked against the presets, styles, experiments and devices."""

    spec: LabSpec  # resolved: every member, in the preset's order
    experiment: Experiment | None = None
    options: dict[str, str] = field(default_factory=dict)  # the experiment's options given, checked
    into: LabSpec | None = None  # load_into's module, resolved
    ignored: tuple[str, ...] = ()  # a page: style.* of another module, dropped
    edit_error: SpecError | None = None  # a page: the custom member the module could not take
    editing: bool = False  # a page: the query adds or drops a custom member
    device_asked: str | None = None  # a page: the permalink's device, which this server lacks

    def experiment_pairs(self) -> list[tuple[str, str]]:
        """The experiment's part of the canonical URL: its id, options and into.* styles."""
        if self.experiment is None:
            return []
        pairs = [(EXPERIMENT, self.experiment.id), *self.options.items()]
        return pairs + [
            (INTO + name, style) for name, style in (self.into.styles if self.into else {}).items()
        ]

    def url(self) -> str:
        """The canonical query: the spec's, then the experiment's."""
        tail = urlencode(self.experiment_pairs())
        return self.spec.query() + ("&" + tail if tail else "")


def read(pairs: Pairs, bounds: Bounds, *, experiments: bool = True, only: str | None = None) -> LabQuery:
    """A lab's query read strictly (the API, a lesson's or a class's state): the spec, and where
    ``experiments`` allows it an experiment (``only``: the one a route's path names) with its
    options and into.*. Anything else is a SpecError naming it; view keys are ignored."""
    spec_pairs, experiment_pairs = _split(pairs, experiments or only is not None)
    spec = resolve(from_query(spec_pairs, allowed=VIEW_KEYS), bounds.devices, bounds.max_elements)
    if only is not None:
        experiment_pairs = [(EXPERIMENT, only), *experiment_pairs]
    return _with_experiment(LabQuery(spec), experiment_pairs, bounds)


def read_page(pairs: Pairs, bounds: Bounds, default_device: str) -> LabQuery:
    """A lab page's query, as a browser sends it: without a preset, the default lab (moved to
    ``default_device``); the custom module's edit applied (or refused and said, the lab kept);
    ``style.*`` of another module (the form still sends the old module's members) dropped and
    said; an experiment and its options read as strictly as everywhere else."""
    editing = any(key in ("add", "drop") for key, _ in pairs)
    edit_error = None
    if editing:
        try:
            _page_spec(_edited(pairs), bounds, default_device)
        except SpecError as exc:
            edit_error = exc
    kept = [(k, v) for k, v in pairs if k not in EDIT_KEYS] if edit_error else _edited(pairs)
    spec, ignored, asked = _page_spec(kept, bounds, default_device)
    query = LabQuery(spec, ignored=ignored, edit_error=edit_error, editing=editing, device_asked=asked)
    return _with_experiment(query, _chosen_fields(_split(kept, True)[1], spec), bounds)


def with_experiment(
    spec: LabSpec, experiment_id: str, options: dict[str, str], into: dict[str, str], bounds: Bounds
) -> LabQuery:
    """An experiment asked for by name (the JSON API's body), checked as a URL's is."""
    pairs = [(EXPERIMENT, experiment_id), *options.items(), *((INTO + k, v) for k, v in into.items())]
    return _with_experiment(LabQuery(spec), pairs, bounds)


def _split(pairs: Pairs, experiments: bool) -> tuple[list, list]:
    """The spec's pairs, and the experiment's (experiment, options, into.*) where they belong."""
    spec, experiment = [], []
    for key, value in pairs:
        belongs = key == EXPERIMENT or key in OPTION_KEYS or key.startswith(INTO)
        (experiment if belongs and experiments else spec).append((key, value))
    return spec, experiment


def _chosen_fields(pairs: Pairs, spec: LabSpec) -> list[tuple[str, str]]:
    """A page's experiment fields that belong to the experiment chosen: the form still sends the
    options and into.* of the one chosen before (and "experiment=" for none), which a page drops
    as it drops the old module's members; a wrong value of a field that belongs is still refused."""
    chosen = EXPERIMENTS.get(dict(pairs).get(EXPERIMENT, ""))
    if chosen is None and dict(pairs).get(EXPERIMENT, "") == "":
        return []
    members = set(spec.styles)
    return [
        (key, value)
        for key, value in pairs
        if key == EXPERIMENT
        or chosen is None
        or key in chosen.params
        or (chosen.id == "load_into" and key.startswith(INTO) and key.removeprefix(INTO) in members)
    ]


def _with_experiment(query: LabQuery, pairs: Pairs, bounds: Bounds) -> LabQuery:
    if not pairs:
        return query
    given: dict[str, str] = {}
    for key, value in pairs:
        if key in given:
            raise SpecError(("query", key), Text("query parameter {key!r} given more than once", key=key))
        given[key] = value
    chosen = EXPERIMENTS.get(given.pop(EXPERIMENT, ""))
    if chosen is None:
        names = ", ".join(EXPERIMENTS)
        raise SpecError(("query", EXPERIMENT), Text("experiment: one of {names}", names=names))
    into = {k.removeprefix(INTO): given.pop(k) for k in list(given) if k.startswith(INTO)}
    options = {}
    for name, value in given.items():
        allowed = chosen.params.get(name)
        if allowed is None:
            raise SpecError(
                ("params", name),
                Text(
                    "{id!r} takes no option {name!r}; options: {value}",
                    id=chosen.id,
                    name=name,
                    value=", ".join(chosen.params) or "none",
                ),
            )
        if value not in allowed:
            text = Text(
                "{name} must be one of {names}, not {value!r}",
                name=name,
                names=", ".join(allowed),
                value=value,
            )
            raise SpecError(("params", name), text)
        options[name] = value
    other = None
    if into and chosen.id != "load_into":
        raise SpecError(("into",), Text("only load_into takes the styles of another module"))
    if chosen.id == "load_into":
        try:
            other = resolve(loaded_into(query.spec, into), bounds.devices, bounds.max_elements)
        except SpecError as exc:
            raise SpecError(("into", *exc.loc[1:]), exc.words) from exc
    return replace(query, experiment=chosen, options=options, into=other)


def _edited(pairs: Pairs) -> list[tuple[str, str]]:
    """The query with the custom module's edit applied: a member added (or replaced), or dropped.

    The new member's fields ride in every submission of the form, but count only with ``add``.
    """
    asked = dict(pairs)
    adding = bool(asked.get("add")) and "new" in asked
    gone = {asked["new"]} if adding else set()
    gone |= {asked["drop"]} if "drop" in asked else set()
    kept = [
        (key, value)
        for key, value in pairs
        if key not in EDIT_KEYS
        and not (key.startswith((STYLE_PREFIX, SHAPE_PREFIX)) and key.partition(".")[2] in gone)
    ]
    if adding:
        name = asked["new"]
        kept += [
            (STYLE_PREFIX + name, asked.get("new_style") or "parameter"),
            (SHAPE_PREFIX + name, asked.get("new_shape") or "3"),
        ]
    return kept


def _page_spec(
    pairs: Pairs, bounds: Bounds, default_device: str
) -> tuple[LabSpec, tuple[str, ...], str | None]:
    """The page's spec, the ``style.*`` members of another module it dropped, and the device the
    URL asked for where this server lacks it (a permalink made on a GPU box, opened on a laptop:
    shown on the nearest device here rather than refused)."""
    spec_pairs = _split([(k, v) for k, v in pairs if k not in EDIT_KEYS], True)[0]
    given = {key for key, _ in spec_pairs}
    if "preset" not in given:
        spec_pairs = [("preset", DEFAULT_PRESET), *spec_pairs]
        if "device" not in given:
            spec_pairs.append(("device", default_device))
    spec = from_query(spec_pairs, allowed=VIEW_KEYS)
    asked = None
    nearest = nearest_device(spec.device, bounds.devices)
    if nearest is not None and nearest != spec.device:
        asked, spec = spec.device, spec.model_copy(update={"device": nearest})
    preset = find(spec.preset)
    foreign = bool(preset and not preset.custom)
    ignored = tuple(name for name in spec.styles if foreign and preset.member(name) is None)  # type: ignore[union-attr]
    kept = {name: style for name, style in spec.styles.items() if name not in ignored}
    update = {"styles": kept, "shapes": {} if foreign else spec.shapes}
    return resolve(spec.model_copy(update=update), bounds.devices, bounds.max_elements), ignored, asked


def nearest_device(asked: str, devices: Sequence[str]) -> str | None:
    """``asked`` where this server has it; else the device of its kind here (cuda:3 -> cuda:0), else
    the lab's default; None where ``asked`` names no device at all (a typo stays a refusal)."""
    if asked in devices:
        return asked
    try:
        kind = torch.device(asked).type
    except (RuntimeError, ValueError):
        return None
    same = [d for d in devices if torch.device(d).type == kind]
    return same[0] if same else default_device(devices)


def default_device(devices: Iterable[str]) -> str:
    """Where the first page moves its module: the first GPU, else meta, so the plain tensor that
    stays behind on cpu shows the tutorials' point before anything is touched."""
    return next((d for d in devices if d.startswith("cuda:")), "meta")
