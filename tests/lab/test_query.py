"""The one reader of the lab URL: the API, a lesson's state and a page read a URL alike (a page only
adds its defaults and drops the stale fields a form sends); every refusal names its field."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from app.lab import devices
from app.lab.experiments import EXPERIMENTS
from app.lab.query import Bounds, LabQuery, default_device, read, read_page, with_experiment
from app.lab.spec import SpecError, UnknownPreset, resolve
from tests.support.cases import CAP

BOUNDS = Bounds.here(CAP)
URLS = [
    "preset=testmodel",
    "preset=testmodel&device=meta&style.buffer1=buffer",
    "preset=mymodule&style.weight=frozen_parameter&experiment=step",
    "preset=testmodel&experiment=cast&dtype=double",
    "preset=positional_encoding&experiment=load_into&into.pe=non_persistent_buffer",
    "preset=custom&style.w=buffer&shape.w=2x3&experiment=save_load",
]


def pairs(url: str) -> list[tuple[str, str]]:
    return parse_qsl(url, keep_blank_values=True)


@pytest.mark.parametrize("url", URLS)
def test_the_api_a_lessons_state_and_a_page_read_a_url_alike(url: str) -> None:
    strict, page = read(pairs(url), BOUNDS), read_page(pairs(url), BOUNDS, "meta")
    assert strict == page
    assert strict.spec == resolve(strict.spec, devices.device_ids(), CAP)  # resolved, canonical
    assert read(pairs(strict.url()), BOUNDS) == strict  # the canonical URL reads back the same


@pytest.mark.parametrize("url", URLS)
def test_the_canonical_url_names_the_experiment_its_options_and_into(url: str) -> None:
    query = read(pairs(url), BOUNDS)
    asked = {k: v for k, v in pairs(url) if k == "experiment" or k.startswith("into.") or k in ("dtype",)}
    assert {k: v for k, v in pairs(query.url()) if k in asked} == asked


def test_an_experiment_named_by_the_api_is_the_urls() -> None:
    spec = read(pairs("preset=testmodel"), BOUNDS).spec
    assert with_experiment(spec, "cast", {"dtype": "double"}, {}, BOUNDS) == read(
        pairs("preset=testmodel&experiment=cast&dtype=double"), BOUNDS
    )
    # load_into's other module, checked against this server's bounds as the URL's is.
    into = {"buffer2": "non_persistent_buffer"}
    url = "preset=testmodel&experiment=load_into&into.buffer2=non_persistent_buffer"
    assert with_experiment(spec, "load_into", {}, into, BOUNDS) == read(pairs(url), BOUNDS)
    custom = read(pairs("preset=custom&style.w=parameter&shape.w=2x2"), BOUNDS).spec
    small = Bounds(BOUNDS.devices, max_elements=3)
    with pytest.raises(SpecError) as refused:
        with_experiment(custom, "load_into", {}, {"w": "buffer"}, small)
    assert refused.value.loc[0] == "into" and "3" in refused.value.message


@pytest.mark.parametrize(
    ("url", "loc"),
    [
        ("preset=testmodel&x=1", ("query", "x")),
        ("preset=testmodel&experiment=nope", ("query", "experiment")),
        ("preset=testmodel&experiment=step&dtype=half", ("params", "dtype")),  # not step's option
        ("preset=testmodel&experiment=cast&dtype=nope", ("params", "dtype")),
        ("preset=testmodel&experiment=cast&dtype=half&dtype=double", ("query", "dtype")),
        ("preset=testmodel&experiment=step&into.buffer1=buffer", ("into",)),
        ("preset=testmodel&experiment=load_into&into.nobody=buffer", ("into", "nobody")),
        ("preset=testmodel&experiment=load_into&into.buffer1=zzz", ("into", "buffer1")),
    ],
)
def test_a_strict_reading_refuses_what_it_does_not_know_naming_it(url: str, loc: tuple) -> None:
    with pytest.raises(SpecError) as refused:
        read(pairs(url), BOUNDS)
    assert refused.value.loc == loc


def test_the_api_reads_no_experiment_where_it_takes_none() -> None:
    with pytest.raises(SpecError) as refused:
        read(pairs("preset=testmodel&experiment=step"), BOUNDS, experiments=False)
    assert refused.value.loc == ("query", "experiment")
    assert read(pairs("preset=testmodel&dtype=double"), BOUNDS, only="cast").options == {"dtype": "double"}


def test_view_keys_are_how_a_page_is_shown_not_what_it_shows() -> None:
    url = "preset=testmodel&lang=zh-CN&present=1&embed=1"
    assert read(pairs(url), BOUNDS) == read(pairs("preset=testmodel"), BOUNDS)


def test_a_page_without_a_preset_opens_the_default_lab_on_its_device() -> None:
    query = read_page([], BOUNDS, "meta")
    assert (query.spec.preset, query.spec.device) == ("testmodel", "meta")
    assert read_page(pairs("device=cpu"), BOUNDS, "meta").spec.device == "cpu"
    assert (
        default_device(["cpu", "meta"]) == "meta" and default_device(["cpu", "cuda:1", "cuda:0"]) == "cuda:1"
    )


def test_a_page_drops_and_says_the_old_modules_members() -> None:
    query = read_page(pairs("preset=mymodule&style.buffer1=buffer&style.weight=buffer"), BOUNDS, "meta")
    assert query.ignored == ("buffer1",) and query.spec.styles["weight"] == "buffer"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("preset=testmodel&experiment=&dtype=half", None),  # "None" chosen, cast's select still sent
        ("preset=testmodel&experiment=step&dtype=half", ("step", {})),  # from cast to step
        ("preset=testmodel&experiment=cast&into.buffer1=buffer", ("cast", {})),  # from load_into
    ],
)
def test_a_page_drops_the_fields_a_form_sends_of_the_experiment_it_left(url: str, expected) -> None:
    query = read_page(pairs(url), BOUNDS, "meta")
    shown = (query.experiment.id, query.options) if query.experiment else None
    assert shown == expected and query.into is None


def test_a_page_still_refuses_a_wrong_value_of_its_experiment() -> None:
    with pytest.raises(SpecError) as refused:
        read_page(pairs("preset=testmodel&experiment=cast&dtype=nope"), BOUNDS, "meta")
    assert refused.value.loc == ("params", "dtype") and "half" in refused.value.message


def test_a_page_adds_and_drops_a_custom_member() -> None:
    url = "preset=custom&style.w=buffer&add=1&new=v&new_shape=2x2&new_style=frozen_parameter"
    query = read_page(pairs(url), BOUNDS, "meta")
    assert query.editing and query.edit_error is None
    assert query.spec.styles == {"w": "buffer", "v": "frozen_parameter"} and query.spec.shapes["v"] == [2, 2]
    dropped = read_page(pairs("preset=custom&style.w=buffer&style.v=buffer&drop=v"), BOUNDS, "meta")
    assert dropped.spec.styles == {"w": "buffer"}


def test_an_edit_the_module_cannot_take_is_refused_and_the_lab_kept() -> None:
    url = f"preset=custom&style.w=buffer&add=1&new=v&new_shape={CAP + 1}"
    query = read_page(pairs(url), BOUNDS, "meta")
    assert query.editing and query.edit_error is not None and query.edit_error.loc == ("shapes", "v")
    assert query.spec.styles == {"w": "buffer"}


def test_the_custom_cap_is_the_bounds_own() -> None:
    url = "preset=custom&style.w=buffer&shape.w=10x10"
    assert read(pairs(url), Bounds(("cpu",), 100)).spec.shapes == {"w": [10, 10]}
    with pytest.raises(SpecError):
        read(pairs(url), Bounds(("cpu",), 99))
    with pytest.raises(SpecError) as refused:
        read(pairs("preset=testmodel&device=meta"), Bounds(("cpu",), CAP))
    assert refused.value.loc == ("device",)


def test_an_unknown_preset_is_404() -> None:
    with pytest.raises(UnknownPreset) as refused:
        read(pairs("preset=nope"), BOUNDS)
    assert refused.value.status == 404


def test_every_experiment_option_is_read_as_a_url_names_it() -> None:
    for experiment in EXPERIMENTS.values():
        for name, allowed in experiment.params.items():
            query = read(pairs(f"preset=testmodel&experiment={experiment.id}&{name}={allowed[-1]}"), BOUNDS)
            assert isinstance(query, LabQuery) and query.options == {name: allowed[-1]}


def test_an_unknown_experiment_is_refused_naming_every_one() -> None:
    with pytest.raises(SpecError) as refused:
        read(pairs("preset=testmodel&experiment=nope"), BOUNDS)
    assert refused.value.message == "experiment: one of " + ", ".join(EXPERIMENTS)


def test_a_page_drops_the_shapes_a_module_other_than_custom_was_given() -> None:
    """Shapes are the custom module's; a preset's page ignores them (its members have their own)."""
    query = read_page(pairs("preset=testmodel&shape.parameter1=5&style.parameter1=buffer"), BOUNDS, "meta")
    assert query.spec.shapes == {} and query.spec.styles["parameter1"] == "buffer"
    custom = read_page(pairs("preset=custom&style.w=buffer&shape.w=2x2"), BOUNDS, "meta")
    assert custom.spec.shapes == {"w": [2, 2]}


def test_a_member_whose_name_torch_refuses_is_dropped_whole() -> None:
    """A dotted name ("a.b", which torch refuses) is one member: dropping it drops its style and shape."""
    url = "preset=custom&style.w=buffer&style.a.b=buffer&shape.a.b=2&drop=a.b"
    query = read_page(pairs(url), BOUNDS, "meta")
    assert query.spec.styles == {"w": "buffer"} and "a.b" not in query.spec.shapes
