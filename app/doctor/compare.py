"""Two checkpoints side by side: the keys only one has, shape, dtype and storage sharing changes,
and, for tensors up to a size cap, the largest absolute and relative difference of their values,
with NaN and Inf counted. Values are compared in chunks, so a tensor costs a few MiB of memory
beyond its own bytes however large it is.

Each side may be a state_dict inside its file (``--state-dict``); where every key of one side carries
a prefix the other's lacks (a wrapper's ``module.``, a Lightning file's ``state_dict.model.``), the
prefix is removed before the keys are paired, and the headline says so: "identical after removing
'module.' from b". Rows are also given grouped by pattern over layer indices.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from app.doctor.describe import describe
from app.doctor.files import classify
from app.doctor.formats import Found, read
from app.doctor.load import choose_state_dict, tensor_of
from app.doctor.patterns import group
from app.doctor.report import SHARED_NAMES, CheckpointReport, Limits, TensorEntry
from app.doctor.shards import read_shards
from app.langs import Text

CHUNK = 1 << 20  # elements compared at a time (8 MiB per side in float64)


class Row(BaseModel):
    key: str
    changes: list[str] = Field(
        description="only_in_a, only_in_b, shape, dtype, sharing, values, not_compared (over the cap)"
    )
    a: str | None = Field(description='Shape and dtype in a, e.g. "[3, 3] float32"; null if a lacks it.')
    b: str | None
    max_abs_diff: float | None = Field(None, description="Over the elements finite in both.")
    max_rel_diff: float | None = Field(None, description="|a - b| / max(|a|, |b|), over the same elements.")
    differing: int | None = Field(None, description="Elements that differ (NaN in one only counts).")
    nan: list[int] | None = Field(None, description="NaN elements in a and in b.")
    inf: list[int] | None = Field(None, description="Inf elements in a and in b.")
    shared_a: list[str] = Field(default_factory=list, description="Tensors it shares storage with in a.")
    shared_b: list[str] = Field(default_factory=list)


class Summary(BaseModel):
    tensors_a: int
    tensors_b: int
    common: int
    only_in_a: int
    only_in_b: int
    shape_changes: int
    dtype_changes: int
    sharing_changes: int
    values_compared: int
    values_differ: int
    not_compared: int = Field(description="Common tensors over the size cap, or of a kind not compared.")
    max_abs_diff: float | None
    max_rel_diff: float | None
    nan_a: int
    nan_b: int
    inf_a: int
    inf_b: int


class RowGroup(BaseModel):
    pattern: str = Field(description="The rows' keys as one pattern: h.{0..11}.attn.c_attn.weight")
    count: int
    changes: list[str]
    a: str | None
    b: str | None
    max_abs_diff: float | None = Field(None, description="The largest over the group's rows.")


class Comparison(BaseModel):
    a: list[str] = Field(description="The file names of a (several: its shards).")
    b: list[str]
    format_a: str
    format_b: str
    value_max_elements: int = Field(description="Tensors with more elements are compared by shape only.")
    identical: bool = Field(description="Same keys, shapes, dtypes, sharing and values.")
    summary: Summary
    rows: list[Row] = Field(description="One per key that differs in any way, in a's order then b's.")
    rows_left_out: int = Field(0, description="Rows the page leaves out (the JSON API has them all).")
    state_dict_a: str | None = Field(
        None, description="The state_dict of a compared ('' the top; null: the file)."
    )
    state_dict_b: str | None = None
    prefix_a: str = Field("", description="Removed from every key of a before pairing (e.g. module.).")
    prefix_b: str = ""
    identical_after_renaming: bool = Field(
        False, description="Identical once prefix_a and prefix_b are removed (identical: without removing)."
    )
    headline: dict[str, str] = Field(
        default_factory=dict, description="What the comparison found, by language."
    )
    groups: list[RowGroup] = Field(default_factory=list, description="The rows by pattern and change.")


def bounded(comparison: Comparison, most: int) -> Comparison:
    """At most ``most`` rows, for the page; the summary stays exact."""
    comparison.rows_left_out = max(len(comparison.rows) - most, 0)
    comparison.rows = comparison.rows[:most]
    return comparison


@dataclass
class _Side:
    path: Path
    fmt: str
    found: Found
    report: CheckpointReport
    at: str | None = None  # the state_dict compared; None: every tensor of the file
    prefix: str = ""
    names: dict[str, str] | None = None  # key compared -> the tensor's name in the report

    def entries(self) -> dict[str, TensorEntry]:
        """The tensors compared, by key: every one of the file, or the state_dict's by its keys;
        without the prefix removed."""
        tensors = self.report.tensors
        if self.at is not None:
            depth = len(self.at.split(".")) if self.at else 0
            tensors = [t for t in tensors if ".".join(t.location[:-1]) == self.at]
            named = {".".join(t.location[depth:]): t for t in tensors}
        else:
            named = {t.name: t for t in tensors}
        out = {}
        self.names = {}
        for key, entry in named.items():
            short = key.removeprefix(self.prefix)
            out[short] = entry
            self.names[short] = entry.name
        return out


def _read_side(paths: list[Path], names: list[str], limits: Limits, at: str | None) -> _Side:
    files = classify(paths, names, limits)
    if files.one:
        fmt, found, metadata = read(files.weights[0][0], limits)
    else:
        fmt, found, metadata, _ = read_shards(files, limits)
    report = describe(fmt, found, metadata, sum(p.stat().st_size for p in paths))
    side = _Side(files.weights[0][0], fmt, found, report)
    if at is not None:
        side.at = choose_state_dict(report, at)
    return side


def _prefixes(a: _Side, b: _Side) -> None:
    """Remove, from each side, the prefix all its keys share (module., _orig_mod., state_dict.model.)
    as deep as makes the most keys of the two sides meet; none where nothing is gained."""
    options_a, options_b = _strippable(set(a.entries())), _strippable(set(b.entries()))
    best, meeting = ("", ""), len(set(a.entries()) & set(b.entries()))
    for prefix_a, keys_a in options_a:
        for prefix_b, keys_b in options_b:
            met = len(keys_a & keys_b)
            if met > meeting:
                best, meeting = (prefix_a, prefix_b), met
    a.prefix, b.prefix = best


def _strippable(keys: set[str]) -> list[tuple[str, set[str]]]:
    """(prefix, the keys without it) for each depth of a prefix every key shares, "" first."""
    out = [("", keys)]
    prefix = ""
    for _ in range(4):
        firsts = {k.partition(".")[0] for k in keys}
        if len(firsts) != 1 or not all("." in k for k in keys):
            break
        first = firsts.pop() + "."
        prefix += first
        keys = {k.removeprefix(first) for k in keys}
        out.append((prefix, keys))
    return out


def _label(entry: object) -> str:
    return f"{entry.shape} {entry.dtype}"  # type: ignore[attr-defined]


def _comparable(t: torch.Tensor) -> bool:
    return t.layout == torch.strided and not t.is_nested and not t.is_meta and not t.is_quantized


@dataclass
class _Values:
    max_abs: float = 0.0
    max_rel: float = 0.0
    differing: int = 0
    nan: tuple[int, int] = (0, 0)
    inf: tuple[int, int] = (0, 0)


def compare_values(a: torch.Tensor, b: torch.Tensor) -> _Values:
    """The differences of two tensors of one shape, chunk by chunk, in float64 (complex128)."""
    wide = torch.complex128 if a.is_complex() or b.is_complex() else torch.float64
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    out = _Values()
    nan, inf = [0, 0], [0, 0]
    for start in range(0, flat_a.numel(), CHUNK):
        raw_a, raw_b = flat_a[start : start + CHUNK], flat_b[start : start + CHUNK]
        if raw_a.dtype == raw_b.dtype and torch.equal(raw_a, raw_b):  # bit for bit (no NaN: NaN != NaN)
            if raw_a.is_floating_point() or raw_a.is_complex():
                count = int(raw_a.isinf().sum())
                inf = [inf[0] + count, inf[1] + count]
            continue
        x, y = raw_a.to(wide), raw_b.to(wide)  # may be the file's own tensors: never changed in place
        finite_x, finite_y = x.isfinite(), y.isfinite()
        if bool(finite_x.all()) and bool(finite_y.all()):  # the usual case: no mask needed
            diff = (x - y).abs()  # real, for complex too
            out.differing += int(diff.count_nonzero())
            out.max_abs = max(out.max_abs, float(diff.max()))
            rel = diff.div_(torch.maximum(x.abs(), y.abs())).nan_to_num_(0.0)  # 0 / 0 where both are 0
            out.max_rel = max(out.max_rel, float(rel.max()))
            continue
        nan_x, nan_y = x.isnan(), y.isnan()
        inf_x, inf_y = x.isinf(), y.isinf()
        nan = [nan[0] + int(nan_x.sum()), nan[1] + int(nan_y.sum())]
        inf = [inf[0] + int(inf_x.sum()), inf[1] + int(inf_y.sum())]
        finite = finite_x & finite_y
        diff = (x - y).abs()
        same = (finite & (diff == 0)) | (nan_x & nan_y) | (inf_x & inf_y & (x == y))
        out.differing += int((~same).sum())
        if bool(finite.any()):
            diff, x, y = diff[finite], x[finite], y[finite]
            out.max_abs = max(out.max_abs, float(diff.max()))
            rel = diff.div_(torch.maximum(x.abs(), y.abs())).nan_to_num_(0.0)
            out.max_rel = max(out.max_rel, float(rel.max()))
    out.nan, out.inf = (nan[0], nan[1]), (inf[0], inf[1])
    return out


def compare_checkpoints(
    a_paths: list[Path],
    a_names: list[str],
    b_paths: list[Path],
    b_names: list[str],
    limits: Limits,
    value_max_elements: int,
    at_a: str | None = None,
    at_b: str | None = None,
) -> Comparison:
    a = _read_side(a_paths, a_names, limits, at_a)
    b = _read_side(b_paths, b_names, limits, at_b)
    _prefixes(a, b)
    with ExitStack() as stack:  # the safetensors files it opens, closed once compared
        rows, summary = _Pairing(a, b, _Reader(a, stack), _Reader(b, stack), value_max_elements).rows()
    renamed = bool(a.prefix or b.prefix)
    return Comparison(
        a=a_names,
        b=b_names,
        format_a=a.fmt,
        format_b=b.fmt,
        value_max_elements=value_max_elements,
        identical=not rows and not renamed,
        summary=summary,
        rows=rows,
        state_dict_a=a.at,
        state_dict_b=b.at,
        prefix_a=a.prefix,
        prefix_b=b.prefix,
        identical_after_renaming=not rows,
        headline=dict(_headline(rows, summary, a.prefix, b.prefix)),
        groups=_grouped(rows),
    )


def _headline(rows: list[Row], summary: Summary, prefix_a: str, prefix_b: str) -> Text:
    removed = " and ".join(f"{p!r} from {side}" for p, side in ((prefix_a, "a"), (prefix_b, "b")) if p)
    if not rows and removed:
        return Text(
            "identical after removing {removed}: same tensors, shapes, dtypes and values", removed=removed
        )
    if not rows:
        return Text("identical: same keys, shapes, dtypes, sharing and values")
    differ = Text(
        "they differ in {rows} of {keys} keys: {only_a} only in a, {only_b} only in b, {shapes} shapes, "
        "{dtypes} dtypes, {values} values",
        rows=len(rows),
        keys=summary.common + summary.only_in_a + summary.only_in_b,
        only_a=summary.only_in_a,
        only_b=summary.only_in_b,
        shapes=summary.shape_changes,
        dtypes=summary.dtype_changes,
        values=summary.values_differ,
    )
    if removed:
        return Text("{differ} (after removing {removed})", differ=differ, removed=removed)
    return differ


def _grouped(rows: list[Row]) -> list[RowGroup]:
    by_key = {row.key: row for row in rows}
    out = []
    for (changes, a, b), pattern in group(
        by_key, lambda k: (tuple(by_key[k].changes), by_key[k].a, by_key[k].b)
    ):  # type: ignore[misc]
        diffs = [by_key[k].max_abs_diff for k in pattern.members() if by_key[k].max_abs_diff is not None]
        out.append(
            RowGroup(
                pattern=str(pattern),
                count=pattern.count,
                changes=list(changes),
                a=a,
                b=b,
                max_abs_diff=max(diffs) if diffs else None,
            )
        )
    return out


class _Pairing:
    """Each key of a beside the same key of b."""

    def __init__(self, a: _Side, b: _Side, read_a: _Reader, read_b: _Reader, value_max_elements: int) -> None:
        self.read_a, self.read_b, self.cap = read_a, read_b, value_max_elements
        self.entries_a, self.entries_b = a.entries(), b.entries()
        self.names_a, self.names_b = a.names or {}, b.names or {}
        self.groups_a, self.groups_b = _Groups(a.report, self.names_a), _Groups(b.report, self.names_b)
        self.seen: dict[tuple[int, int], bool] = {}

    def rows(self) -> tuple[list[Row], Summary]:
        entries_a, entries_b, groups_a, groups_b = (
            self.entries_a,
            self.entries_b,
            self.groups_a,
            self.groups_b,
        )
        rows: list[Row] = []
        counts = dict.fromkeys(("shape", "dtype", "sharing", "values", "not_compared", "compared"), 0)
        totals = _Values()
        nan, inf = [0, 0], [0, 0]
        any_compared = False
        for name, ea in entries_a.items():
            eb = entries_b.get(name)
            if eb is None:
                rows.append(Row(key=name, changes=["only_in_a"], a=_label(ea), b=None))
                continue
            changes: list[str] = []
            row = Row(key=name, changes=changes, a=_label(ea), b=_label(eb))
            if ea.shape != eb.shape or ea.layout != eb.layout:
                changes.append("shape")
            if ea.dtype != eb.dtype:
                changes.append("dtype")
            if not _same_sharing(groups_a, groups_b, name, self.seen):
                changes.append("sharing")
                row.shared_a, row.shared_b = groups_a.partners(name), groups_b.partners(name)
            if "shape" not in changes:
                values = _values(
                    self.read_a, self.read_b, (self.names_a[name], self.names_b[name]), ea, self.cap
                )
                if values is None:
                    changes.append("not_compared")
                else:
                    any_compared = True
                    counts["compared"] += 1
                    row.max_abs_diff, row.max_rel_diff = values.max_abs, values.max_rel
                    row.differing, row.nan, row.inf = values.differing, list(values.nan), list(values.inf)
                    totals.max_abs = max(totals.max_abs, values.max_abs)
                    totals.max_rel = max(totals.max_rel, values.max_rel)
                    nan = [nan[0] + values.nan[0], nan[1] + values.nan[1]]
                    inf = [inf[0] + values.inf[0], inf[1] + values.inf[1]]
                    if values.differing:
                        changes.append("values")
            for change in changes:
                counts[change] += 1
            if changes:
                row.changes = changes  # the model holds a copy of the list it was given
                rows.append(row)
        rows += [
            Row(key=n, changes=["only_in_b"], a=None, b=_label(e))
            for n, e in entries_b.items()
            if n not in entries_a
        ]
        common = sum(1 for n in entries_a if n in entries_b)
        summary = Summary(
            tensors_a=len(entries_a),
            tensors_b=len(entries_b),
            common=common,
            only_in_a=len(entries_a) - common,
            only_in_b=len(entries_b) - common,
            shape_changes=counts["shape"],
            dtype_changes=counts["dtype"],
            sharing_changes=counts["sharing"],
            values_compared=counts["compared"],
            values_differ=counts["values"],
            not_compared=counts["not_compared"],
            max_abs_diff=totals.max_abs if any_compared else None,
            max_rel_diff=totals.max_rel if any_compared else None,
            nan_a=nan[0],
            nan_b=nan[1],
            inf_a=inf[0],
            inf_b=inf[1],
        )
        return rows, summary


class _Groups:
    """Which tensors share storage, by name: each group built once, compared once per pair of
    groups (12,000 views of one storage cost no 12,000 x 12,000 comparisons)."""

    def __init__(self, report: CheckpointReport, keys: dict[str, str]) -> None:
        """``keys``: each key compared -> its tensor's name in ``report``; groups are of keys."""
        by_name = {name: key for key, name in keys.items()}
        self.of: dict[str, tuple[list[str], frozenset[str]]] = {}
        for names in report.shared:
            members = [by_name[n] for n in names if n in by_name]
            entry = (members, frozenset(members))
            for key in members:
                self.of[key] = entry

    def partners(self, name: str) -> list[str]:
        group = self.of.get(name, ([], frozenset()))[0]
        return [n for n in group[: SHARED_NAMES + 1] if n != name][:SHARED_NAMES]


