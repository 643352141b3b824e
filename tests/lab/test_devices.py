"""Devices: cpu and meta always, CUDA only when present, and never touched at import time."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from app.lab import devices


def test_cpu_and_meta_always_listed() -> None:
    ids = [d.id for d in devices.available()]
    assert ids[:2] == ["cpu", "meta"]
    assert len(ids) == 2 + torch.cuda.device_count() + int(torch.backends.mps.is_available())
    cpu, meta = devices.available()[:2]
    # Each says what it is: this machine's architecture, as Python reads it; meta holds no values.
    assert (cpu.label, cpu.kind) == (f"CPU ({platform.machine()})", "cpu") and platform.machine()
    assert (meta.label, meta.kind) == ("meta (shapes and dtypes only, no data)", "meta")


def test_importing_the_app_does_not_touch_cuda() -> None:
    code = (
        "import torch, app.main\n"
        "from app.lab import devices\n"
        "print(torch.cuda.is_initialized(), devices.device_ids.cache_info().currsize)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "0"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_devices_carry_name_and_memory() -> None:
    cuda = [d for d in devices.available() if d.kind == "cuda"]
    assert [d.id for d in cuda] == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    for i, d in enumerate(cuda):
        assert d.label == torch.cuda.get_device_name(i)
        assert d.total_memory == torch.cuda.get_device_properties(i).total_memory
        assert d.allocated_memory is not None
