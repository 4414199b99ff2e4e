"""Parallel, fault-tolerant scanning of input files (headers) with a progress bar.

One bad file never stops a scan: a reader error with a ``reason`` attribute (e.g.
:class:`medtasks.io.dicom.DicomReadError`) becomes a :class:`~medtasks.data.manifest.Rejected`
row; any other exception is recorded as ``unreadable`` with its message.

With a ``journal`` an interrupted scan resumes: every result is appended to a JSON-lines file as it
arrives (path, size, mtime and the row or the rejection), and a scan started again reads it and
rescans only the files not in it or changed since (size or mtime). The caller removes the journal
once its outputs are written.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from tqdm.auto import tqdm

from medtasks.data.manifest import Rejected

log = logging.getLogger(__name__)


def _safe_call(args: tuple[Callable, Any]) -> tuple[str, Any]:
    fn, item = args
    try:
        return "ok", fn(item)
    except Exception as exc:  # one bad file must not stop the scan
        return "err", (getattr(exc, "reason", "unreadable"), str(exc))


def _stamp(path: str) -> list[int]:
    try:
        st = os.stat(path)
    except OSError:
        return [-1, -1]
    return [int(st.st_size), int(st.st_mtime_ns)]


def read_journal(journal: Path) -> dict[str, tuple[list[int], str, Any]]:
    """``path -> (stamp, status, value)`` of a scan journal; a line cut by a crash is ignored."""
    done: dict[str, tuple[list[int], str, Any]] = {}
    if not journal.is_file():
        return done
    with open(journal, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                done[rec["p"]] = (rec["s"], rec["k"], rec["v"])
            except (ValueError, KeyError, TypeError):
                continue
    return done


def _journal_line(fh: IO[str] | None, path: str, status: str, value: Any) -> None:
    if fh is not None:
        fh.write(json.dumps({"p": path, "s": _stamp(path), "k": status, "v": value}, default=str) + "\n")


def default_workers() -> int:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, n)


def scan_files(paths: Sequence[str], reader: Callable[[str], dict], workers: int | None = None,
               desc: str = "scan", progress: bool = True, serial_below: int = 64,
               journal: Path | None = None) -> tuple[list[dict], Rejected]:
    """Apply ``reader`` to every path (in parallel processes); return (rows, rejected), in ``paths`` order.

    ``reader`` must be a picklable top-level function (a ``functools.partial`` of one is fine), its rows
    JSON-serialisable when a ``journal`` is kept (see the module docstring).
    Small inputs (< ``serial_below`` files) run in-process: starting workers costs more.
    """
    workers = default_workers() if workers is None else max(1, workers)
    results: dict[str, tuple[str, Any]] = {}
    if journal is not None:
        wanted = set(paths)
        for path, (stamp, status, value) in read_journal(journal).items():
            if path in wanted and stamp == _stamp(path):  # unchanged since it was scanned
                results[path] = (status, value if status == "ok" else tuple(value))
    todo = [p for p in paths if p not in results]
    if journal is not None and len(todo) < len(paths):
        log.info("%s: %d of %d files already scanned (%s); scanning the other %d", desc, len(paths) - len(todo),
                 len(paths), journal.name, len(todo))
    if journal is not None:
        journal.parent.mkdir(parents=True, exist_ok=True)
    fh = open(journal, "a", encoding="utf-8") if journal is not None else None
    try:
        jobs = [(reader, p) for p in todo]
        bar = dict(total=len(paths), initial=len(paths) - len(todo), desc=desc, disable=not progress, leave=False)
        if workers == 1 or len(jobs) < serial_below:
            for path, res in zip(todo, tqdm(map(_safe_call, jobs), **bar)):
                results[path] = res
                _journal_line(fh, path, *res)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                out = pool.map(_safe_call, jobs, chunksize=max(1, min(64, len(jobs) // (workers * 8) or 1)))
                for i, (path, res) in enumerate(zip(todo, tqdm(out, **bar))):
                    results[path] = res
                    _journal_line(fh, path, *res)
                    if fh is not None and i % 1000 == 999:
                        fh.flush()
    finally:
        if fh is not None:
            fh.close()
    rows: list[dict] = []
    rejected = Rejected()
    for path in paths:
        _collect(path, *results[path], rows, rejected)
    if rejected:
        log.warning("%s: %d of %d files rejected (see rejected.csv)", desc, len(rejected), len(paths))
    return rows, rejected


def _collect(path: str, status: str, value: Any, rows: list[dict], rejected: Rejected) -> None:
    if status == "ok":
        rows.append(value)
    else:
        reason, detail = value
        rejected.add(path, reason, detail)