_EMPTY: frozenset[str] = frozenset()


def _same_sharing(a: _Groups, b: _Groups, name: str, seen: dict[tuple[int, int], bool]) -> bool:
    ga, gb = a.of.get(name, ([], _EMPTY))[1], b.of.get(name, ([], _EMPTY))[1]
    pair = (id(ga), id(gb))
    if pair not in seen:
        seen[pair] = ga == gb
    return seen[pair]


class _Reader:
    """Tensors by name from one side; each safetensors file opened once (its header parsed once)."""

    def __init__(self, side: _Side, stack: ExitStack) -> None:
        self.side, self.stack = side, stack
        self.handles: dict[Path, object] = {}

    def __call__(self, name: str) -> torch.Tensor:
        side = self.side
        if side.fmt != "safetensors":
            return tensor_of(side.path, side.fmt, side.found, name)
        source = side.found.sources.get(name, side.path)
        if source not in self.handles:
            from safetensors import safe_open

            self.handles[source] = self.stack.enter_context(safe_open(str(source), framework="pt"))
        return self.handles[source].get_tensor(name)  # type: ignore[attr-defined]


def _values(a: _Reader, b: _Reader, names: tuple[str, str], entry: object, cap: int) -> _Values | None:
    if entry.elements > cap or not hasattr(torch, entry.dtype):  # type: ignore[attr-defined]
        return None  # over the cap, or a type torch has not (safetensors F6, F4)
    x, y = a(names[0]), b(names[1])
    if not (_comparable(x) and _comparable(y)) or x.shape != y.shape:
        return None
    return compare_values(x, y)
