"""Inspection time and peak memory for a generated checkpoint in each format (default 1 GiB).

    python -m bench.checkpoints [--gib 1.0] [--out bench/results/checkpoints.json]

Each file is a state_dict of 64 float32 tensors (plus a tied pair) written with torch or
safetensors; each inspection runs in a fresh interpreter, which reports its own wall time and
peak RSS (VmHWM) over its imports-done baseline. The baseline is the same interpreter's RSS
before the inspection, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

CHILD = """
import json, sys, time
from pathlib import Path
from app.lab.checkpoints import Limits, inspect_checkpoint
from app.lab.spec import LabSpec, resolve
spec = resolve(LabSpec(preset="testmodel"), ["cpu", "meta"])
limits = Limits(8 * 1024**3, 16 * 1024**2, 100_000, legacy_max_bytes=8 * 1024**3)
def hwm():  # this process's peak RSS in KiB (ru_maxrss would carry the parent's across exec)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1])
before = hwm()
start = time.perf_counter()
report = inspect_checkpoint(Path(sys.argv[1]), limits, spec)
seconds = time.perf_counter() - start
peak = hwm()
print(json.dumps({"seconds": seconds, "baseline_mib": before / 1024, "peak_mib": peak / 1024,
                  "tensors": len(report.tensors), "bytes": report.total_bytes}))
"""


def state_dict(gib: float) -> dict[str, torch.Tensor]:
    n = 64
    per = int(gib * 1024**3 / 4 / n)
    state = {f"layers.{i}.weight": torch.empty(per).uniform_() for i in range(n)}
    state["embed.weight"] = torch.zeros(16, 16)
    return state


def write(directory: Path, gib: float) -> dict[str, Path]:
    state = state_dict(gib)
    files = {
        "safetensors": directory / "model.safetensors",
        "torch_zip": directory / "model.pt",
        "torch_legacy": directory / "model_legacy.pt",
    }
    save_file(state, files["safetensors"])
    tied = {**state, "head.weight": state["embed.weight"]}  # torch keeps the sharing; safetensors cannot
    torch.save(tied, files["torch_zip"])
    torch.save(tied, files["torch_legacy"], _use_new_zipfile_serialization=False)
    return files


def measure(path: Path) -> dict:
    # Drop this file from the page cache would need root and a sync; instead run each twice and
    # keep both: the first read is cold-ish (just written, so mostly cached anyway).
    runs = []
    for _ in range(2):
        command = [sys.executable, "-c", CHILD, str(path)]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout))
    return {"file_bytes": path.stat().st_size, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/checkpoints.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mre-bench-") as tmp:
        start = time.perf_counter()
        files = write(Path(tmp), args.gib)
        took = time.perf_counter() - start
        print(f"wrote {len(files)} files of {args.gib} GiB in {took:.1f} s", flush=True)
        results = {fmt: measure(path) for fmt, path in files.items()}
    for fmt, r in results.items():
        for run in r["runs"]:
            print(
                f"{fmt:13} {r['file_bytes'] / 1024**3:.2f} GiB: {run['seconds']:.3f} s, "
                f"peak RSS {run['peak_mib']:.0f} MiB (interpreter before: {run['baseline_mib']:.0f} MiB)"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"gib": args.gib, "torch": torch.__version__, "results": results}
    args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
