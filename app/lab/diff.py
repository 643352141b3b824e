"""What changed between two lab reports: rows that appeared, disappeared or moved, and every cell
whose value changed (device, dtype, shape, requires_grad, persistent, a member's flags, a matrix
cell), each as (before, after).

The page marks each changed fact where it stands and announces the changes in words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from app.lab.matrix import Matrix
from app.lab.report import LabReport

TABLES = ("named_parameters", "named_buffers", "state_dict")
# The member row's facts that a change of style or device can change.
MEMBER_FIELDS = ("in_parameters", "in_buffers", "in_state_dict", "device_after")
Change = tuple[object, object]  # (before, after)


@dataclass(frozen=True)
class TableDiff:
    added: frozenset[str] = frozenset()
    removed: tuple[str, ...] = ()
    moved: frozenset[str] = frozenset()  # same name, other device
    cells: dict[str, dict[str, Change]] = field(default_factory=dict)  # row -> field -> change


@dataclass(frozen=True)
class LabDiff:
    preset: tuple[str, str] | None = None  # (before, after) when it changed
    device: tuple[str, str] | None = None
    styles: tuple[tuple[str, str, str], ...] = ()  # (member, before, after)
    tables: dict[str, TableDiff] = field(default_factory=dict)
    members: dict[str, dict[str, Change]] = field(default_factory=dict)  # member -> field -> change
    matrix: dict[str, dict[str, Change]] = field(default_factory=dict)  # member -> column -> change

    def row_state(self, table: str, name: str) -> str | None:
        """'added', 'moved' or None for a row of the new report."""
        diff = self.tables.get(table)
        if diff is None:
            return None
        if name in diff.added:
            return "added"
        return "moved" if name in diff.moved else None

    def cell(self, table: str, name: str, column: str) -> Change | None:
        """(before, after) where this cell's value changed; None where it did not (or is new)."""
        if table == "members":
            return self.members.get(name, {}).get(column)
        if table == "matrix":
            return self.matrix.get(name, {}).get(column)
        diff = self.tables.get(table)
        return diff.cells.get(name, {}).get(column) if diff else None

    @property
    def empty(self) -> bool:
        return not (self.preset or self.device or self.styles)


ABSENT = "—"


def _changes(before: BaseModel, after: BaseModel, fields: tuple[str, ...]) -> dict[str, Change]:
    return {
        f: (getattr(before, f), getattr(after, f)) for f in fields if getattr(before, f) != getattr(after, f)
    }


def _table(before: list, after: list) -> TableDiff:
    old = {row.name: row for row in before}
    new = {row.name: row for row in after}
    both = [name for name in new if name in old]
    fields = tuple(f for f in type(after[0]).model_fields if f != "name") if after else ()
    cells = {name: c for name in both if (c := _changes(old[name], new[name], fields))}
    return TableDiff(
        added=frozenset(new.keys() - old.keys()),
        removed=tuple(name for name in old if name not in new),
        moved=frozenset(name for name in both if new[name].device != old[name].device),
        cells=cells,
    )


def compare(before: LabReport | None, after: LabReport) -> LabDiff:
    if before is None:
        return LabDiff()
    a, b = before.spec, after.spec
    if a.preset != b.preset:
        # Another module altogether: every row is new, nothing is "removed" from it.
        return LabDiff(preset=(a.preset, b.preset))
    old_members = {m.name: m for m in before.members}
    return LabDiff(
        device=(a.device, b.device) if a.device != b.device else None,
        # A custom member added or dropped shows "—" for the side it is missing from.
        styles=tuple(
            (m, a.styles.get(m, ABSENT), b.styles.get(m, ABSENT))
            for m in [*b.styles, *(m for m in a.styles if m not in b.styles)]
            if a.styles.get(m) != b.styles.get(m)
        ),
        tables={t: _table(getattr(before, t), getattr(after, t)) for t in TABLES},
        members={
            m.name: c
            for m in after.members
            if m.name in old_members and (c := _changes(old_members[m.name], m, MEMBER_FIELDS))
        },
    )


def with_matrix(diff: LabDiff, before: Matrix | None, after: Matrix) -> LabDiff:
    """``diff`` with the matrix cells that changed (matrices of the two specs, same module)."""
    if before is None or diff.preset:
        return diff
    old = {row.member: row.cells for row in before.rows}
    changed = {}
    for row in after.rows:
        cells = old.get(row.member)
        if cells is None:
            continue
        c = {k: (cells.get(k), v) for k, v in row.cells.items() if cells.get(k) != v}
        if c:
            changed[row.member] = c
    return LabDiff(**{**diff.__dict__, "matrix": changed})
