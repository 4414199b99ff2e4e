"""Volumes of ``ms_segment``: a FLAIR volume predicted slice by slice and stacked back in the input's space, and
the inputs of ``medtasks predict`` (NIfTI files, DICOM series folders converted once and cached:
:mod:`medtasks.data.volume_inputs`).

``predict_probability``: the volume's brain slices go through the network (batch by batch), each probability
map is resized back to the slice's grid, and the slices are stacked into a probability volume in the FLAIR's
own voxel grid; ``predict_volume`` thresholds it. The evaluation and ``predict`` built on it:
:mod:`medtasks.tasks.ms_segment.evaluate`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medtasks.data.manifest import Rejected
from medtasks.data.volume_inputs import find_volumes
from medtasks.io.nifti import check_axial
from medtasks.transforms.slicing import load_volume

if TYPE_CHECKING:
    from medtasks.tasks.ms_segment.task import MsSegment

log = logging.getLogger(__name__)

VOLUME_COLUMNS = ("subject_id", "timepoint", "flair", "mask")


def parse_shape(text: str) -> tuple[int, ...]:
    """``"181x217x181"`` -> ``(181, 217, 181)``."""
    return tuple(int(v) for v in str(text).lower().split("x"))


def predict_probability(task: MsSegment, model: Any, row: dict, split: str) -> np.ndarray:
    """Lesion probability (float32) in the FLAIR's ``(x, y, z)`` grid; slices outside the brain stay 0."""
    return task.volume_probability(model, row["flair"], slice_rows=task.slice_frame(pd.DataFrame([row])), split=split)


def predict_volume(task: MsSegment, model: Any, row: dict, split: str) -> np.ndarray:
    """Boolean lesion mask in the FLAIR's ``(x, y, z)`` grid (``eval.threshold`` on :func:`predict_probability`)."""
    return predict_probability(task, model, row, split) >= task.cfg.eval.threshold


def find_ms_volumes(source: Path) -> tuple[pd.DataFrame, Rejected]:
    """``predict``'s inputs: NIfTI files and DICOM series folders (:func:`medtasks.data.volume_inputs.find_volumes`)
    as ms_segment rows (``flair``, ``subject_id`` = the file or series name, ``shape``, ``dicom_files``); a volume
    that is not an axial stack or cannot be read is rejected with the reason."""
    found, rejected = find_volumes(source)
    out = []
    for r in found.to_dict("records"):
        try:
            check_axial(r["volume"])
            shape = load_volume(r["volume"]).shape
        except ValueError as exc:
            rejected.add(r["volume"], "unreadable", str(exc).split(": ", 1)[-1])
            continue
        out.append({"flair": r["volume"], "subject_id": r["name"], "timepoint": "", "shape": "x".join(map(str, shape)),
                    "dicom_files": r["dicom_files"]})
    return pd.DataFrame(out, columns=["flair", "subject_id", "timepoint", "shape", "dicom_files"]), rejected
