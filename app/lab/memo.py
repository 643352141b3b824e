"""Reports memoised by canonical spec.

A report is a pure function of its canonical spec, the torch version and the devices of this
process, so a bounded LRU keyed by exactly those is always exact, never stale.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import parse_qsl

import torch

from app.lab.devices import device_ids
from app.lab.inspect import LabReport, inspect
from app.lab.spec import LabSpec, from_query

# A class explores a few dozen specs; 1024 reports stay well under 50 MB.
MAX_REPORTS = 1024


@lru_cache(maxsize=MAX_REPORTS)
def _cached(query: str, torch_version: str, devices: tuple[str, ...]) -> tuple[LabReport, bytes]:
    report = inspect(from_query(parse_qsl(query)))
    return report, report.model_dump_json().encode()


def report(spec: LabSpec) -> LabReport:
    """The report of a resolved spec; callers must not modify it."""
    return _cached(spec.query(), torch.__version__, device_ids())[0]


def report_json(spec: LabSpec) -> bytes:
    return _cached(spec.query(), torch.__version__, device_ids())[1]


def clear() -> None:
    _cached.cache_clear()
