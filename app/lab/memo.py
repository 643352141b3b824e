"""Reports memoised by canonical spec.

A report is a pure function of its canonical spec, the torch version and the devices of this
process, so an LRU keyed by exactly those is always exact, never stale. It is bounded in entries
and in the bytes of the reports' JSON: a custom module's member names come from the request, so
one report can be a hundred times another.
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import torch

from app.lab.devices import device_ids
from app.lab.experiments import ExperimentResult, run_experiment
from app.lab.report import LabReport, inspect
from app.lab.spec import LabSpec, from_query

if TYPE_CHECKING:
    from app.lab.query import LabQuery

MAX_REPORTS = 1024  # a class explores a few dozen specs
# The reports' JSON in all; the live models beside it take a few times as much.
MAX_BYTES = 16 * 1024**2

_reports: OrderedDict[tuple, tuple[LabReport, bytes]] = OrderedDict()
_size = 0
_lock = Lock()  # experiments run in the thread pool too


def _cached(spec: LabSpec) -> tuple[LabReport, bytes]:
    global _size
    key = (spec.query(), torch.__version__, device_ids())
    with _lock:
        found = _reports.get(key)
        if found is not None:
            _reports.move_to_end(key)
            return found
    report = inspect(from_query(parse_qsl(key[0])))
    found = report, report.model_dump_json().encode()
    with _lock:
        if key not in _reports:
            _reports[key] = found
            _size += len(found[1]) + len(key[0])
        while _reports and (len(_reports) > MAX_REPORTS or _size > MAX_BYTES):
            old_key, (_, old) = _reports.popitem(last=False)
            _size -= len(old) + len(old_key[0])
    return found


def report(spec: LabSpec) -> LabReport:
    """The report of a resolved spec; callers must not modify it."""
    return _cached(spec)[0]


def report_json(spec: LabSpec) -> bytes:
    return _cached(spec)[1]


MAX_EXPERIMENTS = 256  # results of a few KB each; a class runs a few dozen
_experiments: OrderedDict[tuple, ExperimentResult] = OrderedDict()


def experiment(query: LabQuery) -> ExperimentResult:
    """The result of the experiment a resolved query asks for, run once per canonical URL (a lesson
    step, every student of a class and the page all ask for the same). Callers must not modify it."""
    assert query.experiment is not None
    key = (query.url(), torch.__version__, device_ids())
    with _lock:
        found = _experiments.get(key)
        if found is not None:
            _experiments.move_to_end(key)
            return found
    found = run_experiment(query.experiment.id, query.spec, query.into, **query.options)
    with _lock:
        _experiments[key] = found
        while len(_experiments) > MAX_EXPERIMENTS:
            _experiments.popitem(last=False)
    return found


def clear() -> None:
    global _size
    with _lock:
        _reports.clear()
        _size = 0
        _experiments.clear()


def size() -> tuple[int, int]:
    """Reports kept and the bytes of their JSON."""
    return len(_reports), _size
