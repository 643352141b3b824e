"""A pasted config built in a child process: the same report as made here directly, and a config that
asks for too much memory or time stopped by its limit, the answer naming the setting and the
config's largest sizes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time

import pytest
import torch

from app.architectures import configs, isolated
from app.architectures.catalogue import ArchitectureError
from app.architectures.module_tree import module_tree
from app.architectures.planner import PlanInput, checked, facts
from app.architectures.saving import saving
from tests.support.architectures import LLAMA_CONFIG

BUDGET = isolated.Budget(memory_bytes=2 * 1024**3, seconds=60)


def test_the_childs_report_is_the_one_made_directly() -> None:
    config = configs.read(json.dumps(LLAMA_CONFIG))
    asked = {"batch": 2, "tokens": 16, "image": None, "context": 32}
    got = isolated.ConfigReport.model_validate_json(
        isolated.run(config, asked, [("cuda:9 test", 10**9)], BUDGET)
    )
    here = isolated.report(config, asked, [("cuda:9 test", 10**9)])
    assert got == here
    model = configs.build(config, "meta")
    expected = module_tree(model)
    expected.saving = saving(model)
    assert got.tree == expected
    assert got.c == configs.encode(config) and got.class_name == "LlamaForCausalLM"
    assert got.plan is not None and got.plan.recipes[0].cards[-1].name == "cuda:9 test"
    assert got.plan.input == PlanInput(batch=2, tokens=16, context=32)  # what was asked, not defaults
    assert got.roundtrip is not None and got.roundtrip.unequal_after_fix == []
    assert "model.rotary_emb.inv_freq" in got.roundtrip.not_restorable


def test_a_config_refused_in_the_child_names_its_field() -> None:
    config = configs.read(json.dumps({**LLAMA_CONFIG, "num_attention_heads": 7}))
    with pytest.raises(ArchitectureError, match=r"(?s)^hidden_size: .*not a multiple") as refused:
        isolated.run(config, {}, [], BUDGET)
    assert refused.value.status == 422


def test_memory_over_the_limit_is_a_413_naming_the_setting() -> None:
    # About 51 MB of float32 weights: small enough for the round trip, which builds it twice for
    # real, over a budget of 80 MB.
    config = configs.read(json.dumps({**LLAMA_CONFIG, "vocab_size": 100_000, "hidden_size": 64}))
    with pytest.raises(ArchitectureError, match="MRE_ARCHITECTURE_CONFIG_MEMORY_BYTES") as refused:
        isolated.run(config, {}, [], isolated.Budget(memory_bytes=80 * 1024**2, seconds=60))
    assert refused.value.status == 413 and "vocab_size=100,000" in str(refused.value)


def test_time_over_the_limit_is_a_504_naming_the_setting() -> None:
    config = configs.read(json.dumps({**LLAMA_CONFIG, "num_hidden_layers": 20_000}))
    with pytest.raises(ArchitectureError, match="MRE_ARCHITECTURE_CONFIG_SECONDS") as refused:
        isolated.run(config, {}, [], isolated.Budget(memory_bytes=4 * 1024**3, seconds=2))
    assert refused.value.status == 504 and "num_hidden_layers=20,000" in str(refused.value)


def test_a_report_plans_a_batch_of_eight_unless_asked_and_says_a_refused_plan_in_its_words() -> None:
    config = configs.read(json.dumps(LLAMA_CONFIG))
    found = isolated.report(config, {}, [])
    assert found.plan is not None and found.plan.input.batch == 8 and found.plan_error is None
    assert found.plan.architecture == "config"  # a pasted config, not an architecture of the catalogue
    built = configs.build(config, "meta")
    assert found.real_bytes == sum(
        t.numel() * t.element_size() for t in [*built.parameters(), *built.buffers()]
    )
    assert str(configs.architecture(config).title) == "LlamaForCausalLM · config.json"
    refused = isolated.report(config, {"batch": 10**9}, [])
    with pytest.raises(ArchitectureError) as planners:
        checked(facts(configs.build(config, "meta")), 10**9)
    assert refused.plan is None and refused.plan_error == dict(planners.value.words)
    assert refused.tree == found.tree  # the rest of the report is kept


def test_a_forward_the_planner_cannot_feed_is_said_and_the_rest_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(*args: object) -> None:
        raise ValueError("the model's forward wants pixel_values" + "!" * 600)

    monkeypatch.setattr(isolated, "plan", fails)
    found = isolated.report(configs.read(json.dumps(LLAMA_CONFIG)), {}, [])
    error = ("ValueError: the model's forward wants pixel_values" + "!" * 600)[:500]
    assert found.plan is None and found.plan_error is not None
    assert found.plan_error["en"] == f"the planner could not run its forward: {error}"
    assert found.plan_error["zh-CN"] != found.plan_error["en"] and found.roundtrip is not None


def test_the_childs_answer_says_a_report_a_refusal_or_memory_run_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the child sends, made here: the parent reads "R", "E" and "M" (tests above)."""
    config = configs.read(json.dumps(LLAMA_CONFIG))
    said = isolated.answer(config, {"batch": 3}, [])
    assert said[:1] == b"R"
    found = isolated.ConfigReport.model_validate_json(said[1:])
    assert found.config == config and found.plan is not None and found.plan.input.batch == 3
    refused = configs.read(json.dumps({**LLAMA_CONFIG, "num_attention_heads": 7}))
    said = isolated.answer(refused, {}, [])
    assert said[:1] == b"E" and json.loads(said[1:])["status"] == 422
    assert json.loads(said[1:])["text"]["en"].startswith("hidden_size: ")

    def allocates(*_: object) -> None:
        torch.empty(2**50, dtype=torch.uint8)  # torch's allocator refuses a PiB: its own words

    def bad_alloc(*_: object) -> None:
        raise RuntimeError("std::bad_alloc")  # what C++ code says when its new fails under the limit

    def fails(*_: object) -> None:
        raise ValueError("no such layer type")

    for made, expected in ((allocates, b"M"), (bad_alloc, b"M"), (fails, b"E")):
        monkeypatch.setattr(isolated, "report", made)
        assert isolated.answer(config, {}, [])[:1] == expected, made.__name__
    said = json.loads(isolated.answer(config, {}, [])[1:])
    assert said == {
        "status": 422,
        "text": {"en": "ValueError: no such layer type", "zh-CN": "ValueError: no such layer type"},
    }


