"""Atomic file writes: write a temporary sibling, then ``os.replace`` it over the target.

Readers (and a crash) never see half a file; a failed write leaves no temporary behind.

Example:
    >>> with atomic_path("out/report.html") as tmp:
    ...     tmp.write_text("<html></html>")
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

_WRITES_OFF = 0


@contextmanager
def writes_disabled(disabled: bool = True) -> Iterator[None]:
    """Inside, every writer of this module writes into a private temporary folder that is then deleted:
    the process leaves no file behind. What a torchrun rank other than 0 runs in (it trains, rank 0 writes
    the run directory); ``disabled=False`` changes nothing.
    """
    global _WRITES_OFF
    _WRITES_OFF += int(disabled)
    try:
        yield
    finally:
        _WRITES_OFF -= int(disabled)


def writes_enabled() -> bool:
    return _WRITES_OFF == 0


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` (see :func:`writes_disabled`)."""
    path = Path(path)
    if _WRITES_OFF:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="medtasks-unwritten-") as scratch:
            yield Path(scratch) / path.name
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` (``\\n`` line ends) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
    return Path(path)


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (numpy scalars and paths converted) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_csv_atomic(df: Any, path: str | Path) -> Path:
    """Write the pandas frame ``df`` (no index) to ``path`` atomically, so readers never see half a file."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def copy_file_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` over ``dst`` atomically (a checkpoint copied into the run directory)."""
    import shutil

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)
