"""The allow-list of benign globals and the replay that tells where any other sits, without
importing or running anything of the file."""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch

from app.doctor.allowed import MAX_PLACES, REPLAYED_VALUES, allowance, replay
from tests.support.crafted import Payload


class Settings(collections.OrderedDict):
    pass


def test_a_namespace_is_allowed_and_a_dict_subclass_read_as_a_dict(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    torch.save({"args": argparse.Namespace(lr=1), "cfg": {"inner": Settings(a=1)}}, path)
    found = allowance(path, ["argparse.Namespace", f"{__name__}.Settings"], 1 << 20)
    assert found.refused is None and found.names == ["argparse.Namespace"]
    assert found.as_dict == [f"{__name__}.Settings"] and argparse.Namespace in found.globals
    with torch.serialization.safe_globals(found.globals):
        loaded = torch.load(path, weights_only=True)
    assert loaded["cfg"]["inner"] == {"a": 1} and type(loaded["cfg"]["inner"]) is collections.OrderedDict


def test_anything_else_is_refused_by_name_and_place_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(1), "hp": {"schedule": [Payload(marker)]}}, path)
    assert replay(path, 1 << 20).places["builtins.exec"] == ["hp.schedule.0"]
    found = allowance(path, ["builtins.exec"], 1 << 20)
    assert found.refused is not None and not marker.exists()
    assert "an object of builtins.exec at hp.schedule.0" in found.refused["en"]
    for legacy in (True, False):  # the legacy format's pickle is found after its three headers
        torch.save({"x": Payload(marker)}, path, _use_new_zipfile_serialization=not legacy)
        assert replay(path, 1 << 20).places == {"builtins.exec": ["x"]} and not marker.exists()


def test_a_refused_global_names_its_first_places_and_counts_the_rest(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    first = ", ".join(f"x.{i}" for i in range(MAX_PLACES))
    for count, rest in ((MAX_PLACES, ""), (MAX_PLACES + 1, " (+1)"), (MAX_PLACES + 4, " (+4)")):
        torch.save({"x": [Payload(marker) for _ in range(count)]}, path)
        found = allowance(path, ["builtins.exec"], 1 << 20)
        assert found.refused is not None
        assert f"an object of builtins.exec at {first}{rest}, a global torch" in found.refused["en"]
    assert not marker.exists()


def test_the_replay_follows_its_cap_of_values_and_no_more(tmp_path: Path) -> None:
    """The top dict, the list and its numbers come before the payload: it is found at the cap's
    last value, and its place is unknown one value past it."""
    marker = tmp_path / "ran"
    path = tmp_path / "big.pt"
    for numbers, found in ((REPLAYED_VALUES - 3, True), (REPLAYED_VALUES - 2, False)):
        torch.save({"a": list(range(numbers)), "z": Payload(marker)}, path)
        assert ("builtins.exec" in replay(path, 1 << 24).places) is found
    assert not marker.exists()
