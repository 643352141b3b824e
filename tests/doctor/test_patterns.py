"""Keys said by pattern over layer indices: each pattern stands for exactly its keys, and the code
written for a list of keys evaluates to exactly that list."""

from __future__ import annotations

import pytest

from app.doctor.patterns import group, keys_code, runs

GPT2 = [f"h.{i}.{m}.{p}" for i in range(12) for m in ("ln_1", "ln_2") for p in ("weight", "bias")]


def test_layers_and_words_fold_into_one_pattern() -> None:
    ((_, pattern),) = group(GPT2)
    assert str(pattern) == "h.{0..11}.{ln_1,ln_2}.{weight,bias}" and pattern.count == len(GPT2)
    assert sorted(pattern.members()) == sorted(GPT2)


@pytest.mark.parametrize(
    "keys",
    [
        GPT2,
        # twelve experts in layer 0, four in layer 1: no product, so two patterns
        [f"l.0.e.{j}.w" for j in range(12)] + [f"l.1.e.{j}.w" for j in range(4)],
        ["h.0.x", "h.2.x", "h.3.x", "h.4.x", "h.7.x", "wte.weight", "007.x", "h.00.x"],
        [f'a"{{b}}\\.{i}.w' for i in range(10)],
        [f"layers.{i}.w" for i in range(2, 12)],  # a range that starts past 0
    ],
)
def test_each_pattern_stands_for_exactly_its_keys(keys: list[str]) -> None:
    patterns = group(keys)
    members = [k for _, p in patterns for k in p.members()]
    assert sorted(members) == sorted(keys) and sum(p.count for _, p in patterns) == len(keys)
    assert sorted(eval(keys_code(keys))) == sorted(keys)


def test_labels_keep_apart_what_differs() -> None:
    shapes = {"h.0.w": (3,), "h.1.w": (3,), "h.2.w": (4,)}
    found = [(label, str(p)) for label, p in group(list(shapes), shapes.__getitem__)]
    assert found == [((3,), "h.{0,1}.w"), ((4,), "h.2.w")]


def test_runs_of_three_or_more_are_ranges() -> None:
    assert runs((0, 1, 2, 3, 7, 9, 10, 11)) == ["0..3", "7", "9..11"]
    assert runs((4, 5)) == ["4,5"]


def test_a_few_keys_are_written_out_many_by_pattern() -> None:
    assert keys_code(["a.b", "c"]) == '["a.b", "c"]'
    assert keys_code([f"layers.{i}.w" for i in range(2, 12)]) == '[f"layers.{i}.w" for i in range(2, 12)]'
    assert keys_code(GPT2) == (
        '[f"h.{i}.{j}.{k}" for i in range(12) for j in ("ln_1", "ln_2") for k in ("weight", "bias")]'
    )


def test_a_position_lists_a_few_words_at_most() -> None:
    keys = [f"module.odd_{i}" for i in range(30)]
    patterns = [p for _, p in group(keys)]
    assert all(len(p.parts[1]) <= 8 for p in patterns) and sum(p.count for p in patterns) == 30
