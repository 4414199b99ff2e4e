"""Manifests (CSV, one row per case/slice) and the rejected-input list.

Paths in a manifest are relative to its own folder unless ``data.root`` or ``$MEDTASKS_DATA_ROOT``
says otherwise; absolute paths are kept as they are.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from medtasks.io.atomic import write_csv_atomic

log = logging.getLogger(__name__)

REJECTED_COLUMNS = ("path", "reason", "detail")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the fix."""


def data_root(manifest: str | Path, root: str | None = None) -> Path:
    """Folder that relative manifest paths start from (config > env var > manifest folder)."""
    if root:
        return Path(root)
    env = os.environ.get("MEDTASKS_DATA_ROOT")
    return Path(env) if env else Path(manifest).resolve().parent


def read_manifest(path: str | Path, required: Sequence[str], root: str | None = None,
                  path_columns: Sequence[str] = ("path",)) -> pd.DataFrame:
    """Read and check a manifest; path columns come back absolute.

    Raises:
        ManifestError: missing file, missing columns (listed), or empty manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; "
                            f"make one with `medtasks prepare <task> --source ... --out {path}`")
    df = pd.read_csv(path, dtype={"patient_id": str, "subject_id": str, "series_instance_uid": str,
                                  "sop_instance_uid": str})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest {path} lacks column(s) {missing}; it has {list(df.columns)}. "
                            f"See data_manifests/README.md for the schema.")
    if df.empty:
        raise ManifestError(f"manifest {path} has no rows")
    base = data_root(path, root)
    for col in path_columns:
        if col in df.columns:
            # An empty cell (optional file, e.g. no NIfTI for a slice) stays empty, not the manifest's folder.
            df[col] = ["" if pd.isna(p) or str(p) == "" else str(p) if os.path.isabs(str(p))
                       else str((base / str(p)).resolve()) for p in df[col]]
    return df


def relative_paths(paths: Iterable[str | Path], start: str | Path) -> list[str]:
    """Paths relative to ``start`` where possible (manifests stay valid when a folder moves)."""
    start = Path(start).resolve()
    out = []
    for p in paths:
        try:
            out.append(os.path.relpath(Path(p).resolve(), start))
        except ValueError:  # other drive on Windows
            out.append(str(Path(p).resolve()))
    return out


@dataclass
class Rejected:
    """Inputs that could not be used, with the reason: becomes ``rejected.csv``."""

    rows: list[dict] = field(default_factory=list)

    def add(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.rows.append({"path": str(path), "reason": reason, "detail": detail})

    def extend(self, other: "Rejected | Iterable[dict]") -> None:
        self.rows.extend(other.rows if isinstance(other, Rejected) else other)

    def __len__(self) -> int:
        return len(self.rows)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(REJECTED_COLUMNS))

    def write(self, path: str | Path) -> Path:
        return write_csv_atomic(self.frame().sort_values(["reason", "path"], kind="stable"), path)

    @classmethod
    def read(cls, path: str | Path) -> "Rejected":
        path = Path(path)
        if not path.is_file():
            return cls()
        df = pd.read_csv(path, dtype=str).fillna("")
        return cls(df.to_dict("records"))


def _relative_cells(values: Iterable, base: Path) -> list:
    """Path cells relative to ``base``; empty / NaN cells stay empty, non-strings unchanged."""
    return [relative_paths([v], base)[0] if isinstance(v, str) and v else ("" if pd.isna(v) else v) for v in values]


def write_manifest_with_rejected(df: pd.DataFrame, out: str | Path, rejected: "Rejected",
                                 path_columns: Sequence[str], what: str = "manifest") -> tuple[Path, Path]:
    """Write a ``prepare`` result: ``out`` and ``<stem>.rejected.csv`` atomically, the ``path_columns`` (and
    the rejected paths) relative to ``out``'s folder so the pair stays valid when the folder moves.

    Idempotent: the same frame and rejections give the same bytes (rows in the frame's order, rejections
    sorted by reason and path). Every dataset's ``write_*_manifest`` is this with its own columns.
    """
    out = Path(out)
    base = out.resolve().parent
    frame = df.copy()
    for col in path_columns:
        if col in frame.columns:
            frame[col] = _relative_cells(frame[col], base)
    write_csv_atomic(frame, out)
    rej = Rejected([{**r, "path": _relative_cells([r["path"]], base)[0]} for r in rejected.rows])
    rej_path = rej.write(out.with_name(out.stem + ".rejected.csv"))
    log.info("%s: %d rows -> %s; %d rejected -> %s", what, len(frame), out, len(rej), rej_path)
    return out, rej_path
