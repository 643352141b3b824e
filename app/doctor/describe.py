"""A checkpoint's contents in words and numbers: its tensors by location and as a tree by module
path, totals per dtype, storage shared between tensors, its other values; and the page's cut of it."""

from __future__ import annotations

import torch

from app.doctor.formats import Found, value_text
from app.doctor.report import (
    SHARED_NAMES,
    CheckpointReport,
    DtypeTotal,
    PageReport,
    TensorEntry,
    TreeNode,
    ValueEntry,
)

TREE_DEPTH = 32  # module-path segments in the tree; deeper ones stay joined in the last node


def _tree(entries: list[TensorEntry]) -> list[TreeNode]:
    """Nodes by module path: the location's segments, state_dict keys split on their dots.

    One pass: each node's children are found by name in a dict (the newest child of that name,
    as a tensor "a" then "a.b" puts b under the node of a).
    """
    root = TreeNode(name="", path="", tensors=0, elements=0, bytes=0)
    index: dict[int, dict[str, TreeNode]] = {}
    for entry in entries:
        node = root
        parts = [p for segment in entry.location for p in segment.split(".")]
        if len(parts) > TREE_DEPTH:
            parts = [*parts[: TREE_DEPTH - 1], ".".join(parts[TREE_DEPTH - 1 :])]
        for depth, part in enumerate(parts):
            node.tensors += 1
            node.elements += entry.elements
            node.bytes += entry.bytes
            children = index.setdefault(id(node), {})
            child = children.get(part)
            if child is None or depth == len(parts) - 1:
                child = TreeNode(name=part, path=".".join(parts[: depth + 1]), tensors=0, elements=0, bytes=0)
                node.children.append(child)
                children[part] = child
            node = child
        node.tensors, node.elements, node.bytes = 1, entry.elements, entry.bytes
        node.dtype, node.shape = entry.dtype, entry.shape
    _number_order(root)
    return root.children


def _number_order(root: TreeNode) -> None:
    """Siblings that are all numbers (layers.0, layers.1, ..., layers.10) in numeric order, not the
    file's; compared by length then digits, so a 5,000-digit name costs no int()."""
    pending = [root]
    while pending:
        node = pending.pop()
        if node.children and all(c.name.isdecimal() and c.name.isascii() for c in node.children):
            node.children.sort(key=lambda c: (len(c.name.lstrip("0")), c.name.lstrip("0")))
        pending.extend(node.children)


def describe(fmt: str, found: Found, metadata: dict[str, str], file_bytes: int) -> CheckpointReport:
    groups: dict[tuple[int, int], list[int]] = {}  # storage -> indexes of its tensors
    entries = []
    unplaced = 0  # bytes of tensors with no storage to share (described only, sparse, nested, empty)
    for location, t in found.tensors:
        if t.storage is not None:
            groups.setdefault(t.storage, []).append(len(entries))
        else:
            unplaced += t.bytes
        entries.append(
            TensorEntry(
                location=location,
                name=".".join(location),
                shape=t.shape,
                dtype=t.dtype,
                elements=t.elements,
                bytes=t.bytes,
                layout=t.layout,
                nested_shapes=t.nested_shapes,
            )
        )
    shared = [members for members in groups.values() if len(members) > 1]
    for number, members in enumerate(shared):
        # Each tensor names a few of its group, never the whole group: linear in the tensors.
        first = [entries[i].name for i in members[: SHARED_NAMES + 1]]
        for i in members:
            entries[i].shared_group = number
            entries[i].shared_with = [n for n in first if n != entries[i].name][:SHARED_NAMES]
    dtypes: dict[str, DtypeTotal] = {}
    for entry in entries:
        total = dtypes.setdefault(entry.dtype, DtypeTotal(tensors=0, elements=0, bytes=0))
        total.tensors += 1
        total.elements += entry.elements
        total.bytes += entry.bytes
    distinct = sum(nbytes for _, nbytes in groups)
    return CheckpointReport(
        format=fmt,
        file_bytes=file_bytes,
        tensors=entries,
        values=[
            ValueEntry(location=loc, name=".".join(loc), type=type(v).__name__, value=value_text(v))
            for loc, v in found.values
        ],
        tree=_tree(entries),
        dtypes=dtypes,
        total_elements=sum(e.elements for e in entries),
        total_bytes=sum(e.bytes for e in entries),
        unique_bytes=distinct + unplaced,
        shared=[[entries[i].name for i in members] for members in shared],
        state_dicts=[".".join(loc) for loc in found.state_dicts],
        metadata=metadata,
        torch_version=torch.__version__,
    )


def bounded(report: CheckpointReport, most: int) -> PageReport:
    """``report`` with at most ``most`` tree nodes, values, sharing groups (and names in each), state
    dicts, metadata items and keys of each kind in the load's outcome; the rest counted in hidden."""
    hidden: dict[str, int] = {}

    def cut(part: str, items: list) -> list:
        if len(items) > most:
            hidden[part] = hidden.get(part, 0) + len(items) - most
        return items[:most]

    tensors = len(report.tensors)
    report.tensors = []
    report.values = cut("values", report.values)
    report.shared = [cut("shared_names", group) for group in cut("shared", report.shared)]
    report.state_dicts = cut("state_dicts", report.state_dicts)
    report.metadata = dict(cut("metadata", list(report.metadata.items())))
    if report.load is not None:
        report.load.missing_keys = cut("missing_keys", report.load.missing_keys)
        report.load.unexpected_keys = cut("unexpected_keys", report.load.unexpected_keys)
        report.load.size_mismatches = cut("size_mismatches", report.load.size_mismatches)
    if report.shards is not None:
        report.shards.problems = cut("shard_problems", report.shards.problems)
    if report.load is not None:
        for cause in report.load.diagnosis.causes if report.load.diagnosis else []:
            cause.keys = cut("cause_keys", cause.keys)
            cause.details = cut("cause_details", cause.details)
            cause.groups = cut("cause_groups", cause.groups)
    left = [most]  # tree nodes still to show, depth first: a node's totals stay exact

    def prune(nodes: list[TreeNode]) -> list[TreeNode]:
        kept = []
        for node in nodes:
            if left[0] <= 0:
                break
            left[0] -= 1
            node.children = prune(node.children)
            kept.append(node)
        return kept

    all_nodes = _count(report.tree)
    report.tree = prune(report.tree)
    if all_nodes > most:
        hidden["tree"] = all_nodes - most
    return PageReport(report=report, tensors=tensors, hidden=hidden)


def _count(nodes: list[TreeNode]) -> int:
    count, pending = 0, list(nodes)
    while pending:
        node = pending.pop()
        count += 1
        pending.extend(node.children)
    return count
