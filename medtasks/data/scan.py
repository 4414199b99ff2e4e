"""Parallel, fault-tolerant scanning of input files (headers) with a progress bar.

One bad file never stops a scan: a reader error with a ``reason`` attribute (e.g.
:class:`medtasks.io.dicom.DicomReadError`) becomes a :class:`~medtasks.data.manifest.Rejected`
row; any other exception is recorded as ``unreadable`` with its message.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from medtasks.data.manifest import Rejected

log = logging.getLogger(__name__)


def _safe_call(args: tuple[Callable, Any]) -> tuple[str, Any]:
    fn, item = args
    try:
        return "ok", fn(item)
    except Exception as exc:  # one bad file must not stop the scan
        return "err", (getattr(exc, "reason", "unreadable"), str(exc))


def default_workers() -> int:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, n)


def scan_files(paths: Sequence[str], reader: Callable[[str], dict], workers: int | None = None,
               desc: str = "scan", progress: bool = True, serial_below: int = 64) -> tuple[list[dict], Rejected]:
    """Apply ``reader`` to every path (in parallel processes); return (rows, rejected).

    ``reader`` must be a picklable top-level function (a ``functools.partial`` of one is fine).
    Small inputs (< ``serial_below`` files) run in-process: starting workers costs more.
    """
    workers = default_workers() if workers is None else max(1, workers)
    rows: list[dict] = []
    rejected = Rejected()
    jobs = [(reader, p) for p in paths]
    if workers == 1 or len(jobs) < serial_below:
        results = map(_safe_call, jobs)
        results = tqdm(results, total=len(jobs), desc=desc, disable=not progress, leave=False)
        pairs = zip(paths, results)
        for path, (status, value) in pairs:
            _collect(path, status, value, rows, rejected)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_safe_call, jobs, chunksize=max(1, min(64, len(jobs) // (workers * 8) or 1)))
            for path, (status, value) in zip(paths, tqdm(results, total=len(jobs), desc=desc,
                                                          disable=not progress, leave=False)):
                _collect(path, status, value, rows, rejected)
    if rejected:
        log.warning("%s: %d of %d files rejected (see rejected.csv)", desc, len(rejected), len(paths))
    return rows, rejected


def _collect(path: str, status: str, value: Any, rows: list[dict], rejected: Rejected) -> None:
    if status == "ok":
        rows.append(value)
    else:
        reason, detail = value
        rejected.add(path, reason, detail)
