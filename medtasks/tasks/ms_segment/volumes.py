"""Volumes of ``ms_segment``: a FLAIR volume predicted slice by slice and stacked back, masks saved in the input's
space, and the inputs of ``medtasks predict`` (NIfTI files, DICOM series folders converted once and cached).

``predict_volume``: the volume's brain slices go through the network (batch by batch), each probability
map is resized back to the slice's grid and thresholded, and the slices are stacked into a mask volume in
the FLAIR's own voxel grid. The evaluation and ``predict`` built on it: :mod:`medtasks.tasks.ms_segment.evaluate`.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import pandas as pd

from medtasks.data.manifest import Rejected
from medtasks.io.nifti import check_axial, save_nifti_atomic
from medtasks.io.radiograph import is_dicom  # suffix .dcm or the DICM marker (DICOM often has no suffix)
from medtasks.paths import cache_dir
from medtasks.transforms.slicing import load_volume

if TYPE_CHECKING:
    from medtasks.tasks.ms_segment.task import MsSegment

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
VOLUME_COLUMNS = ("subject_id", "timepoint", "flair", "mask")


def parse_shape(text: str) -> tuple[int, ...]:
    """``"181x217x181"`` -> ``(181, 217, 181)``."""
    return tuple(int(v) for v in str(text).lower().split("x"))


def predict_volume(task: MsSegment, model: Any, row: dict, split: str) -> np.ndarray:
    """Boolean lesion mask in the FLAIR's ``(x, y, z)`` grid (slices outside the brain stay empty)."""
    shape = parse_shape(row["shape"])
    pred = np.zeros(shape[:3], bool)
    slices = task.slice_frame(pd.DataFrame([row]))
    ks = slices["slice_index"].to_numpy()
    thr = task.cfg.eval.threshold

    def consume(i: int, prob: np.ndarray) -> None:
        pred[:, :, int(ks[i])] = (prob >= thr).T

    if len(slices):
        task.stream_masks(model, slices.assign(split=split), split, consume)
    return pred


def save_mask(mask: np.ndarray, reference: str, path: Path) -> None:
    """``mask`` as uint8 NIfTI with ``reference``'s affine and header (the input's own space)."""
    ref = nib.load(reference)
    img = nib.Nifti1Image(mask.astype(np.uint8), ref.affine, ref.header)
    img.set_data_dtype(np.uint8)
    save_nifti_atomic(img, path)


def _dicom_series(folder: Path, cache: Path, rejected: Rejected) -> list[tuple[Path, str]]:
    """The DICOM series of ``folder`` as NIfTI volumes in ``cache`` (:mod:`medtasks.io.dicom_series`: slices
    ordered by position along the normal, spacing from the positions, affine in RAS); a series it cannot
    stack (uneven or duplicate positions, mixed orientations, ...) becomes a ``rejected`` row. A folder with
    several series gives several volumes, named ``<folder>_<series>``."""
    from medtasks.io.dicom_series import read_series_folder, save_series_nifti

    files = sorted(p for p in folder.iterdir() if p.is_file())
    key = hashlib.sha256("|".join(f"{p}:{p.stat().st_mtime_ns}" for p in files).encode()).hexdigest()[:12]
    volumes, bad = read_series_folder(folder)
    for path, reason, detail in bad:
        rejected.add(path, reason, f"DICOM series: {detail}")
    out = []
    for vol in volumes:
        name = folder.name if len(volumes) == 1 else f"{folder.name}_{vol.name}"
        path = cache / f"{name}-{key}.nii.gz"
        if not path.is_file():
            save_series_nifti(vol, path)
        out.append((path, name))
    return out


def find_volumes(task: MsSegment, source: Path) -> tuple[pd.DataFrame, Rejected]:
    """NIfTI files under ``source`` (or ``source`` itself) and DICOM series folders (converted once, cached)."""
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    rows, rejected = [], Rejected()
    dicom = {p for p in files if not p.name.lower().endswith(NIFTI_SUFFIXES) and is_dicom(p)}
    series = sorted({p.parent for p in dicom})
    for p in files:
        if p in dicom:
            continue
        if not p.name.lower().endswith(NIFTI_SUFFIXES):
            rejected.add(p, "unknown_file", "not a NIfTI file or a DICOM series (.dcm)")
            continue
        rows.append((p, p.name.split(".nii")[0]))
    for folder in series:
        try:
            rows.extend(_dicom_series(folder, cache_dir() / "dicom_series", rejected))
        except OSError as exc:  # a folder that cannot be read: one row, the run goes on
            rejected.add(folder, "unreadable", f"DICOM series: {type(exc).__name__}: {exc}")
    out = []
    for path, name in rows:
        try:
            check_axial(str(path))
            shape = load_volume(path).shape
        except ValueError as exc:
            rejected.add(path, "unreadable", str(exc).split(": ", 1)[-1])
            continue
        out.append({"flair": str(path), "subject_id": name, "timepoint": "", "shape": "x".join(map(str, shape))})
    return pd.DataFrame(out, columns=["flair", "subject_id", "timepoint", "shape"]), rejected
