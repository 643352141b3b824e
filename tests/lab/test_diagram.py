"""The module diagram against torch: every chip is a tensor torch lists (or a plain attribute it does
not), in the lane of the device torch says it is on and inside exactly the outlines of the tables
that list it; a change marks what the diff says moved; an experiment lights what torch touched;
alike numbered blocks are drawn once. References are modules written directly with torch."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from app.lab import diagram, memo
from app.lab.diagram import NARROW, OUTLINES, WIDE, Diagram, Rect
from app.lab.diff import compare
from app.lab.experiments import run_experiment
from app.lab.presets import PRESETS
from app.lab.report import BufferRow, LabReport, ParameterCount, ParameterRow, StateRow
from app.lab.spec import LabSpec, resolve
from app.langs import EN, ZH
from tests.support.cases import CAP, PRESET_STYLES
from tests.support.pictures import legible, overlap, well_placed
from tests.support.reference import TUTORIAL_DEFAULTS, reference, tables

DEVICES = ("cpu", "meta")
CUSTOM = {
    "weight": "parameter",
    "frozen": "frozen_parameter",
    "running_mean": "buffer",
    "scratch": "non_persistent_buffer",
    "cache": "plain_tensor",
    "a.b": "nn_buffer",
}


def spec(preset: str, styles: dict[str, str] | None = None, device: str = "meta", **more) -> LabSpec:
    return resolve(LabSpec(preset=preset, device=device, styles=styles or {}, **more), DEVICES, CAP)


def lane_of(d: Diagram, chip: diagram.Chip) -> diagram.Lane:
    return next(lane for lane in d.lanes if lane.rect.y <= chip.rect.y < lane.rect.y + lane.rect.h)


def outlines_around(d: Diagram, chip: diagram.Chip) -> set[str]:
    return {o.table for o in d.outlines if not o.empty and chip.rect in o.rect}


def check_against_torch(d: Diagram, model: nn.Module, plain: dict[str, torch.Tensor | list]) -> None:
    """Every tensor torch lists, and every plain tensor attribute, is one chip: in its device's lane,
    inside the outlines of exactly the tables that list it, its kind and shape torch's."""
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    state = model.state_dict()
    named = {**state, **buffers, **params, **plain}
    drawn = {name: chip for chip in d.chips if not chip.ghost for name in chip.item.tensors}
    assert set(drawn) == set(named)
    for name, tensor in named.items():
        chip = drawn[name]
        if isinstance(tensor, list):  # a plain list of layers: one chip, where its layers are
            assert chip.kind == "plain" and chip.item.shape is None
            assert lane_of(d, chip).device == str(next(tensor[0].parameters()).device)
            continue
        assert lane_of(d, chip).device == str(tensor.device), name
        listed = {
            t for t, table in (("named_parameters", params), ("named_buffers", buffers)) if name in table
        }
        listed |= {"state_dict"} if name in state else set()
        assert outlines_around(d, chip) == listed, name
        assert chip.item.shape == tuple(tensor.shape), name
        if name in params:
            assert chip.kind == ("parameter" if tensor.requires_grad else "frozen")
        elif name in buffers:
            assert chip.kind == ("buffer" if name in state else "non_persistent")
        elif name in state:
            assert chip.kind == "tied"  # a second name of a tensor torch lists once
        else:
            assert chip.kind == "plain"
    for a, b in itertools.combinations(d.chips, 2):
        assert not overlap(a.rect, b.rect), (a.name, b.name)
    for chip in d.chips:
        assert chip.rect in Rect(0, 0, d.width, d.height)
    well_placed(d)


def plain_tensors(model: nn.Module, styles: dict[str, str]) -> dict[str, torch.Tensor | list]:
    """The members torch does not track: a plain tensor attribute, or a plain list of layers."""
    found = {name: getattr(model, name, None) for name in styles}
    return {name: value for name, value in found.items() if isinstance(value, (torch.Tensor, list))}


