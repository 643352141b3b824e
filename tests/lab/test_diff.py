"""What changed between two reports, read from torch's own tables of both: rows that came, went or
moved, every changed cell with its (before, after), a custom member added or removed."""

from __future__ import annotations

from app.lab import memo
from app.lab.diff import ABSENT, compare, with_matrix
from app.lab.matrix import matrix
from app.lab.spec import LabSpec, resolve
from tests.support.cases import CAP
from tests.support.reference import reference

DEVICES = ("cpu", "meta")


def spec(**fields: object) -> LabSpec:
    return resolve(LabSpec(**fields), DEVICES, CAP)


def test_a_move_marks_the_rows_torch_moved_and_their_device_cells() -> None:
    before, after = spec(preset="testmodel"), spec(preset="testmodel", device="meta")
    diff = compare(memo.report(before), memo.report(after))
    moved = reference("testmodel", before.styles).to("meta")
    assert diff.device == ("cpu", "meta") and diff.styles == ()
    for table, rows in (
        ("named_parameters", moved.named_parameters()),
        ("named_buffers", moved.named_buffers()),
    ):
        names = {n for n, _ in rows}
        assert diff.tables[table].moved == names and diff.tables[table].added == frozenset()
        assert all(diff.cell(table, n, "device") == ("cpu", "meta") for n in names)
    # buffer1 is a plain tensor: .to() leaves it behind, so its member row does not change
    assert diff.cell("members", "buffer1", "device_after") is None
    assert diff.cell("members", "buffer2", "device_after") == ("cpu", "meta")


def test_registering_a_tensor_adds_its_rows_and_flips_its_flags() -> None:
    before = spec(preset="testmodel")
    after = spec(preset="testmodel", styles={"buffer1": "buffer"})
    diff = compare(memo.report(before), memo.report(after))
    assert diff.styles == (("buffer1", "plain_tensor", "buffer"),)
    assert diff.row_state("named_buffers", "buffer1") == "added"
    assert diff.row_state("state_dict", "buffer1") == "added"
    assert diff.cell("members", "buffer1", "in_buffers") == (False, True)


def test_a_custom_member_removed_is_announced_as_one_added_is() -> None:
    one = spec(preset="custom", styles={"w": "buffer"})
    two = spec(preset="custom", styles={"w": "buffer", "v": "parameter"})
    added = compare(memo.report(one), memo.report(two))
    removed = compare(memo.report(two), memo.report(one))
    assert added.styles == (("v", ABSENT, "parameter"),)
    assert removed.styles == (("v", "parameter", ABSENT),)
    assert added.tables["named_parameters"].added == frozenset({"v"})
    assert removed.tables["named_parameters"].removed == ("v",)
    assert not removed.empty


def test_another_module_is_another_module_not_a_list_of_removals() -> None:
    diff = compare(memo.report(spec(preset="testmodel")), memo.report(spec(preset="mymodule")))
    assert diff.preset == ("testmodel", "mymodule") and diff.tables == {} and diff.styles == ()
    assert compare(None, memo.report(spec(preset="mymodule"))).empty


def test_matrix_cells_that_changed_carry_both_values() -> None:
    before, after = (
        spec(preset="testmodel"),
        spec(preset="testmodel", styles={"buffer2": "non_persistent_buffer"}),
    )
    diff = with_matrix(compare(memo.report(before), memo.report(after)), matrix(before), matrix(after))
    assert diff.cell("matrix", "buffer2", "in_state_dict") == (True, False)
    assert diff.cell("matrix", "buffer2", "moves_with_to") is None  # a buffer either way


def test_a_member_added_before_a_restyled_one_leaves_its_changes_said() -> None:
    """A custom module gains a member ahead of one whose style changes: the new member has no old
    cells to compare, and the restyled one's still count."""
    before = spec(preset="custom", styles={"a": "buffer"})
    after = spec(preset="custom", styles={"n": "parameter", "a": "non_persistent_buffer"})
    assert [r.member for r in matrix(after).rows][:2] == ["n", "a"]
    diff = with_matrix(compare(memo.report(before), memo.report(after)), matrix(before), matrix(after))
    state = dict(reference("custom", {"a": "buffer"}).state_dict())
    restyled = dict(reference("custom", {"a": "non_persistent_buffer"}).state_dict())
    assert ("a" in state, "a" in restyled) == (True, False)
    assert diff.cell("matrix", "a", "in_state_dict") == (True, False)
    assert "n" not in diff.matrix
