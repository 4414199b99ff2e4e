"""A classifier's ``predict`` on DICOM input as DICOM objects a viewer lists beside the study: one Comprehensive SR
per study (:func:`medtasks.io.dicom_sr.classification_sr`), holding every evaluated instance's probabilities and
calls, each finding referencing its source instance; written as ``sr/<StudyInstanceUID>.dcm`` beside
``predictions.csv``, ready for ``--store`` (STOW-RS).

A study whose headers cannot make an SR (invalid UIDs, as in the RSNA release's ``ID_...`` identifiers, or a
missing study module) keeps its ``predictions.csv`` rows and gets a warning naming the study and the reason.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom

from medtasks.io.atomic import atomic_path
from medtasks.io.radiograph import is_dicom

__all__ = ["SR_FOLDER", "classification_reports"]

log = logging.getLogger(__name__)

SR_FOLDER = "sr"


def classification_reports(task: Any, run: Any, df: pd.DataFrame, frame: pd.DataFrame, out_dir: str | Path
                           ) -> list[Path]:
    """One SR per study among the DICOM inputs of ``df`` (``frame``: predict's rows for ``df``, in order, with
    ``prob_<label>`` / ``pred_<label>``); returns the files written."""
    from medtasks.io.dicom_sr import classification_sr

    if len(df) != len(frame):
        raise ValueError(f"{len(frame)} prediction rows for {len(df)} inputs: cannot pair them for the DICOM SR")
    paths = df[task.input_column].astype(str).tolist()
    headers: dict[int, pydicom.Dataset] = {}
    for i, p in enumerate(paths):
        if is_dicom(p):
            try:
                headers[i] = pydicom.dcmread(p, stop_before_pixels=True)
            except Exception as exc:  # noqa: BLE001 - a header predict could read before: report, go on
                log.warning("%s: no SR for this file: %s", p, exc)
    by_study: dict[str, list[int]] = {}
    for i, ds in headers.items():
        by_study.setdefault(str(ds.get("StudyInstanceUID", "")), []).append(i)
    thresholds = task.thresholds()
    labels = list(task.labels)
    out = []
    run_id = Path(run.path if hasattr(run, "path") else run).name
    for study, rows in sorted(by_study.items()):
        probs = frame.iloc[rows][[f"prob_{lab}" for lab in labels]].to_numpy(dtype=float)
        calls = frame.iloc[rows][[f"pred_{lab}" for lab in labels]].to_numpy(dtype=int) == 1
        try:
            sr = classification_sr([headers[i] for i in rows], labels, probs, calls, task.name, run_id=run_id,
                                   thresholds=[thresholds[lab] for lab in labels])
        except (ValueError, AttributeError, TypeError) as exc:
            log.warning("study %s: no DICOM SR (%s); its predictions are in predictions.csv", study or "?", exc)
            continue
        path = Path(out_dir) / SR_FOLDER / f"{study}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            sr.save_as(tmp, enforce_file_format=True)
        out.append(path)
    return out