@pytest.mark.parametrize("variant", [WIDE, NARROW])
@pytest.mark.parametrize(("preset", "style"), PRESET_STYLES)
def test_every_chip_is_where_torch_puts_its_tensor(preset: str, style: str, variant: str) -> None:
    styles = {m: style for m in TUTORIAL_DEFAULTS[preset]} or {"x": style}
    for device in DEVICES:
        s = spec(preset, styles, device)
        model = reference(preset, s.styles, {"x": [3]} if preset == "custom" else None).to(device)
        d = diagram.draw(memo.report(s), EN, variant)
        plain = {
            n: t for n, t in plain_tensors(model, s.styles).items() if n not in dict(model.named_parameters())
        }
        plain = {n: t for n, t in plain.items() if n not in dict(model.named_buffers())}
        check_against_torch(d, model, plain)


def test_the_six_member_custom_module_and_its_refusal() -> None:
    s = spec("custom", CUSTOM, shapes={"weight": [4, 4]})
    report = memo.report(s)
    model = reference("custom", {k: v for k, v in CUSTOM.items() if k != "a.b"}, {"weight": [4, 4]}).to(
        "meta"
    )
    for lang in (EN, ZH):
        d = diagram.draw(report, lang)
        check_against_torch(d, model, {"cache": model.cache})
        # torch refused "a.b": no chip, and the picture says so
        assert not [c for c in d.chips if "a.b" in c.item.tensors]
        assert any("a.b" in sentence for sentence in d.desc)


def test_the_plain_tensor_stays_on_cpu_when_the_rest_moves() -> None:
    cpu, meta = spec("testmodel", device="cpu"), spec("testmodel", device="meta")
    before, after = memo.report(cpu), memo.report(meta)
    d = diagram.draw(after, EN, before=before, diff=compare(before, after))
    old = diagram.draw(before, EN)
    moved = reference("testmodel", meta.styles).to("meta")
    assert [lane.device for lane in d.lanes] == ["cpu", "meta"]
    for name in ("parameter1", "parameter2", "buffer2", "linear.weight", "linear.bias"):
        chip = d.chip(name)
        assert lane_of(d, chip).device == str(dict(moved.state_dict())[name].device) == "meta"
        assert "moved" in chip.changes and chip.then.device == "cpu"
        assert lane_of(old, old.chip(name)).device == "cpu"
        assert d.ghost(name) is None  # model.to() moved it: the lane says where from, once
    stayed = d.chip("buffer1")
    assert lane_of(d, stayed).device == str(moved.buffer1.device) == "cpu"
    assert stayed.changes == ("stayed",)
    # The before mark: the module's lane says which device model.to() took its chips from.
    assert [(lane.device, lane.was) for lane in d.lanes] == [("cpu", ""), ("meta", "cpu")]
    assert "It moved from cpu to meta." in d.desc
    # And back: every chip in the cpu lane, which says they came from meta.
    back = diagram.draw(before, EN, before=after, diff=compare(after, before))
    assert [(lane.device, lane.was) for lane in back.lanes] == [("cpu", "meta")]
    # What .to() did in each lane: one lane the chips came to; two, the one they left and the other.
    assert [lane.role for lane in back.lanes] == ['model.to("cpu")']
    assert d.lanes[0].role == "stayed behind"
    assert "It moved from meta to cpu." in back.desc
    assert "moved" in back.chip("buffer2").changes and "moved" not in back.chip("buffer1").changes


