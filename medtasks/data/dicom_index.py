"""Index a folder of single-slice DICOM files from their headers (no pixel data read).

Parallel and fault-tolerant (:func:`medtasks.data.scan.scan_files`): every file that cannot be
used becomes a ``rejected.csv`` row. Rows are sorted by series and z with ``z_normalized``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd

from medtasks.data.manifest import Rejected
from medtasks.data.scan import scan_files
from medtasks.data.series import add_z_normalized
from medtasks.io.dicom import read_header


def find_dicoms(source: Path) -> list[str]:
    """Every ``*.dcm`` below ``source`` (or ``source`` itself), sorted for a stable manifest order."""
    source = Path(source)
    if source.is_file():
        return [str(source)]
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder")
    return sorted(str(p) for p in source.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ".dicom"))


def index_dicoms(source: Path, workers: int | None = None, progress: bool = True,
                 modality: str | None = "CT", journal: Path | None = None) -> tuple[pd.DataFrame, Rejected]:
    """Header-only scan of a DICOM file/folder -> one row per usable slice, with ``z_normalized``.

    ``journal``: a scan journal (:func:`~medtasks.data.scan.scan_files`): an interrupted scan, run again,
    reads only the files it had not reached."""
    paths = find_dicoms(source)
    if not paths:
        raise FileNotFoundError(f"{source}: no .dcm files found")
    rows, rejected = scan_files(paths, partial(read_header, modality=modality, require_position=True),
                                workers=workers, desc="reading DICOM headers", progress=progress, journal=journal)
    cols = ["patient_id", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "z", "path",
            "manufacturer", "manufacturer_model", "sex", "age"]   # the last four: --by columns where present
    df = pd.DataFrame(rows, columns=cols).rename(columns={"z": "Z"})
    dup = df.duplicated("sop_instance_uid", keep="first")
    for p in df.loc[dup, "path"]:
        rejected.add(p, "duplicate_sop", "another file has the same SOPInstanceUID; the first (sorted) is kept")
    df = df[~dup]
    return add_z_normalized(df), rejected
