"""Class fan-out: 200 simulated students on Server-Sent Events in one room; each teacher change is
timed from the teacher's request to its arrival at every student. In one process (the in-process
broker), and over Redis with two server processes (students on both, the teacher on the first).

Prints and returns p50/p99 of the latency per (student, change), of "the last student has it" per
change, and the lost updates: students whose last state is not the teacher's last. The students
are asyncio streams in this process (bench/sse.py), so their own parsing is part of the figure.
``python -m bench.classroom`` runs it alone; ``make bench`` runs it after the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time

from bench.sse import Stream, open_stream
from tests.support.class_servers import Teacher, app_servers, redis_server

STUDENTS = int(os.environ.get("BENCH_STUDENTS", "200"))
CHANGES = int(os.environ.get("BENCH_CLASS_CHANGES", "40"))
PORTS = (18130, 18131, 18132)  # the app alone; then Redis and two app processes
REDIS_PORT = 18133
STEPS = [f"/lessons/parameters-and-buffers?step={n}" for n in range(1, 6)]
ENV = {
    "MRE_CLASS_MAX_STREAMS_PER_CLIENT": str(STUDENTS + 10),  # every simulated student is on loopback
    "MRE_CLASS_MAX_STUDENTS": str(STUDENTS + 10),
    "MRE_CLASS_FAILED_JOINS_PER_MINUTE": "1000",
    "MRE_CLASS_MAX_ROOMS_PER_CLIENT": "50",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _watch(stream: Stream, arrivals: dict[int, float], last: list) -> None:
    while (event := await stream.next(timeout=60)) is not None:
        if event.kind == "state":
            arrivals.setdefault(event.data["version"], time.perf_counter())
            last[0] = event.data


async def fan_out(teacher: Teacher, student_ports: list[int]) -> dict:
    code = teacher.code
    streams = [
        await open_stream("127.0.0.1", student_ports[i % len(student_ports)], f"/rooms/{code}/events")
        for i in range(STUDENTS)
    ]
    assert all(s.status == 200 for s in streams), {s.status for s in streams}
    arrivals: list[dict[int, float]] = [{} for _ in streams]
    lasts: list[list] = [[None] for _ in streams]
    tasks = [
        asyncio.create_task(_watch(s, a, last)) for s, a, last in zip(streams, arrivals, lasts, strict=True)
    ]
    while not all(arrivals):  # every student has the state it joined with
        await asyncio.sleep(0.01)
    latencies, slowest, missed = [], [], 0
    version = max(max(a) for a in arrivals)
    for i in range(CHANGES):
        state = STEPS[i % len(STEPS)] + ("&reveal=1" if i % 2 else "")
        sent = time.perf_counter()
        status = await asyncio.to_thread(teacher.show, state)
        assert status == 303, status
        version += 1
        deadline = time.monotonic() + 10
        while not all(version in a for a in arrivals) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        got = [a[version] - sent for a in arrivals if version in a]
        missed += len(arrivals) - len(got)
        latencies += got
        slowest.append(max(got))
    await asyncio.sleep(0.5)
    final = json.loads(json.dumps(lasts[0][0]))
    lost = sum(1 for last in lasts if last[0] != final or final["version"] != version)
    for t in tasks:
        t.cancel()
    for s in streams:
        s.close()
    ms = [x * 1000 for x in latencies]
    last_ms = [x * 1000 for x in slowest]
    return {
        "students": STUDENTS,
        "changes": CHANGES,
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(percentile(ms, 0.99), 1),
        "max_ms": round(max(ms), 1),
        "all_have_it_p50_ms": round(statistics.median(last_ms), 1),
        "all_have_it_p99_ms": round(percentile(last_ms, 0.99), 1),
        "missed_updates": missed,
        "lost": lost,
    }


def in_process() -> dict:
    with app_servers([PORTS[0]], ENV):
        teacher = Teacher(PORTS[0])
        teacher.start(STEPS[0])
        return asyncio.run(fan_out(teacher, [PORTS[0]]))


def over_redis() -> dict:
    with redis_server(REDIS_PORT) as redis, app_servers(list(PORTS[1:]), {**ENV, "MRE_REDIS_URL": redis.url}):
        teacher = Teacher(PORTS[1])
        teacher.start(STEPS[0])
        return asyncio.run(fan_out(teacher, list(PORTS[1:])))


def run() -> dict:
    return {"in_process": in_process(), "redis_2_workers": over_redis()}


def print_report(r: dict) -> None:
    students = r["in_process"]["students"]
    print(f"\nclass fan-out: {students} students on SSE in one room, teacher change -> each student")
    for name, t in r.items():
        print(
            f"  {name:<16} p50 {t['p50_ms']} ms, p99 {t['p99_ms']} ms (max {t['max_ms']}); "
            f"the last student: p50 {t['all_have_it_p50_ms']} ms, p99 {t['all_have_it_p99_ms']} ms; "
            f"{t['changes']} changes, lost {t['lost']}, missed {t['missed_updates']}"
        )


if __name__ == "__main__":
    result = run()
    print_report(result)
    json.dump(result, sys.stdout, indent=2)
    print()