def test_a_buffer_made_non_persistent_leaves_the_state_dict_outline() -> None:
    before_spec = spec("testmodel")
    after_spec = spec("testmodel", {"buffer2": "non_persistent_buffer"})
    before, after = memo.report(before_spec), memo.report(after_spec)
    torch_before = reference("testmodel", before_spec.styles).state_dict()
    torch_after = reference("testmodel", after_spec.styles).state_dict()
    assert "buffer2" in torch_before and "buffer2" not in torch_after
    old = diagram.draw(before, EN)
    new = diagram.draw(after, EN, before=before, diff=compare(before, after))
    assert "state_dict" in outlines_around(old, old.chip("buffer2"))
    chip = new.chip("buffer2")
    assert outlines_around(new, chip) == {"named_buffers"}
    assert chip.changes == ("left",)  # it left a table; it did not move
    assert chip.rect not in new.outline("state_dict").rect
    # Its ghost: where it stood, inside the outlines of the tables that listed it then.
    ghost = new.ghost("buffer2")
    assert ghost is not None and outlines_around(new, ghost) == {"named_buffers", "state_dict"}
    assert lane_of(new, ghost).device == lane_of(new, chip).device == "meta"
    assert "Before the change it was in named_buffers(), state_dict()." in new.desc
    # Only what the diff says changed is marked.
    assert [c.name for c in new.chips if c.changes] == ["buffer2"]
    assert [c.name for c in new.chips if c.ghost] == ["buffer2"]
    for a, b in itertools.combinations(new.chips, 2):
        assert not overlap(a.rect, b.rect), (a.name, b.name)


def test_a_plain_tensor_made_a_buffer_joins_the_module_on_its_device() -> None:
    before, after = memo.report(spec("testmodel")), memo.report(spec("testmodel", {"buffer1": "buffer"}))
    d = diagram.draw(after, EN, before=before, diff=compare(before, after))
    model = reference("testmodel", {**TUTORIAL_DEFAULTS["testmodel"], "buffer1": "buffer"}).to("meta")
    chip = d.chip("buffer1")
    assert lane_of(d, chip).device == str(model.buffer1.device) == "meta"
    assert {"moved", "joined"} <= set(chip.changes)
    ghost = d.ghost("buffer1")  # left behind on cpu, in no table
    assert ghost is not None and lane_of(d, ghost).device == "cpu" and outlines_around(d, ghost) == set()
    assert all(not lane.was for lane in d.lanes)  # model.to() did not move it: its style did
    assert d.lanes[0].role == "nothing stayed behind"  # a ghost is not a tensor


def test_marks_follow_the_diff_only() -> None:
    s = spec("testmodel")
    report = memo.report(s)
    same = diagram.draw(report, EN, before=report, diff=compare(report, report))
    assert all(not c.changes and not c.ghost for c in same.chips)
    other = memo.report(spec("mymodule"))
    another = diagram.draw(other, EN, before=report, diff=compare(report, other))
    assert all(not c.changes and not c.ghost for c in another.chips)  # another module: nothing "moved"


def test_ids_are_stable_across_a_move_and_distinct_within_a_picture() -> None:
    cpu = diagram.draw(memo.report(spec("testmodel", device="cpu")), EN)
    meta = diagram.draw(memo.report(spec("testmodel", device="meta")), EN)
    assert {c.item.key: c.id for c in cpu.chips} == {c.item.key: c.id for c in meta.chips}
    assert {o.table: o.id for o in cpu.outlines} == {o.table: o.id for o in meta.outlines}
    for d in (cpu, meta):
        ids = [c.id for c in d.chips] + [b.id for b in d.boxes] + [o.id for o in d.outlines]
        ids += [lane.id for lane in d.lanes]
        assert len(ids) == len(set(ids))
    narrow = diagram.draw(memo.report(spec("testmodel")), EN, NARROW)
    assert not {c.id for c in narrow.chips} & {c.id for c in meta.chips}
    # A lane nothing stayed in (mymodule moved whole) has its id too, distinct from the other's.
    before, after = memo.report(spec("mymodule", device="cpu")), memo.report(spec("mymodule", device="meta"))
    moved = diagram.draw(after, EN, before=before, diff=compare(before, after))
    assert [lane.empty for lane in moved.lanes] == [True, False]
    assert all(isinstance(lane.id, str) and lane.id for lane in moved.lanes)
    assert len({lane.id for lane in moved.lanes}) == 2


def test_every_table_has_its_outline_even_when_empty() -> None:
    d = diagram.draw(memo.report(spec("mymodule")), EN)
    model = reference("mymodule", TUTORIAL_DEFAULTS["mymodule"])
    assert list(model.named_buffers()) == []
    assert {o.table for o in d.outlines} == set(OUTLINES)
    assert [o.table for o in d.outlines if o.empty] == ["named_buffers"]
    assert d.outline("named_buffers") is None and d.outline("state_dict").table == "state_dict"


