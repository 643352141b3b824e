"""A pasted config built and measured in a child process of its own, under a memory limit, a CPU-time
limit and a wall-clock deadline: a config that asks for a million layers or a vocabulary of a
billion costs that child only, and the answer names the limit it hit and the config's largest sizes.

The child comes from multiprocessing's forkserver (the doctor's, when it runs: torch is then already
imported there), so the server's threads are never forked. It imports transformers, sets its limits,
reads the config, and sends back the report as JSON over a pipe: the module tree, what each save
does, the plan for the input asked for, and the meta round trip when the model is small enough to
build twice with real values within the limits.

(The doctor has a fuller runner for checkpoints, ``app.doctor.isolated``; the doctor stands above the
architectures, so this one is the architectures' own, kept small.)
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import signal
from dataclasses import dataclass
from functools import cache
from multiprocessing.connection import Connection

import torch
from pydantic import BaseModel, Field

from app.architectures.catalogue import ArchitectureError
from app.architectures.module_tree import ModuleTree, module_tree
from app.architectures.planner import Plan, checked, facts, plan
from app.architectures.roundtrip import RoundTrip
from app.architectures.saving import saving
from app.errors import Refusal, out_of_memory
from app.langs import Text, rendered, verbatim

ROUND_TRIP_BYTES = 64 * 1000**2  # a pasted model this small also gets the round trip (built twice)


@dataclass(frozen=True)
class Budget:
    """What one config may spend; each limit named by the setting that sets it."""

    memory_bytes: int  # address space beyond the child's start (MRE_ARCHITECTURE_CONFIG_MEMORY_BYTES)
    seconds: int  # CPU time (MRE_ARCHITECTURE_CONFIG_SECONDS); the wall-clock deadline is twice it


class ConfigReport(BaseModel):
    config: dict = Field(description="The config as built: canonical, labels as their count.")
    c: str = Field("", description="The config as this server's URLs carry it: /architectures/config?c=...")
    config_class: str = Field(examples=["LlamaConfig"])
    auto_class: str = Field(
        examples=["LlamaForCausalLM"], description="What builds it: its architectures[0]."
    )
    class_name: str
    tree: ModuleTree
    plan: Plan | None = None
    plan_error: dict[str, str] | None = Field(None, description="Why no plan: per language.")
    roundtrip: RoundTrip | None = None
    real_bytes: int = Field(description="float32 weights and buffers with real values.")


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmSize:")).split()[1]) * 1024


def report(config: dict, asked: dict[str, int | None], devices: list[tuple[str, int]]) -> ConfigReport:
    """The whole report of a checked config (in the child; callable directly in tests)."""
    from app.architectures import configs

    model = configs.build(config, "meta")
    tree = module_tree(model)
    tree.saving = saving(model)
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    arch = configs.architecture(config)
    found = ConfigReport(
        config=config,
        c=configs.encode(config),
        config_class=arch.config_class,
        auto_class=arch.auto_class,
        class_name=type(model).__name__,
        tree=tree,
        real_bytes=size,
    )
    try:
        spec = checked(
            facts(model),
            asked.get("batch") or 8,
            asked.get("tokens"),
            asked.get("image"),
            asked.get("context"),
        )
        found.plan = plan("config", configs.build(config, "meta"), spec, devices)
    except Refusal as exc:
        found.plan_error = dict(exc.words)
    except Exception as exc:  # a model's forward the planner cannot feed: said, the rest kept
        found.plan_error = dict(
            Text("the planner could not run its forward: {error}", error=f"{type(exc).__name__}: {exc}"[:500])
        )
    if size <= ROUND_TRIP_BYTES:
        from app.architectures.roundtrip import trip

        found.roundtrip = trip(
            "config", lambda device: configs.build(config, device), configs.architecture(config)
        )
    return found


def answer(config: dict, asked: dict, devices: list) -> bytes:
    """What the child sends: "R" and the report's JSON, "E" and a refusal, "M" when memory ran out
    (called in the child, under its limits; callable directly in tests)."""
    try:
        return b"R" + report(config, asked, devices).model_dump_json().encode()
    except Exception as exc:
        return _said(exc)


def _said(exc: Exception) -> bytes:
    if isinstance(exc, Refusal):
        return b"E" + json.dumps({"status": exc.status, "text": dict(exc.words)}).encode()
    if out_of_memory(exc):  # the address-space limit hit
        return b"M"
    said = dict(verbatim(f"{type(exc).__name__}: {exc}"[:800]))
    return b"E" + json.dumps({"status": 422, "text": said}).encode()


def _child(writer: Connection, config: dict, asked: dict, devices: list, budget: Budget) -> None:
    try:
        # Ours before the limits: transformers, this config's classes and modeling module, the
        # Chinese catalog (a refusal is said in it). The limits then hold what the config asks for.
        from app.architectures import configs
        from app.langs import ZH, catalog

        catalog(ZH)
        configs.model_class(config)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CPU, (budget.seconds, budget.seconds + 1))
        ceiling = _vm_bytes() + budget.memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
        torch.set_num_threads(1)
        body = answer(config, asked, devices)
    except Exception as exc:  # the set-up itself: the config's classes, a limit refused
        body = _said(exc)
    writer.send_bytes(body)
    writer.close()


@cache
def _context() -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context("forkserver")


def largest(config: dict) -> str:
    """The config's largest whole numbers, named: what made it too big, most likely."""
    sizes = sorted(
        ((v, k) for k, v in config.items() if isinstance(v, int) and not isinstance(v, bool)), reverse=True
    )
    return ", ".join(f"{k}={v:,}" for v, k in sizes[:3]) or "none"


def run(config: dict, asked: dict[str, int | None], devices: list[tuple[str, int]], budget: Budget) -> bytes:
    """The ConfigReport of a checked config as JSON bytes, from a child under ``budget``; a refusal
    (the config's own, or a limit hit) raises ArchitectureError naming it."""
    context = _context()
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(writer, config, asked, devices, budget), daemon=True)
    process.start()
    writer.close()
    try:
        ready = reader.poll(2 * budget.seconds + 10)
        body = reader.recv_bytes() if ready else b""
    except EOFError:
        body = b""
    finally:
        reader.close()
        if process.is_alive():
            process.kill()
        process.join(5)
    if body[:1] == b"R":
        return body[1:]
    if body[:1] == b"E":
        refusal = json.loads(body[1:])
        raise ArchitectureError(refusal["status"], rendered(refusal["text"]))
    if body[:1] == b"M":
        raise ArchitectureError(
            413,
            Text(
                "config.json: building it needs more than {memory} bytes of memory "
                "(MRE_ARCHITECTURE_CONFIG_MEMORY_BYTES); its largest sizes: {sizes}",
                memory=f"{budget.memory_bytes:,}",
                sizes=largest(config),
            ),
        )
    if not ready or process.exitcode in (-signal.SIGXCPU, -signal.SIGKILL):  # the deadline, the CPU limit
        raise ArchitectureError(
            504,
            Text(
                "config.json: building and measuring it took over {seconds} seconds of CPU time "
                "(MRE_ARCHITECTURE_CONFIG_SECONDS); its largest sizes: {sizes}",
                seconds=budget.seconds,
                sizes=largest(config),
            ),
        )
    raise ArchitectureError(
        422,
        Text(
            "config.json: the process building it ended (status {code}) without an answer",
            code=process.exitcode,
        ),
    )
