"""mre from a warm disk: ``mre --help`` (target: under 1.5 s), ``mre inspect`` of a tiny file (target:
under 2 s: torch imported once, the child forked from mre) and loaded into a preset, each the median
of a few runs, beside a bare ``python -c pass`` and ``python -c "import torch"`` measured in the same run."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5


def _seconds(command: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def bench() -> dict:
    mre = [sys.executable, "-m", "app.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        tiny = Path(tmp) / "tiny.pt"
        torch.save({"weight": torch.ones(3, 3)}, tiny)
        python = _seconds([sys.executable, "-c", "pass"])
        torch_s = _seconds([sys.executable, "-c", "import torch"])
        helped = _seconds([*mre, "--help"])
        inspected = _seconds([*mre, "inspect", str(tiny)])
        loaded = _seconds([*mre, "inspect", str(tiny), "--into", "testmodel"])
    return {
        "python_s": python,
        "import_torch_s": torch_s,
        "help_s": helped,
        "inspect_tiny_s": inspected,
        "inspect_tiny_into_s": loaded,
        "help_ratio": round(helped / python, 1),
        "inspect_ratio": round(inspected / python, 1),
        "inspect_under_2_s": inspected < 2.0,
    }


def print_report(r: dict) -> None:
    print(
        f"\nmre: --help {r['help_s']} s (target < 1.5), inspect of a tiny file {r['inspect_tiny_s']} s"
        f" (target < 2), into testmodel {r['inspect_tiny_into_s']} s; a bare python start {r['python_s']} s"
        f" (x{r['help_ratio']}, x{r['inspect_ratio']}), import torch {r['import_torch_s']} s"
    )


if __name__ == "__main__":
    print_report(bench())