def report_of(model: nn.Module, name: str = "custom") -> LabReport:
    """A report read straight from a module built in a test: torch's own tables, no members."""

    def row(t: torch.Tensor) -> dict:
        return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "device": str(t.device)}

    state = model.state_dict()
    return LabReport(
        spec=LabSpec(preset=name, device="cpu"),
        named_parameters=[
            ParameterRow(name=n, requires_grad=p.requires_grad, **row(p)) for n, p in model.named_parameters()
        ],
        named_buffers=[BufferRow(name=n, persistent=n in state, **row(b)) for n, b in model.named_buffers()],
        state_dict=[StateRow(name=n, **row(t)) for n, t in state.items()],
        members=[],
        parameter_count=ParameterCount(unique=0, with_duplicates=0, state_dict=0),
        code="",
        torch_version=torch.__version__,
    )


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(4, 4, bias=False)
        self.mlp = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 4))
        self.norm = nn.LayerNorm(4)
        self.register_buffer("freq", torch.ones(2), persistent=False)


class Stack(nn.Module):
    def __init__(self, blocks: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.layers = nn.ModuleList(Block() for _ in range(blocks))
        self.head = nn.Linear(4, 10, bias=False)


def test_alike_numbered_blocks_are_drawn_once() -> None:
    model = Stack(4)
    d = diagram.draw(report_of(model), EN)
    check_against_torch(d, model, {})
    boxes = {b.title: b for b in d.boxes}
    assert boxes["layers.{0..3}"].count == 4
    chip = d.chip("layers.2.mlp.1.bias")
    assert chip.item.tensors == tuple(f"layers.{i}.mlp.1.bias" for i in range(4))
    # A module of one tensor is that tensor's chip in its parent: attn.weight, not a box "attn".
    assert d.chip("layers.0.attn.weight").name == "attn.weight"
    blocks = sum(1 for n, _ in model.named_parameters() if n.startswith("layers."))
    assert len([c for c in d.chips if c.item.path.startswith("layers")]) == blocks // 4 + 1  # + freq
    # Said once for the four, with their count, in each language.
    name = "layers.{0..3}.mlp.1.bias"
    assert [line for line in d.desc if line.startswith(name)] == [
        f"{name} (4 alike): parameter [4], on cpu, in named_parameters(), state_dict()."
    ]
    zh = diagram.draw(report_of(model), ZH)
    assert any(line.startswith(f"{name}（4 个相同的）") for line in zh.desc)


def test_a_block_unlike_the_others_breaks_the_run() -> None:
    model = Stack(4)
    model.layers[2].norm.weight.requires_grad_(False)  # frozen in block 2 only
    d = diagram.draw(report_of(model), EN)
    check_against_torch(d, model, {})
    titles = {b.title for b in d.boxes}
    assert {"layers", "{0..1}", "2", "3"} <= titles  # inside "layers": the run, then the others
    assert d.chip("layers.2.norm.weight").kind == "frozen"
    assert d.chip("layers.3.norm.weight").item.tensors == ("layers.3.norm.weight",)


def test_a_module_list_of_layers_is_one_box_of_alike_blocks() -> None:
    s = spec("layer_list", {"blocks": "module_list"})
    model = reference("layer_list", s.styles).to("meta")
    d = diagram.draw(memo.report(s), EN)
    check_against_torch(d, model, {})
    assert d.chip("blocks.1.weight").item.tensors == ("blocks.0.weight", "blocks.1.weight")
    assert d.chip("blocks.0.weight").item.members == ("blocks",)


@pytest.mark.parametrize(
    ("experiment", "options"), [("save_load", {}), ("cast", {"dtype": "half"}), ("step", {})]
)
def test_an_experiment_lights_the_chips_torch_touched(experiment: str, options: dict[str, str]) -> None:
    s = spec("testmodel", device="cpu")
    result = run_experiment(experiment, s, **options)
    d = diagram.draw(memo.report(s), EN, experiment=result)
    lit = {c.name for c in d.chips if c.hit}
    model = reference("testmodel", s.styles)
    if experiment == "save_load":  # what state_dict() carries comes back from the checkpoint
        expected = {n.removeprefix("linear.") for n in model.state_dict()}
    elif experiment == "cast":  # .half() casts parameters and buffers, never a plain attribute
        model.half()
        expected = {n.removeprefix("linear.") for n, t in model.state_dict().items() if t.dtype == torch.half}
    else:  # an SGD step over parameters() changes the parameters that got a gradient
        expected = {n.removeprefix("linear.") for n, p in model.named_parameters() if p.requires_grad}
    assert lit == expected
    assert {c.name for c in d.chips if c.hit is False} == {c.name for c in d.chips} - expected
    assert all(d.legend)


@pytest.mark.parametrize(
    ("preset", "styles"),
    [("positional_encoding", {"pe": "non_persistent_buffer"}), ("layer_list", {"blocks": "python_list"})],
)
def test_a_save_load_lights_only_what_the_checkpoint_carried(preset: str, styles: dict[str, str]) -> None:
    """Equal after the load is not "came back": the fresh module makes an unsaved tensor alike."""
    s = spec(preset, styles, device="cpu")
    d = diagram.draw(memo.report(s), EN, experiment=run_experiment("save_load", s))
    model = reference(preset, s.styles)
    saved = set(model.state_dict())
    assert {n for c in d.chips if c.hit for n in c.item.tensors} == saved
    unsaved = [c for c in d.chips if not set(c.item.tensors) & saved]
    assert unsaved and all(c.hit is False and c.outcome == "not in the checkpoint" for c in unsaved)
    zh = diagram.draw(memo.report(s), ZH, experiment=run_experiment("save_load", s))
    assert {c.outcome for c in zh.chips if not c.hit} == {"不在检查点里"}


def test_the_picture_says_the_tables_facts_in_both_languages() -> None:
    s = spec("testmodel")
    report = memo.report(s)
    ref = tables("testmodel", s.styles, "meta")
    for lang in (EN, ZH):
        d = diagram.draw(report, lang)
        text = " ".join(d.desc)
        for row in ref["state_dict"]:
            assert row["name"].removeprefix("linear.") in text and row["device"] in text
    en, zh = diagram.draw(report, EN), diagram.draw(report, ZH)
    assert en.title != zh.title and en.desc != zh.desc
    assert {c.kind_words for c in zh.chips} == {"参数", "缓冲区", "普通"}


def _outcomes(d: Diagram) -> dict[str, tuple[bool | None, str]]:
    return {c.name: (c.hit, c.outcome) for c in d.chips}


def _all_tensors(model: nn.Module, styles: dict[str, str]) -> dict[str, torch.Tensor]:
    """Every tensor of the module: its parameters and buffers, and its plain tensor attributes."""
    found = {**dict(model.named_parameters()), **dict(model.named_buffers(remove_duplicate=False))}
    return found | {n: t for n, t in plain_tensors(model, styles).items() if isinstance(t, torch.Tensor)}


def test_a_cast_says_each_chips_dtype_after_it() -> None:
    s = spec("testmodel", device="cpu")
    d = diagram.draw(memo.report(s), EN, experiment=run_experiment("cast", s, dtype="half"))
    model = reference("testmodel", s.styles)
    before = {n: str(t.dtype)[6:] for n, t in _all_tensors(model, s.styles).items()}
    model.half()
    after = {n: str(t.dtype)[6:] for n, t in _all_tensors(model, s.styles).items()}
    said = _outcomes(d)
    assert {before[n] for n in after} == {"float32"} and "float16" in after.values()  # both kinds are there
    for name, dtype in after.items():
        cast = dtype != before[name]
        assert said[name.removeprefix("linear.")] == (
            cast,
            f"cast to {dtype}" if cast else f"kept {dtype}",
        ), name


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_forward_lights_what_it_changed_as_torch_changes_it(mode: str) -> None:
    s = spec("batchnorm", device="cpu")
    d = diagram.draw(memo.report(s), EN, experiment=run_experiment("forward", s, mode=mode))
    model = reference("batchnorm", s.styles)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train(mode == "train")
    torch.manual_seed(1)
    with torch.no_grad():
        model(eval(PRESETS["batchnorm"].sample_input, {"torch": torch}))  # the lab's own batch
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, state[k])}
    said = _outcomes(d)
    for name in state:
        short = name.rsplit(".", 1)[-1] if name.rsplit(".", 1)[-1] in said else name
        touched = name in changed
        assert said[short] == (touched, "changed by the forward pass" if touched else "kept its values"), name
    assert bool(changed) == (mode == "train")  # the running statistics move in training only


