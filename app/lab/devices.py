"""Which devices exist on this server. CUDA is only queried when a caller asks, never at import
time, so a process can fork workers before any CUDA context exists.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import cache

import torch


@dataclass(frozen=True)
class Device:
    id: str
    label: str
    kind: str
    total_memory: int | None = None  # bytes; None where torch cannot tell
    allocated_memory: int | None = None  # bytes allocated by this process's tensors


@cache
def device_ids() -> tuple[str, ...]:
    """Ids of every device here; fixed for the process lifetime (GPUs do not come and go)."""
    ids = ["cpu", "meta"]
    if torch.cuda.is_available():
        ids += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        ids.append("mps")
    return tuple(ids)


def describe(device_id: str) -> Device:
    """A device with its live label and memory figures."""
    # Only a machine with the device runs these lines (tests/lab/test_devices.py, marked cuda): a
    # mutation run on one without (make mutants) leaves them unmutated rather than counting them lost.
    if device_id.startswith("cuda:"):  # pragma: no mutate
        index = int(device_id.split(":", 1)[1])  # pragma: no mutate
        props = torch.cuda.get_device_properties(index)  # pragma: no mutate
        used = torch.cuda.memory_allocated(index)  # pragma: no mutate
        return Device(device_id, props.name, "cuda", props.total_memory, used)  # pragma: no mutate
    if device_id == "mps":
        used = torch.mps.current_allocated_memory()  # pragma: no mutate
        return Device("mps", "Apple GPU (MPS)", "mps", None, used)  # pragma: no mutate
    if device_id == "meta":
        return Device("meta", "meta (shapes and dtypes only, no data)", "meta")
    return Device("cpu", f"CPU ({platform.machine() or 'unknown'})", "cpu")


def available() -> list[Device]:
    return [describe(i) for i in device_ids()]
