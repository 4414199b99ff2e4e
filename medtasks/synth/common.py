"""What every phantom generator shares: the ``.complete`` parameter marker and the parallel map.

Example:
    >>> run_parallel(abs, [-1, -2, 3], workers=1, desc="demo", unit="item", progress=False)
    [1, 2, 3]
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["marker_matches", "remove_stale", "run_parallel"]

T = TypeVar("T")


def marker_matches(marker: Path, params: dict[str, Any], *required: Path) -> bool:
    """True when ``marker`` holds exactly ``params`` and every ``required`` file exists (the set is complete)."""
    if not marker.is_file() or not all(p.is_file() for p in required):
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == params
    except (OSError, ValueError):
        return False  # unreadable marker: regenerate


def run_parallel(job: Callable[[Any], T], items: Sequence[Any], workers: int, desc: str, unit: str,
                 progress: bool = True, chunksize: int = 1) -> list[T]:
    """``[job(item) for item in items]`` in ``workers`` spawned processes (1 = in-process), in order,
    with a progress bar. Items must fully determine their output, so results do not depend on ``workers``."""
    n_workers = max(1, min(int(workers), len(items)))
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress)
    out: list[T] = []
    pool = None
    try:
        if n_workers == 1:
            results: Iterable[T] = (job(item) for item in items)
        else:
            pool = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"))
            results = pool.map(job, items, chunksize=chunksize)
        for result in results:
            out.append(result)
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    return out


def remove_stale(out: Path, roots: Sequence[str], expected: set[str], drop_empty_roots: bool = False) -> None:
    """Delete the files under ``out/<root>`` that ``expected`` (paths relative to ``out``) does not list — left
    by other parameters or an interrupted run — then the folders they leave empty (children first)."""
    for name in roots:
        root = out / name
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*"), reverse=True):  # children before their folders
            if path.is_dir():
                if not any(path.iterdir()):
                    path.rmdir()
            elif path.relative_to(out).as_posix() not in expected:
                path.unlink()
        if drop_empty_roots and not any(root.iterdir()):
            root.rmdir()