def test_a_meta_round_trip_lights_what_holds_uninitialised_memory() -> None:
    s = spec("testmodel", device="cpu")
    d = diagram.draw(memo.report(s), EN, experiment=run_experiment("meta_roundtrip", s))
    model = reference("testmodel", s.styles)
    # to_empty() allocates every parameter and buffer anew, uninitialised; a plain attribute it never sees
    registered = {*dict(model.named_parameters()), *dict(model.named_buffers())}
    said = _outcomes(d)
    every = _all_tensors(model, s.styles)
    assert registered < set(every)  # both kinds are there
    for name in every:
        garbage = name in registered
        words = "holds uninitialised memory" if garbage else "kept its values"
        assert said[name.removeprefix("linear.")] == (garbage, words), name


def test_a_member_added_to_the_custom_module_is_new_and_nothing_else_is_marked() -> None:
    before = memo.report(spec("custom", {"w": "buffer"}))
    after = memo.report(spec("custom", {"w": "buffer", "v": "parameter"}))
    d = diagram.draw(after, EN, before=before, diff=compare(before, after))
    model = reference("custom", {"w": "buffer", "v": "parameter"}).to("meta")
    assert "v" in dict(model.named_parameters())
    assert {c.name: c.changes for c in d.chips if c.changes} == {"v": ("new",)}
    assert d.ghost("v") is None  # it stood nowhere before


