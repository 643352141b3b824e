"""The meta round trip against the same model built on the CPU: what no load restores, and the fix."""

from __future__ import annotations

import pytest
import torch

from app.architectures.roundtrip import round_trip
from tests.support.architectures import direct
from tests.support.scripts import run_scripts


@pytest.mark.parametrize("arch_id", ["llama_tiny", "bert_tiny", "gpt2_tiny"])
def test_meta_round_trip_flags_what_no_load_restores(arch_id: str) -> None:
    trip = round_trip(arch_id)
    reference = direct(arch_id, "cpu")
    non_persistent = [
        f"{path}.{leaf}" if path else leaf
        for path, m in reference.named_modules()
        for leaf in m._non_persistent_buffers_set
    ]
    assert sorted(trip.not_restorable) == sorted(non_persistent)
    if arch_id == "llama_tiny":
        assert "model.rotary_emb.inv_freq" in trip.not_restorable
    # Redo it here: meta, to_empty, load, then the fix exactly as the report prints it.
    model = direct(arch_id)
    model.to_empty(device="cpu")
    everyone = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    assert sorted(trip.uninitialised) == sorted(everyone)
    model.load_state_dict(reference.state_dict())
    untied = [g for g in trip.tied_before if model.get_parameter(g[0]) is not model.get_parameter(g[1])]
    assert trip.tied_after_to_empty == [] and untied == trip.tied_before
    want = dict(reference.named_parameters(remove_duplicate=False)) | dict(reference.named_buffers())
    got = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    assert sorted(trip.unequal_after_load) == sorted(n for n in got if not torch.equal(got[n], want[n]))
    assert set(trip.unequal_after_load) <= set(trip.not_restorable)
    rows = {r.name: r for r in trip.rows}
    assert {n: r.equal_after_load for n, r in rows.items()} == {n: torch.equal(got[n], want[n]) for n in got}
    assert {n: r.in_state_dict for n, r in rows.items()} == {n: n in reference.state_dict() for n in got}
    with torch.no_grad():
        exec(trip.fix_code, {"model": model, "not_restorable": trip.not_restorable})
    got = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    assert all(torch.equal(got[n], want[n]) for n in want) and trip.unequal_after_fix == []
    assert all(r.equal_after_fix for r in trip.rows)
    assert all(model.get_parameter(g[0]) is model.get_parameter(g[1]) for g in trip.tied_before)
    assert trip.tied_after_fix == trip.tied_before


@pytest.mark.parametrize("arch_id", ["gpt2_tiny", "llama_tiny", "bert_tiny"])
def test_each_row_is_a_parameter_or_a_buffer_as_torch_lists_it_a_tied_name_a_parameter(arch_id: str) -> None:
    trip = round_trip(arch_id)
    model = direct(arch_id, "cpu")
    parameters = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers())
    kinds = {r.name: r.kind for r in trip.rows}
    assert kinds == {n: "parameter" for n in parameters} | {n: "buffer" for n in buffers}
    # The second name of a tied weight: a parameter (named_parameters() lists it once, at its first name).
    second = [g[1] for g in trip.tied_before]
    assert second and all(kinds[n] == "parameter" and n not in dict(model.named_parameters()) for n in second)
    if arch_id == "gpt2_tiny":
        assert kinds["lm_head.weight"] == "parameter"


def test_the_round_trip_script_runs_and_checks_itself() -> None:
    arch_ids = ["llama_tiny", "gpt2_tiny", "bert_tiny", "resnet_tiny", "vit_tiny"]
    ran = run_scripts([round_trip(a).code for a in arch_ids], preload=("transformers",))
    for arch_id, result in zip(arch_ids, ran, strict=True):
        assert result.returncode == 0, (arch_id, result.stderr[-2000:])
        assert result.stdout.strip().endswith("different from the CPU-built model after the fix: []"), arch_id
        assert str(round_trip(arch_id).not_restorable) in result.stdout
