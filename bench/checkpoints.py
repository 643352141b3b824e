"""Inspection time and peak memory for a generated checkpoint in each format (default 1 GiB), and
what each class of hostile file costs a real server (``--hostile``).

    python -m bench.checkpoints [--gib 1.0] [--out bench/results/checkpoints.json]
    python -m bench.checkpoints --hostile [--out bench/results/hostile.json]
    python -m bench.checkpoints --latency [--root DIR]  # a small file's round trip; DIR: another tree

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
from app.doctor.examine import inspect_checkpoint
from app.doctor.report import Limits
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
    parser.add_argument("--hostile", action="store_true", help="hostile files against a live server")
    parser.add_argument("--latency", action="store_true", help="a small inspection through a live server")
    parser.add_argument("--root", type=Path, default=None, help="with --latency: the tree to serve")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--doctor", action="store_true", help="inspect and compare two files (isolated)")
    args = parser.parse_args()
    if args.doctor:
        doctor(args.gib, args.out or Path("bench/results/doctor.json"))
        return
    if args.latency:
        latency(args.root)
        return
    if args.hostile:
        hostile(args.out or Path("bench/results/hostile.json"))
        return
    args.out = args.out or Path("bench/results/checkpoints.json")
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


# -- the doctor: inspect and compare, each in its isolated child under the default limits ----------


def doctor(gib: float, out: Path) -> None:
    """Two files of ``gib`` each (a as safetensors, b the same tensors nudged, as torch zip): the
    inspection of each loaded into testmodel, then their comparison (every value: the tensors are
    under MRE_CHECKPOINT_COMPARE_MAX_ELEMENTS), through the child the server and mre use."""
    import asyncio

    from app.doctor import caps as inspections
    from app.doctor import isolated
    from app.lab.spec import LabSpec, resolve
    from app.settings import Settings

    settings = Settings()
    limits, budget = inspections.limits(settings), inspections.budget(settings)
    spec = resolve(LabSpec(preset="testmodel"), ["cpu", "meta"])
    isolated.warm_up()
    results: dict[str, list[float]] = {
        "inspect_a": [],
        "inspect_b": [],
        "compare": [],
        "compare_all_differ": [],
    }
    with tempfile.TemporaryDirectory(prefix="mre-bench-") as tmp:
        a, b, c = Path(tmp) / "a.safetensors", Path(tmp) / "b.pt", Path(tmp) / "c.pt"
        state = state_dict(gib)
        save_file(state, a)
        state["layers.0.weight"][:10] += 1e-3  # b: a re-save with one tensor touched
        torch.save(state, b)
        torch.save({k: v * (1 + 1e-3) for k, v in state.items()}, c)  # c: every value moved (a fine-tune)
        del state
        for _ in range(2):
            for name, run in (
                ("inspect_a", lambda: isolated.inspect_isolated(a, limits, spec, None, budget)),
                ("inspect_b", lambda: isolated.inspect_isolated(b, limits, spec, None, budget)),
                (
                    "compare",
                    lambda: isolated.run_isolated(
                        isolated.comparison_job(
                            [a], [a.name], [b], [b.name], limits, settings.checkpoint_compare_max_elements
                        ),
                        budget,
                    ),
                ),
                (
                    "compare_all_differ",
                    lambda: isolated.run_isolated(
                        isolated.comparison_job(
                            [a], [a.name], [c], [c.name], limits, settings.checkpoint_compare_max_elements
                        ),
                        budget,
                    ),
                ),
            ):
                start = time.perf_counter()
                body = asyncio.run(run())
                results[name].append(time.perf_counter() - start)
                print(f"{name}: {results[name][-1]:.2f} s ({len(body)} bytes of JSON)", flush=True)
        sizes = {"a": a.stat().st_size, "b": b.stat().st_size, "c": c.stat().st_size}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"gib": gib, "torch": torch.__version__, "file_bytes": sizes, "seconds": results}, indent=1
        )
    )


# -- hostile files against a live server ---------------------------------------------------------


def _hostile_files(directory: Path) -> list[tuple[str, str, Path, dict[str, str]]]:
    """(class, what, file, extra MRE_ settings): the worst file of each class in issue 10."""
    from tests.support.crafted import big_string, deep_key, deep_value, fan_out, torch_zip

    def put(name: str, content: bytes) -> Path:
        (directory / name).write_bytes(content)
        return directory / name

    base = torch.zeros(12_000)
    torch.save({f"v{i}": base[i : i + 1] for i in range(12_000)}, directory / "views.pt")
    save_file({f"t{i}": torch.zeros(1) for i in range(20_000)}, directory / "20k.safetensors")
    legacy = {f"t{i}": torch.zeros(1) for i in range(50_000)}
    torch.save(legacy, directory / "50k_legacy.pt", _use_new_zipfile_serialization=False)
    many = {"MRE_CHECKPOINT_MAX_ENTRIES": str(10**9)}
    return [
        ("crash", "dict keyed by a tuple 300,000 deep", put("key300k.pt", torch_zip(deep_key(300_000))), {}),
        ("deep recursion", "tuple key 100,000 deep", put("key100k.pt", torch_zip(deep_key(100_000))), {}),
        ("deep recursion", "lists 300,000 deep", put("lists300k.pt", torch_zip(deep_value(300_000))), {}),
        ("CPU runaway", "fan-out 10**9 lists (node cap)", put("fan.pt", torch_zip(fan_out(10, 9))), {}),
        ("CPU runaway", "fan-out 10**9 lists, entry cap lifted", directory / "fan.pt", many),
        ("huge tensor count", "safetensors, 20k tensors", directory / "20k.safetensors", {}),
        ("huge tensor count", "legacy, 50k storages", directory / "50k_legacy.pt", {}),
        ("quadratic views", "12,000 views of one storage", directory / "views.pt", {}),
        (
            "memory bomb",
            "data.pkl declaring a 256 MiB string",
            put("bomb.pt", torch_zip(big_string(256 << 20))),
            {},
        ),
        (
            "memory bomb",
            "the same, pickle cap lifted",
            directory / "bomb.pt",
            {"MRE_CHECKPOINT_PICKLE_MAX_BYTES": str(1 << 30)},
        ),
    ]


def _status(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in KiB (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(next(line for line in f if line.startswith(field + ":")).split()[1])
    except (FileNotFoundError, StopIteration, ProcessLookupError):
        return 0


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except FileNotFoundError:
        pass
    return found


def _inspectors(server: int) -> list[int]:
    out = []
    for pid in _children(server):
        try:
            if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out += _children(pid)
        except FileNotFoundError:
            pass
    return out


def _send(base: str, path: Path, server: int) -> dict:
    """POST the file; the answer, the time, and the highest VmHWM seen of any inspector child."""
    import threading
    import urllib.error
    import urllib.request

    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            for child in _inspectors(server):
                peak[0] = max(peak[0], _status(child, "VmHWM"))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    request = urllib.request.Request(
        base + "/api/checkpoints",
        data=path.read_bytes(),
        headers={"content-type": "application/octet-stream"},
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    detail = json.loads(body).get("detail", "") if status != 200 else f"report of {len(body)} bytes"
    return {
        "status": status,
        "seconds": seconds,
        "child_peak_mib": peak[0] / 1024,
        "detail": str(detail)[:160],
    }


def _trickle(base: str) -> dict:
    """A client that announces 1000 bytes and sends one a second: when and how it is cut off."""
    import socket

    host, port = base.removeprefix("http://").split(":")
    start = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=120) as s:
        s.sendall(
            b"POST /api/checkpoints HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 1000\r\n\r\n"
        )
        s.settimeout(1)
        answer = b""
        while not answer and time.perf_counter() - start < 120:
            try:
                answer = s.recv(200)
            except TimeoutError:
                s.sendall(b"\0")
    line = answer.split(b"\r\n", 1)[0].decode()
    return {"status": int(line.split()[1]), "seconds": time.perf_counter() - start, "child_peak_mib": 0.0}


def hostile(out: Path) -> None:
    """Each class's worst file against a fresh server (uvicorn, default limits but those named)."""
    import os

    from tests.support.browser import ROOT, free_port, wait_healthy

    rows = []
    with tempfile.TemporaryDirectory(prefix="mre-bench-") as tmp:
        files = _hostile_files(Path(tmp))
        cases = [*files, ("slow upload", "1 byte a second", None, {})]
        for cls, what, path, extra in cases:
            port = free_port()
            env = {**os.environ, **extra}
            command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
            server = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
            base = f"http://127.0.0.1:{port}"
            try:
                wait_healthy(server, base + "/api/health")
                time.sleep(3)  # the forkserver's import of torch, done in the background at start
                before = _status(server.pid, "VmHWM")
                row = _send(base, path, server.pid) if path else _trickle(base)
                row.update(
                    {
                        "class": cls,
                        "file": what,
                        "file_bytes": path.stat().st_size if path else 0,
                        "server_hwm_mib": _status(server.pid, "VmHWM") / 1024,
                        "server_hwm_before_mib": before / 1024,
                        "alive": server.poll() is None,
                        "settings": extra,
                    }
                )
            finally:
                server.terminate()
                server.wait(30)
            rows.append(row)
            print(
                f"{cls:18} {what:40} {row['status']} {row['seconds']:7.2f} s  server VmHWM"
                f" {row['server_hwm_before_mib']:.0f}->{row['server_hwm_mib']:.0f} MiB  child peak"
                f" {row['child_peak_mib']:.0f} MiB  {row.get('detail', '')[:90]}",
                flush=True,
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1))


def latency(root: Path | None, rounds: int = 40) -> None:
    """Median round trip of a small torch file loaded into testmodel, through uvicorn on loopback."""
    import io
    import statistics
    import urllib.request

    from tests.support.browser import ROOT, free_port, wait_healthy

    buffer = io.BytesIO()
    torch.save({"linear.weight": torch.ones(3, 3), "linear.bias": torch.ones(3)}, buffer)
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--no-access-log"]
    server = subprocess.Popen(command, cwd=root or ROOT, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api/checkpoints?preset=testmodel"
    try:
        wait_healthy(server, f"http://127.0.0.1:{port}/api/health")
        time.sleep(4)  # the forkserver's start, in the background
        times = []
        for _ in range(rounds):
            request = urllib.request.Request(
                url, data=buffer.getvalue(), headers={"content-type": "application/octet-stream"}
            )
            start = time.perf_counter()
            with urllib.request.urlopen(request) as response:
                response.read()
            times.append(time.perf_counter() - start)
    finally:
        server.terminate()
        server.wait(30)
    kept = times[5:]
    print(f"{root or ROOT}: median {statistics.median(kept) * 1000:.1f} ms, min {min(kept) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