def test_an_empty_state_dict_is_an_outline_of_its_label_alone_at_the_right() -> None:
    """Only a non-persistent buffer: state_dict() lists nothing, and its outline says so, in place."""
    model = nn.Module()
    model.register_buffer("freq", torch.ones(2), persistent=False)
    assert model.state_dict() == {}
    d = diagram.draw(report_of(model), EN)
    check_against_torch(d, model, {})
    empty = {o.table: o for o in d.outlines if o.empty}
    assert set(empty) == {"state_dict", "named_parameters"}
    stub = empty["state_dict"]
    assert stub.rect.h == 0.0 and stub.rect.w > stub.label_width  # a line with its label, no chips


@pytest.mark.parametrize("lang", [EN, ZH])
@pytest.mark.parametrize("variant", [WIDE, NARROW])
def test_no_text_overlaps_another_in_any_preset_fresh_or_moved(variant: str, lang: str) -> None:
    """Every preset (the real models too), on cpu and after model.to("meta") with the marks of the
    move, and every style of each member changed once (its ghost, its lane): legible in each
    language, in each variant."""
    for preset in PRESETS:
        cpu = memo.report(spec(preset, device="cpu"))
        meta = memo.report(spec(preset, device="meta"))
        legible(diagram.draw(cpu, lang, variant))
        legible(diagram.draw(meta, lang, variant, before=cpu, diff=compare(cpu, meta)))
        legible(diagram.draw(cpu, lang, variant, before=meta, diff=compare(meta, cpu)))
    before = memo.report(spec("testmodel"))
    for name, style in PRESET_STYLES:
        if name == "testmodel":
            after = memo.report(spec("testmodel", {"buffer1": style, "parameter1": style}))
            legible(diagram.draw(after, lang, variant, before=before, diff=compare(before, after)))


