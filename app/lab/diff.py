"""What changed between two lab reports: which rows appeared, disappeared or moved device.

The page uses it to highlight a change for a class and to announce it to screen readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.lab.inspect import LabReport

TABLES = ("named_parameters", "named_buffers", "state_dict")


@dataclass(frozen=True)
class TableDiff:
    added: frozenset[str] = frozenset()
    removed: tuple[str, ...] = ()
    moved: frozenset[str] = frozenset()  # same name, other device


@dataclass(frozen=True)
class LabDiff:
    preset: tuple[str, str] | None = None  # (before, after) when it changed
    device: tuple[str, str] | None = None
    styles: tuple[tuple[str, str, str], ...] = ()  # (member, before, after)
    tables: dict[str, TableDiff] = field(default_factory=dict)

    def row_state(self, table: str, name: str) -> str | None:
        """'added', 'moved' or None for a row of the new report."""
        diff = self.tables.get(table)
        if diff is None:
            return None
        if name in diff.added:
            return "added"
        return "moved" if name in diff.moved else None

    @property
    def empty(self) -> bool:
        return not (self.preset or self.device or self.styles)


ABSENT = "—"


def _table(before: list, after: list) -> TableDiff:
    old = {row.name: row.device for row in before}
    new = {row.name: row.device for row in after}
    return TableDiff(
        added=frozenset(new.keys() - old.keys()),
        removed=tuple(name for name in old if name not in new),
        moved=frozenset(name for name in new.keys() & old.keys() if new[name] != old[name]),
    )


def compare(before: LabReport | None, after: LabReport) -> LabDiff:
    if before is None:
        return LabDiff()
    a, b = before.spec, after.spec
    if a.preset != b.preset:
        # Another module altogether: every row is new, nothing is "removed" from it.
        return LabDiff(preset=(a.preset, b.preset))
    return LabDiff(
        device=(a.device, b.device) if a.device != b.device else None,
        # A custom member added or dropped shows "—" for the side it is missing from.
        styles=tuple(
            (m, a.styles.get(m, ABSENT), b.styles.get(m, ABSENT))
            for m in [*b.styles, *(m for m in a.styles if m not in b.styles)]
            if a.styles.get(m) != b.styles.get(m)
        ),
        tables={t: _table(getattr(before, t), getattr(after, t)) for t in TABLES},
    )
