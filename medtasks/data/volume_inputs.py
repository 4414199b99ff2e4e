"""The volumes under a ``medtasks predict --input``: NIfTI files and DICOM series folders.

Shared by the volume-reading segmentation tasks (ms_segment, phe_segment on NIfTI / DICOM, cardiac_seg).
A NIfTI file is one volume. A folder of DICOM files gives one volume per series
(:mod:`medtasks.io.dicom_series`: slices ordered by position along the normal, spacing from the
positions, RAS affine); each series is converted to NIfTI once, in the cache, keyed by its content (the series
UID, the voxel values and the affine: a study retrieved again over DICOMweb into a new temporary folder hits the
same entry), and its slice files, in the volume's slice order and at their current place, are the row's
``dicom_files`` (a JSON list), so a DICOM Segmentation can reference them (:mod:`medtasks.io.dicom_seg`).
A series that cannot be stacked (uneven or duplicate positions, mixed orientations, ...) and a file that is
neither NIfTI nor DICOM become ``rejected`` rows with the reason.

Example:
    >>> rows, rejected = find_volumes("study/")  # doctest: +SKIP
    >>> rows.columns.tolist()  # doctest: +SKIP
    ['volume', 'name', 'dicom_files']
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd

from medtasks.data.manifest import Rejected
from medtasks.io.images import list_files
from medtasks.io.radiograph import is_dicom
from medtasks.paths import cache_dir

__all__ = ["NIFTI_SUFFIXES", "find_volumes", "series_files", "volume_name"]

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def volume_name(path: str | Path) -> str:
    """``scan.nii.gz`` -> ``scan``."""
    return Path(path).name.split(".nii")[0]


def series_files(row: dict | pd.Series) -> list[str]:
    """The DICOM slice files of a row from :func:`find_volumes`, in the volume's slice order (``[]`` for NIfTI)."""
    ref = row.get("dicom_files") if hasattr(row, "get") else None
    return list(json.loads(ref)) if isinstance(ref, str) and ref else []


def _convert_folder(folder: Path, cache: Path, rejected: Rejected) -> list[tuple[Path, str, str]]:
    """The DICOM series of ``folder`` as cached NIfTI volumes: ``(nifti, name, files as JSON)``; a folder holding
    several series gives ``<folder>_<series>`` names."""
    from medtasks.io.dicom_series import read_series_folder, save_series_nifti

    volumes, bad = read_series_folder(folder)
    for path, reason, detail in bad:
        rejected.add(path, reason, f"DICOM series: {detail}")
    out = []
    for vol in volumes:
        name = folder.name if len(volumes) == 1 else f"{folder.name}_{vol.name}"
        key = hashlib.sha256(vol.series_instance_uid.encode() + vol.affine.tobytes()
                             + vol.array.tobytes()).hexdigest()[:12]
        path = cache / f"{name}-{key}.nii.gz"
        if not path.is_file():
            save_series_nifti(vol, path)
        out.append((path, name, json.dumps([str(Path(f).resolve()) for f in vol.files])))
    return out


def find_volumes(source: str | Path, skip_suffixes: tuple[str, ...] = ()) -> tuple[pd.DataFrame, Rejected]:
    """NIfTI files under ``source`` (or ``source`` itself) and its DICOM series folders, one row per volume:
    ``volume`` (a NIfTI path; DICOM series converted in the cache), ``name`` (file stem or series folder),
    ``dicom_files`` (the series' files in slice order as a JSON list, ``""`` for NIfTI input). Files whose suffix is in
    ``skip_suffixes`` are left alone (another reader of the caller takes them); hidden files are skipped."""
    files = [p for p in list_files(source) if p.suffix.lower() not in skip_suffixes]
    rows, rejected = [], Rejected()
    dicom = {p for p in files if not p.name.lower().endswith(NIFTI_SUFFIXES) and p.name.upper() != "DICOMDIR"
             and is_dicom(p)}
    for p in files:
        if p in dicom:
            continue
        if not p.name.lower().endswith(NIFTI_SUFFIXES):
            rejected.add(p, "unknown_file", "not a NIfTI file (.nii / .nii.gz) or a DICOM series")
            continue
        rows.append((str(p.resolve()), volume_name(p), ""))
    for folder in sorted({p.parent for p in dicom}):
        try:
            rows.extend((str(n), name, listing) for n, name, listing in
                        _convert_folder(folder, cache_dir() / "dicom_series", rejected))
        except OSError as exc:  # a folder that cannot be read: one row, the run goes on
            rejected.add(folder, "unreadable", f"DICOM series: {type(exc).__name__}: {exc}")
    return pd.DataFrame(rows, columns=["volume", "name", "dicom_files"]), rejected
