"""``medtasks predict``: a trained run's task on new inputs — a local file or folder, or a study pulled over
DICOMweb — into an output folder: ``predictions.csv``, ``rejected.csv``, the task's files (masks, probability maps,
``submission.csv``), the DICOM objects a viewer opens (a segmentation's DICOM SEG, a classifier's Comprehensive
SR), optionally stored back on a PACS with STOW-RS, and ``predict.json`` recording what was read, made and stored.

Example:
    >>> predict_into(task, run, "dicomweb:https://pacs/dicom-web/studies/1.2.3", out, store="https://pacs/dicom-web")
    ... # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medtasks.io.atomic import write_csv_atomic, write_json_atomic
from medtasks.rundir import RunDir
from medtasks.tasks.contract import Task, write_rejected

__all__ = ["predict_into"]

log = logging.getLogger(__name__)


def predict_into(task: Task, rd: RunDir, input_path: str | Path, out_dir: Path, progress: bool = True,
                 probabilities: bool = False, store: str | None = None) -> Path:
    """Predict ``input_path`` (a path, or a ``dicomweb:`` study / series URL) with ``task`` restored from ``rd``
    into ``out_dir``; with ``store`` send the DICOM outputs to that DICOMweb server. Returns ``out_dir``."""
    from medtasks.io.dicomweb import SCHEME, check_base_url, is_dicomweb_url, retrieved

    if probabilities and not task.probability_maps:
        raise ValueError(f"--probabilities writes probability maps of segmentation tasks; {task.name} ({task.kind}) "
                         f"already puts its probabilities in predictions.csv")
    if store is not None:   # a bad address fails now, not after the prediction
        check_base_url(store[len(SCHEME):] if is_dicomweb_url(store) else store)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = str(input_path)
    if is_dicomweb_url(source):
        with retrieved(source, progress=progress) as folder:
            record = _predict_folder(task, rd, folder, out_dir, progress, probabilities, store)
    else:
        record = _predict_folder(task, rd, Path(input_path), out_dir, progress, probabilities, store)
    write_json_atomic(out_dir / "predict.json", {"input": source, "run": str(rd.path.resolve()), **record})
    return out_dir


def _predict_folder(task: Task, rd: RunDir, source: Path, out_dir: Path, progress: bool, probabilities: bool,
                    store: str | None) -> dict[str, Any]:
    """``predict`` on a local file or folder: predictions.csv, rejected.csv, the task's files and DICOM objects;
    with ``store`` the DICOM objects sent over STOW-RS. Returns what ``predict.json`` records."""
    df, rejected = task.predict_inputs(source)
    write_rejected(out_dir / "rejected.csv", rejected)
    if df.empty:
        raise ValueError(f"{source}: no usable input ({len(rejected)} rejected; see {out_dir / 'rejected.csv'})")
    frame = task.predict_frame(rd, df, progress=progress, out_dir=out_dir, probabilities=probabilities)
    write_csv_atomic(frame, out_dir / "predictions.csv")
    task.write_predict_outputs(frame, out_dir)
    dicom = [Path(p) for p in task.write_dicom_outputs(rd, df, frame, out_dir)]
    log.info("predicted %d cases (%d rejected, %d DICOM objects) -> %s", len(frame), len(rejected), len(dicom),
             out_dir)
    record: dict[str, Any] = {"n_cases": len(frame), "n_rejected": len(rejected),
                              "dicom_outputs": [p.relative_to(out_dir).as_posix() for p in dicom]}
    if store is not None:
        from medtasks.io.dicomweb import store as stow

        if not dicom:
            raise ValueError(f"--store {store}: {task.name} made no DICOM object of {source} (a DICOM SEG needs a "
                             f"DICOM series as input, an SR DICOM images); the outputs are in {out_dir}")
        uids = stow(store, dicom)
        log.info("stored %d DICOM object(s) on %s", len(uids), store)
        record["stored"] = {"server": store, "sop_instance_uids": uids}
    return record
