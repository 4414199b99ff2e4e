"""One content digest of a generated folder (relative paths + bytes), for the synthesizers' determinism tests."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_digest(root: Path) -> str:
    """SHA-256 over every file below ``root``, in path order: equal digests = identical folders."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()
