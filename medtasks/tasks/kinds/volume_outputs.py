"""The files ``predict`` writes for one predicted volume, shared by every volume-predicting segmentation task
(ms_segment, phe_segment on NIfTI / DICOM input, cardiac_seg), in the naming scheme of
:mod:`medtasks.io.seg_outputs`:

* ``masks/<case>.nii.gz`` — the label map in the input volume's space (its affine and header), always;
* ``probabilities/<case>.nii.gz`` — float32 probabilities, with ``--probabilities``;
* ``seg/<case>.dcm`` — a DICOM Segmentation referencing the source instances, when the input was a DICOM
  series (:mod:`medtasks.io.dicom_seg`), one segment per entry of the task's ``dicom_segments``; a series
  whose headers cannot support one (no FrameOfReferenceUID, say) keeps its NIfTI mask and gets a warning and
  a ``dicom_seg_error`` column naming the file and the missing attributes.

The function returns the ``predictions.csv`` columns naming the files (relative to the output folder).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medtasks.io.dicom_seg import SegSourceError, write_dicom_seg
from medtasks.io.seg_outputs import (
    DICOM_SEG,
    MASKS,
    PROBABILITIES,
    output_path,
    save_label_nifti,
    save_probability_nifti,
)

__all__ = ["write_volume_outputs", "algorithm_version"]

log = logging.getLogger(__name__)


def algorithm_version(run: Any) -> str:
    """``"medtasks <version>, run <run directory name>"``: what a DICOM object names as its algorithm version."""
    from medtasks import __version__

    return f"medtasks {__version__}, run {Path(run.path if hasattr(run, 'path') else run).name}"[:64]


def write_volume_outputs(task: Any, run: Any, out_dir: str | Path, case: str, labels: np.ndarray, reference: str,
                         dicom_files: Sequence[str] = (), probabilities: np.ndarray | None = None) -> dict[str, str]:
    """Write the outputs of one volume (see the module docstring); returns ``{mask, probabilities, dicom_seg}``
    columns (the ones written) as paths relative to ``out_dir``."""
    out_dir = Path(out_dir)
    cols = {"mask": save_label_nifti(labels, reference, output_path(out_dir, MASKS, case, "nifti"))}
    if probabilities is not None:
        cols["probabilities"] = save_probability_nifti(probabilities, reference,
                                                       output_path(out_dir, PROBABILITIES, case, "nifti"))
    notes = {}
    if dicom_files:
        try:
            cols["dicom_seg"] = write_dicom_seg(dicom_files, labels, task.dicom_segments,
                                                output_path(out_dir, DICOM_SEG, case, "dicom"),
                                                algorithm=f"medtasks {task.name}", version=algorithm_version(run),
                                                series_description=f"medtasks {task.name} (research use)")
        except SegSourceError as exc:   # the NIfTI mask stands; the row says why there is no SEG
            log.warning("%s: no DICOM SEG: %s", case, exc)
            notes["dicom_seg_error"] = str(exc)
    return {**{k: str(Path(v).relative_to(out_dir)) for k, v in cols.items()}, **notes}
