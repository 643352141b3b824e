"""A class arriving and following: 300 students join within one second (each a POST with the join
link's one click, then its event stream), then the teacher makes 30 changes. For each change and
student: when the event arrived, and when the student's page was updated (the event, then the
page the whole class shares, /follow?room=...&state=..., fetched as the browser does). In one
process (the in-process broker), and over Redis with two server processes (students on both, the
teacher on the first).

Reports joins refused (must be 0), events lost (students whose last state is not the teacher's
last: must be 0), event arrival p50/p99, and change -> every student's page updated p99. The
students are asyncio clients in this process (bench/sse.py), so their own work is in the figures.
``python -m bench.classroom`` runs it alone; ``make bench`` runs it after the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from bench.sse import Stream, open_stream
from tests.support.class_servers import Teacher, app_servers, redis_server

STUDENTS = int(os.environ.get("BENCH_STUDENTS", "300"))
CHANGES = int(os.environ.get("BENCH_CLASS_CHANGES", "30"))
JOIN_SECONDS = 1.0  # the class scans the QR code together
PORTS = (18130, 18131, 18132)  # the app alone; then Redis and two app processes
REDIS_PORT = 18133
STEPS = [f"/lessons/parameters-and-buffers?step={n}" for n in range(1, 6)]
# Every simulated student is on loopback: one address, as a class behind one NAT address is.
ENV = {"MRE_CLASS_MAX_ROOMS_PER_CLIENT": "50", "MRE_CLASS_FAILED_JOINS_PER_MINUTE": "1000"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def request(port: int, method: str, path: str, cookie: str = "") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on its own connection: status, headers (lower-case), body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    head += "Content-Length: 0\r\n" if method == "POST" else ""
    head += "HX-Request: true\r\n" if method == "GET" else ""
    head += f"Cookie: {cookie}\r\n" if cookie else ""
    writer.write((head + "\r\n").encode())
    raw = await reader.read()
    writer.close()
    top, _, body = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@dataclass
class Student:
    port: int
    cookie: str = ""
    stream: Stream | None = None
    arrived: dict[int, float] = field(default_factory=dict)  # version -> when its event came
    updated: dict[int, float] = field(default_factory=dict)  # version -> when its page was fetched
    last: dict | None = None
    failed_fetches: int = 0


async def join(student: Student, code: str, delay: float) -> int:
    await asyncio.sleep(delay)
    status, headers, _ = await request(student.port, "POST", f"/rooms/{code}/join")
    if status == 303:
        student.cookie = f"mre_student={SimpleCookie(headers['set-cookie'])['mre_student'].value}"
        student.stream = await open_stream("127.0.0.1", student.port, f"/rooms/{code}/events", student.cookie)
        if student.stream.status != 200:
            return student.stream.status
    return status


async def follow(student: Student, code: str) -> None:
    """Events in; for each new state, the shared page fetched (the newest wanted, as app.js does)."""
    assert student.stream is not None
    while (event := await student.stream.next(timeout=120)) is not None:
        if event.kind != "state":
            continue
        version = event.data["version"]
        student.arrived.setdefault(version, time.perf_counter())
        student.last = event.data
        query = urlencode({"room": code, "state": event.data["state"], "lang": "en"})
        status, _, body = await request(student.port, "GET", f"/follow?{query}")
        if status == 200 and b'id="follow"' in body:
            student.updated.setdefault(version, time.perf_counter())
        else:
            student.failed_fetches += 1


async def a_class(teacher: Teacher, ports: list[int]) -> dict:
    code = teacher.code
    students = [Student(ports[i % len(ports)]) for i in range(STUDENTS)]
    started = time.perf_counter()
    statuses = await asyncio.gather(
        *(join(s, code, JOIN_SECONDS * i / STUDENTS) for i, s in enumerate(students))
    )
    joined_in = time.perf_counter() - started
    refused = sum(1 for status in statuses if status not in (200, 303))
    present = [s for s in students if s.stream is not None and s.stream.status == 200]
    tasks = [asyncio.create_task(follow(s, code)) for s in present]
    deadline = time.monotonic() + 30
    while not all(s.arrived for s in present) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    version = max((max(s.arrived) for s in present if s.arrived), default=1)
    arrivals, updates, all_updated = [], [], []
    for i in range(CHANGES):
        state = STEPS[i % len(STEPS)] + ("&reveal=1" if i % 2 else "")
        sent = time.perf_counter()
        status = await asyncio.to_thread(teacher.show, state)
        assert status == 303, status
        version += 1
        deadline = time.monotonic() + 20
        while not all(version in s.updated for s in present) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        arrivals += [s.arrived[version] - sent for s in present if version in s.arrived]
        done = [s.updated[version] - sent for s in present if version in s.updated]
        updates += done
        all_updated.append(max(done) if len(done) == len(present) else float("inf"))
    await asyncio.sleep(0.5)
    # The teacher's last state, as the room holds it (normalised by the server), and its version.
    console = await open_stream("127.0.0.1", ports[0], f"/rooms/{code}/events", teacher.cookie)
    final = (await console.next()).data  # type: ignore[union-attr]
    console.close()
    assert final["version"] == version, (final, version)
    lost = sum(1 for s in present if s.last != final) + (len(students) - len(present))
    for t in tasks:
        t.cancel()
    for s in present:
        s.stream.close()  # type: ignore[union-attr]
    ms = lambda xs: [x * 1000 for x in xs]  # noqa: E731
    return {
        "students": STUDENTS,
        "changes": CHANGES,
        "joined_in_s": round(joined_in, 2),
        "joins_refused": refused,
        "events_lost": lost,
        "arrival_p50_ms": round(statistics.median(ms(arrivals)), 1),
        "arrival_p99_ms": round(percentile(ms(arrivals), 0.99), 1),
        "updated_p50_ms": round(statistics.median(ms(updates)), 1),
        "updated_p99_ms": round(percentile(ms(updates), 0.99), 1),
        "all_updated_p99_ms": round(percentile(ms(all_updated), 0.99), 1),
        "failed_fetches": sum(s.failed_fetches for s in present),
    }


def in_process() -> dict:
    with app_servers([PORTS[0]], ENV):
        teacher = Teacher(PORTS[0])
        teacher.start(STEPS[0])
        return asyncio.run(a_class(teacher, [PORTS[0]]))


def over_redis() -> dict:
    with redis_server(REDIS_PORT) as redis, app_servers(list(PORTS[1:]), {**ENV, "MRE_REDIS_URL": redis.url}):
        teacher = Teacher(PORTS[1])
        teacher.start(STEPS[0])
        return asyncio.run(a_class(teacher, list(PORTS[1:])))


def run() -> dict:
    return {"in_process": in_process(), "redis_2_workers": over_redis()}


def print_report(r: dict) -> None:
    first = r["in_process"]
    print(
        f"\nclass: {first['students']} students join within 1 s, then {first['changes']} teacher changes"
        " (targets: 0 refused, 0 lost, every page updated p99 <= 1000 ms)"
    )
    for name, t in r.items():
        print(
            f"  {name:<16} joins refused {t['joins_refused']} (all in {t['joined_in_s']} s), events lost"
            f" {t['events_lost']}; event arrival p50 {t['arrival_p50_ms']} ms, p99 {t['arrival_p99_ms']} ms;"
            f" page updated p50 {t['updated_p50_ms']} ms, p99 {t['updated_p99_ms']} ms;"
            f" every student's page updated p99 {t['all_updated_p99_ms']} ms"
        )


if __name__ == "__main__":
    result = run()
    print_report(result)
    json.dump(result, sys.stdout, indent=2)
    print()
