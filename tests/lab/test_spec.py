"""The spec: read from query pairs, checked against the presets, styles and devices, made canonical
(every member, in the preset's order), its canonical query reading back the same spec."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from app.lab.presets import PRESETS
from app.lab.spec import LabSpec, SpecError, UnknownPreset, from_query, loaded_into, members, resolve
from app.langs import EN, ZH
from tests.support.cases import CAP

DEVICES = ("cpu", "meta")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_a_resolved_spec_names_every_member_in_the_presets_order(preset: str) -> None:
    spec = resolve(LabSpec(preset=preset), DEVICES, CAP)
    if PRESETS[preset].custom:
        assert spec.styles == {} and spec.shapes == {}
    else:
        assert list(spec.styles) == list(PRESETS[preset].member_names)
        assert spec.styles == {m.name: m.default_style for m in PRESETS[preset].members}
        assert members(spec) == PRESETS[preset].members
    assert resolve(from_query(parse_qsl(spec.query())), DEVICES, CAP) == spec  # the query reads it back


def test_styles_given_in_another_order_are_the_presets_order() -> None:
    spec = resolve(
        LabSpec(preset="testmodel", styles={"buffer2": "buffer", "buffer1": "buffer"}), DEVICES, CAP
    )
    assert list(spec.styles) == ["parameter1", "parameter2", "buffer1", "buffer2"]


def test_a_custom_members_shape_is_its_own_or_three() -> None:
    spec = resolve(
        LabSpec(preset="custom", styles={"a": "buffer", "b": "parameter"}, shapes={"a": [2, 3]}), DEVICES, CAP
    )
    assert spec.shapes == {"a": [2, 3], "b": [3]}
    assert [m.init for m in members(spec)] == ["torch.randn(2, 3)", "torch.randn(3)"]


@pytest.mark.parametrize(
    ("spec", "loc", "status"),
    [
        (LabSpec(preset="nope"), ("preset",), 404),
        (LabSpec(preset="testmodel", device="cuda:9"), ("device",), 422),
        (LabSpec(preset="testmodel", styles={"nobody": "buffer"}), ("styles", "nobody"), 422),
        (LabSpec(preset="testmodel", styles={"buffer1": "zzz"}), ("styles", "buffer1"), 422),
        (LabSpec(preset="testmodel", shapes={"buffer1": [2]}), ("shapes",), 422),
        (LabSpec(preset="custom", styles={"a": "zzz"}), ("styles", "a"), 422),
        (LabSpec(preset="custom", shapes={"a": [2]}), ("shapes", "a"), 422),
        (LabSpec(preset="custom", styles={"a": "buffer"}, shapes={"a": [0]}), ("shapes", "a"), 422),
        (LabSpec(preset="custom", styles={"a": "buffer"}, shapes={"a": [CAP + 1]}), ("shapes", "a"), 422),
    ],
)
def test_each_refusal_names_its_field_in_every_language(spec: LabSpec, loc: tuple, status: int) -> None:
    with pytest.raises(SpecError) as refused:
        resolve(spec, DEVICES, CAP)
    assert (refused.value.loc, refused.value.status) == (loc, status)
    assert refused.value.text(ZH) != refused.value.text(EN)
    assert isinstance(refused.value, UnknownPreset) == (status == 404)


def test_a_custom_module_takes_sixteen_members_and_refuses_the_seventeenth() -> None:
    names = [f"m{i}" for i in range(17)]
    sixteen = LabSpec(preset="custom", styles=dict.fromkeys(names[:16], "buffer"))
    assert list(resolve(sixteen, DEVICES, CAP).styles) == names[:16]
    with pytest.raises(SpecError) as refused:
        resolve(LabSpec(preset="custom", styles=dict.fromkeys(names, "buffer")), DEVICES, CAP)
    assert refused.value.loc == ("styles",) and refused.value.status == 422
    assert refused.value.message == "at most 16 members in a custom module"
    assert "16" in refused.value.text(ZH) and refused.value.text(ZH) != refused.value.message


def test_names_shapes_and_member_maps_at_their_caps() -> None:
    """64 characters of a preset or device name, 64 entries of styles or shapes, 4 sizes of a shape:
    accepted; one more, refused naming the field."""
    from pydantic import ValidationError

    LabSpec(preset="p" * 64, device="d" * 64, styles={f"m{i}": "buffer" for i in range(64)})
    for too_many in (
        {"preset": "p" * 65},
        {"preset": "custom", "device": "d" * 65},
        {"preset": "custom", "styles": {f"m{i}": "buffer" for i in range(65)}},
        {"preset": "custom", "shapes": {f"m{i}": [1] for i in range(65)}},
    ):
        with pytest.raises(ValidationError) as refused:
            LabSpec(**too_many)
        assert refused.value.errors()[0]["loc"][0] in too_many, too_many
    four = LabSpec(preset="custom", styles={"a": "buffer"}, shapes={"a": [1, 2, 3, 4]})
    assert resolve(four, DEVICES, CAP).shapes == {"a": [1, 2, 3, 4]}
    with pytest.raises(SpecError, match="a shape has 1 to 4 sizes") as refused:
        resolve(LabSpec(preset="custom", styles={"a": "buffer"}, shapes={"a": [1, 2, 3, 4, 5]}), DEVICES, CAP)
    assert refused.value.loc == ("shapes", "a")


def test_the_custom_cap_is_the_callers() -> None:
    spec = LabSpec(preset="custom", styles={"a": "buffer"}, shapes={"a": [10]})
    assert resolve(spec, DEVICES, 10).shapes == {"a": [10]}
    with pytest.raises(SpecError):
        resolve(spec, DEVICES, 9)


@pytest.mark.parametrize(
    ("pairs", "loc"),
    [
        ([("device", "cpu")], ("query", "preset")),
        ([("preset", "a"), ("preset", "b")], ("query", "preset")),
        ([("preset", "custom"), ("shape.a", "3y")], ("query", "shape.a")),
        ([("preset", "testmodel"), ("what", "1")], ("query", "what")),
        ([("preset", "x" * 100)], ("query", "preset")),
    ],
)
def test_query_pairs_that_are_no_spec_are_refused_naming_the_key(pairs: list, loc: tuple) -> None:
    with pytest.raises(SpecError) as refused:
        from_query(pairs)
    assert refused.value.loc == loc


def test_too_long_is_said_in_chinese_and_pydantics_words_kept_in_english() -> None:
    with pytest.raises(SpecError) as refused:
        from_query([("preset", "x" * 100)])
    assert refused.value.message == "String should have at most 64 characters"
    assert refused.value.text(ZH) == "query.preset 太长：最多 64 个字符"


def test_the_module_loaded_into_shares_preset_device_and_the_shapes_of_its_names() -> None:
    spec = resolve(
        LabSpec(preset="custom", device="meta", styles={"a": "buffer", "b": "buffer"}, shapes={"a": [2]}),
        DEVICES,
        CAP,
    )
    other = loaded_into(spec, {"a": "parameter"})
    assert (other.preset, other.device, other.styles, other.shapes) == (
        "custom",
        "meta",
        {"a": "parameter"},
        {"a": [2]},
    )


def test_a_view_key_first_in_the_query_passes_over_it_and_reads_the_rest() -> None:
    pairs = [("lang", "zh-CN"), ("preset", "mymodule"), ("present", "1"), ("style.weight", "buffer")]
    read = from_query(pairs, allowed=("lang", "present"))
    assert (read.preset, read.styles) == ("mymodule", {"weight": "buffer"})


def test_an_unknown_preset_is_refused_naming_every_known_one() -> None:
    with pytest.raises(UnknownPreset) as refused:
        resolve(LabSpec(preset="nope"), ["cpu", "meta"], CAP)
    assert refused.value.message == "unknown preset 'nope'; known: " + ", ".join(PRESETS)