def test_a_module_holding_no_tensor_is_one_lane_of_empty_outlines() -> None:
    model = nn.Module()
    assert not list(model.named_parameters()) and not list(model.named_buffers()) and not model.state_dict()
    for lang in (EN, ZH):
        d = diagram.draw(report_of(model), lang)
        check_against_torch(d, model, {})
        assert len(d.lanes) == 1 and not d.chips
        assert sorted(o.table for o in d.outlines if o.empty) == sorted(OUTLINES)


def test_labels_share_their_row_across_a_tied_names_band() -> None:
    """A parameter, a second name of it (state_dict() only) and a buffer, each tiny: the buffers
    outline widens for its label by exactly what the row needs, across the tied band between."""
    model = nn.Module()
    model.w = nn.Parameter(torch.ones(1))
    model.s = nn.Module()
    model.s.w = model.w  # state_dict() lists it under both names; named_parameters() once
    model.register_buffer("b", torch.ones(1))
    assert list(model.state_dict()) == ["w", "b", "s.w"] and [n for n, _ in model.named_parameters()] == ["w"]
    for lang in (EN, ZH):
        d = diagram.draw(report_of(model), lang)
        check_against_torch(d, model, {})  # the label row among the checks
        buffers, chip = d.outline("named_buffers"), d.chip("b")
        assert buffers.rect.x + buffers.rect.w > chip.rect.x + chip.rect.w + 0.28  # widened for its label


def test_a_moved_lane_keeps_its_role_when_the_state_dict_label_clears_it() -> None:
    """batchnorm moved to meta, wide: the lane's title line holds the device, 'model.to("meta")'
    and the module's name, and state_dict()'s label beside them; no row of its own, nothing dropped."""
    cpu, meta = memo.report(spec("batchnorm", device="cpu")), memo.report(spec("batchnorm", device="meta"))
    d = diagram.draw(meta, EN, WIDE, before=cpu, diff=compare(cpu, meta))
    lane = d.lanes[-1]
    state = next(o for o in d.outlines if o.lane == len(d.lanes) - 1 and o.table == "state_dict")
    assert lane.device == "meta" and lane.role == 'model.to("meta")'
    assert abs(state.label[1] - lane.title_at[1] - 0.45) < 1e-6  # on the title line's row


def test_a_lane_of_ghosts_has_its_own_outlines_which_fade_in() -> None:
    """buffer1 a buffer on cpu, then a plain tensor while the module moves to meta: it stays on cpu
    in no table, and its ghost stands there in the tables that listed it. The cpu lane's outlines
    are new to the picture (they fade in); the module's glide to meta under their old ids; every
    id of the picture is distinct."""
    before = memo.report(spec("testmodel", {"buffer1": "buffer"}, device="cpu"))
    after = memo.report(spec("testmodel", {"buffer1": "plain_tensor"}, device="meta"))
    moved = reference("testmodel", {**TUTORIAL_DEFAULTS["testmodel"], "buffer1": "plain_tensor"}).to("meta")
    assert moved.buffer1.device.type == "cpu" and "buffer1" not in moved.state_dict()
    old = diagram.draw(before, EN)
    d = diagram.draw(after, EN, before=before, diff=compare(before, after))
    ghost = d.ghost("buffer1")
    assert ghost is not None and lane_of(d, ghost).device == "cpu"
    assert outlines_around(d, ghost) == {"named_buffers", "state_dict"}
    cpu = [o for o in d.outlines if d.lanes[o.lane].device == "cpu"]
    assert {o.table for o in cpu} == {"named_buffers", "state_dict"} and all(o.fresh for o in cpu)
    meta = {o.table: o for o in d.outlines if d.lanes[o.lane].device == "meta"}
    assert {t: o.id for t, o in meta.items()} == {o.table: o.id for o in old.outlines}
    assert not any(o.fresh for o in meta.values())
    ids = [e.id for e in (*d.lanes, *d.boxes, *d.outlines, *d.chips)]
    assert len(ids) == len(set(ids))