def test_a_child_ended_by_something_else_is_said_with_its_status() -> None:
    """Killed from outside (SIGTERM), neither limit: no answer, and the status says how it ended."""
    config = configs.read(json.dumps({**LLAMA_CONFIG, "num_hidden_layers": 20_000}))  # seconds of work
    outcome: list[BaseException] = []

    def ask() -> None:
        try:
            isolated.run(config, {}, [], BUDGET)
        except ArchitectureError as exc:
            outcome.append(exc)

    before = {c.pid for c in multiprocessing.active_children()}  # other tests' children stay alone

    def started() -> list:
        return [c for c in multiprocessing.active_children() if c.pid not in before]

    asking = threading.Thread(target=ask)
    asking.start()
    while not started() and asking.is_alive():
        time.sleep(0.01)  # polling for the child to exist: there is no event to wait on
    for child in started():
        os.kill(child.pid, signal.SIGTERM)
    asking.join()
    (refused,) = outcome
    assert refused.status == 422
    assert refused.message == "config.json: the process building it ended (status -15) without an answer"


def test_the_childs_address_space_is_read_as_the_kernel_counts_it() -> None:
    # The child's memory ceiling starts from its address space: /proc/self/status' VmSize, which is
    # statm's first field in pages.
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    assert isolated._vm_bytes() == pages * os.sysconf("SC_PAGE_SIZE")
