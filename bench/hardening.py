"""What three hostile patterns cost a server run as ``make run`` runs it (``python -m app``, shipped
defaults), for this tree and, with ``--before DIR``, another checkout of the project beside it
(the same machine, the same run: compare the two, not the absolute numbers):

1. memory held by four clients that upload a checkpoint and never read its report (the send
   deadline must reset them and let the memory go);
4. CPU per inspection of a 100-byte file into ``llama_8b`` (the inspector's child must not import
   transformers and build the model's classes again each time);
5. the stall of a cached page while never-seen 16-member custom pages are being built (a cold page
   must not hold the event loop).

    python -m bench.hardening [--before /path/to/old/checkout] [--out bench/results/hardening.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import torch
from safetensors.torch import save

from tests.support.browser import ROOT, free_port, wait_healthy

TICK = os.sysconf("SC_CLK_TCK")


def _stat_cpu(pid: int) -> float:
    """utime + stime + reaped children's, in seconds (0 once gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return sum(int(f) for f in fields[11:15]) / TICK


def _tree(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for child in (task / "children").read_text().split():
                found += _tree(int(child))
        except FileNotFoundError:
            pass
    return found


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MRE_")}
        env |= {"MRE_HOST": "127.0.0.1", "MRE_PORT": str(self.port), "PYTHONPATH": str(root)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        wait_healthy(self.proc, self.base + "/api/health", seconds=180)
        return self

    def __exit__(self, *_: object) -> None:
        self.proc.terminate()
        self.proc.wait(30)

    def cpu(self) -> float:
        return sum(_stat_cpu(p) for p in _tree(self.proc.pid))

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.base + path, data=body, headers={"content-type": "application/octet-stream"}
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_ms(self, path: str) -> float:
        started = time.perf_counter()
        with urllib.request.urlopen(self.base + path, timeout=300) as answer:
            answer.read()
        return (time.perf_counter() - started) * 1000


def memory_held(root: Path) -> dict:
    """Four clients upload a 20,000-tensor safetensors file (a report of megabytes) and never read."""
    body = save({f"t{i}": torch.zeros(1) for i in range(20_000)})
    with Server(root) as server:
        server.post("/api/checkpoints", body)  # the forkserver started, one report made
        before = _rss_mib(server.proc.pid)
        head = (
            f"POST /api/checkpoints HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        clients = []
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(head + body)
            clients.append(s)
        samples = []
        for _ in range(100):  # the window: memory still held after 100 s
            time.sleep(1)
            samples.append(_rss_mib(server.proc.pid))
        reset = 0
        for s in clients:
            s.settimeout(2)
            try:
                while s.recv(1 << 20):
                    pass
            except ConnectionResetError:
                reset += 1
            except TimeoutError:
                pass
            s.close()
    peak, last = max(samples), samples[-1]
    return {"rss_before_mib": before, "rss_peak_mib": peak, "rss_100s_mib": last, "clients_reset": reset}


def architecture_cpu(root: Path, rounds: int = 6) -> dict:
    """CPU of the server and its inspectors per inspection of a 100-byte file into llama_8b."""
    buffer = io.BytesIO()
    torch.save({"x": torch.zeros(2)}, buffer)
    with Server(root) as server:
        status, _ = server.post("/api/checkpoints?architecture=llama_8b", buffer.getvalue())
        walls = []
        cpu = server.cpu()
        for _ in range(rounds):
            started = time.perf_counter()
            status, _ = server.post("/api/checkpoints?architecture=llama_8b", buffer.getvalue())
            walls.append(time.perf_counter() - started)
        spent = server.cpu() - cpu
    return {"status": status, "cpu_s_per_request": spent / rounds, "wall_s_median": statistics.median(walls)}


def cached_stall(root: Path, cold: int = 8) -> dict:
    """A cached page fetched in a loop while cold 16-member custom pages are built one after another."""
    cached = "/?preset=testmodel&device=meta"
    with Server(root) as server:
        for _ in range(3):
            server.get_ms(cached)
        alone = [server.get_ms(cached) for _ in range(30)]
        done = threading.Event()

        def colds() -> None:
            for n in range(cold):
                members = "&".join(f"style.m{i}=buffer&shape.m{i}={n + 2}" for i in range(16))
                server.get_ms(f"/?preset=custom&{members}")
            done.set()

        thread = threading.Thread(target=colds)
        thread.start()
        beside = []
        while not done.is_set():
            beside.append(server.get_ms(cached))
        thread.join()
    return {
        "cached_alone_p50_ms": statistics.median(alone),
        "cached_beside_cold_p50_ms": statistics.median(beside),
        "cached_beside_cold_max_ms": max(beside),
        "samples": len(beside),
    }


def measure(root: Path) -> dict:
    return {
        "1_memory_held": memory_held(root),
        "4_architecture_cpu": architecture_cpu(root),
        "5_cached_stall": cached_stall(root),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--before", type=Path, default=None, help="another checkout, measured beside this one"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/hardening.json"))
    args = parser.parse_args()
    trees = {"now": ROOT} | ({"before": args.before} if args.before else {})
    results = {}
    for name, root in trees.items():
        results[name] = measure(Path(root))
        print(name, json.dumps(results[name], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"torch": torch.__version__, **results}, indent=1))


if __name__ == "__main__":
    main()
