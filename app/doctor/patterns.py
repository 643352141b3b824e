"""Keys said by pattern over their layer indices: ``h.{0..11}.attn.c_attn.weight`` for twelve keys, and
``h.{0..11}.{ln_1,ln_2}.{weight,bias}`` for forty-eight. A pattern stands for exactly its keys (never
a key more), so a report can print one line per pattern and a fix can loop over it.

Pure Python: the diagnosis groups torch's keys with it, the command line prints them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from itertools import product

KEYS_IN_CODE = 8  # at most this many keys are written out one by one in code; more, by pattern
MAX_WORDS = 8  # words one position of a pattern may list ({ln_1,ln_2}); more stay apart, one line each


def _number(segment: str) -> bool:
    return segment.isascii() and segment.isdecimal() and (segment == "0" or not segment.startswith("0"))


@dataclass(frozen=True)
class Pattern:
    """Keys of ``len(parts)`` dot-separated segments: each part is a tuple of the words it takes
    (one word, or alternatives) or, at a layer index, a tuple of ints; the keys are the product."""

    parts: tuple[tuple[str, ...] | tuple[int, ...], ...]
    numeric: tuple[bool, ...]
    count: int

    def __str__(self) -> str:
        return ".".join(_part_text(p, n) for p, n in zip(self.parts, self.numeric, strict=True))

    def members(self) -> list[str]:
        return [".".join(map(str, combo)) for combo in product(*self.parts)]


def _part_text(values: tuple, numeric: bool) -> str:
    if len(values) == 1:
        return str(values[0])
    if numeric:
        return "{" + ",".join(runs(values)) + "}"
    return "{" + ",".join(values) + "}"


def runs(numbers: tuple[int, ...]) -> list[str]:
    """0,1,2,3,7,9,10,11 -> 0..3, 7, 9..11 (a run of three or more as a range)."""
    out: list[str] = []
    ordered = sorted(numbers)
    start = prev = ordered[0]
    for n in [*ordered[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(f"{start}..{prev}" if prev - start >= 2 else ",".join(map(str, range(start, prev + 1))))
        if n is not None:
            start = prev = n
    return out


def group(
    keys: Iterable[str], label: Callable[[str], Hashable] = lambda _: None
) -> list[tuple[Hashable, Pattern]]:
    """``keys`` as patterns, keys of one label only in one pattern; in the order of each pattern's first
    key. A pattern holds exactly its keys: a set that is no product is split until each part is."""
    templates: dict[tuple, list[tuple[int, ...]]] = {}
    for key in keys:
        segments = key.split(".")
        numeric = tuple(_number(s) for s in segments)
        template = tuple("#" if n else s for s, n in zip(segments, numeric, strict=True))
        numbers = tuple(int(s) for s, n in zip(segments, numeric, strict=True) if n)
        templates.setdefault((label(key), template, numeric), []).append(numbers)
    patterns: list[tuple[Hashable, Pattern]] = []
    for (tag, template, numeric), rows in templates.items():
        for columns in _products(rows):
            patterns.append((tag, _pattern(template, numeric, columns)))
    return _merged(patterns)


def _products(rows: list[tuple[int, ...]]) -> list[list[tuple[int, ...]]]:
    """The index tuples as products of per-position sets: one if they are one, else split by the
    first position (and again inside) until each part is."""
    if not rows or not rows[0]:
        return [[()]] if rows else []
    unique = list(dict.fromkeys(rows))
    columns = [tuple(dict.fromkeys(r[i] for r in unique)) for i in range(len(unique[0]))]
    size = 1
    for column in columns:
        size *= len(column)
    if size == len(unique):
        return [columns]
    out = []
    by_first: dict[int, list[tuple[int, ...]]] = {}
    for r in unique:
        by_first.setdefault(r[0], []).append(r[1:])
    # indices whose rest is the same product are kept together: h.{0..3}.x and h.{4,5}.y
    together: dict[tuple, list[int]] = {}
    for first, rest in by_first.items():
        for part in _products(rest):
            together.setdefault(tuple(part), []).append(first)
    for rest, firsts in together.items():
        out.append([tuple(firsts), *rest])
    return out


def _pattern(template: tuple[str, ...], numeric: tuple[bool, ...], columns: list[tuple[int, ...]]) -> Pattern:
    parts: list[tuple] = []
    it = iter(columns)
    count = 1
    for segment, is_number in zip(template, numeric, strict=True):
        part = next(it) if is_number else (segment,)
        count *= len(part)
        parts.append(part)
    return Pattern(tuple(parts), numeric, count)


def _merged(patterns: list[tuple[Hashable, Pattern]]) -> list[tuple[Hashable, Pattern]]:
    """Patterns of one label that differ in one word position only, as one: {ln_1,ln_2}."""
    changed = True
    while changed:
        changed = False
        for position in range(max((len(p.parts) for _, p in patterns), default=0)):
            buckets: dict[tuple, int] = {}
            out: list[tuple[Hashable, Pattern]] = []
            for tag, p in patterns:
                if position >= len(p.parts) or p.numeric[position]:
                    out.append((tag, p))
                    continue
                rest = (tag, p.numeric, p.parts[:position], p.parts[position + 1 :])
                words = (
                    tuple(dict.fromkeys(out[buckets[rest]][1].parts[position] + p.parts[position]))
                    if rest in buckets
                    else ()
                )
                if rest in buckets and len(words) <= MAX_WORDS:
                    i = buckets[rest]
                    other = out[i][1]
                    parts = (*other.parts[:position], words, *other.parts[position + 1 :])
                    out[i] = (tag, Pattern(parts, p.numeric, other.count + p.count))
                    changed = True
                else:
                    buckets[rest] = len(out)
                    out.append((tag, p))
            patterns = out
    return patterns


def keys_code(keys: list[str]) -> str:
    """A Python expression for the list of ``keys`` (in some order), short however many there are:
    the keys themselves up to KEYS_IN_CODE, else a comprehension per pattern."""
    if len(keys) <= KEYS_IN_CODE:
        return json.dumps(keys, ensure_ascii=False)
    pieces = [_comprehension(p) for _, p in group(keys)]
    explicit = json.dumps(keys, ensure_ascii=False)
    code = " + ".join(pieces)
    return code if len(code) < len(explicit) else explicit


def _comprehension(p: Pattern) -> str:
    if p.count == 1:
        return json.dumps(p.members(), ensure_ascii=False)
    names = iter("ijklmnabcdefgh")
    text, loops = [], []
    for values, numeric in zip(p.parts, p.numeric, strict=True):
        if len(values) == 1:
            literal = json.dumps(str(values[0]), ensure_ascii=False)[1:-1]
            text.append(literal.replace("{", "{{").replace("}", "}}"))
            continue
        name = next(names)
        text.append("{" + name + "}")
        ordered = sorted(values) if numeric else values
        if numeric and list(ordered) == list(range(ordered[0], ordered[-1] + 1)):
            source = (
                f"range({ordered[-1] + 1})" if ordered[0] == 0 else f"range({ordered[0]}, {ordered[-1] + 1})"
            )
        else:
            source = "(" + ", ".join(json.dumps(v, ensure_ascii=False) for v in values) + ")"
        loops.append(f"for {name} in {source}")
    return f'[f"{".".join(text)}" {" ".join(loops)}]'
