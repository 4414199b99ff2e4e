"""Evaluation summary of a binary segmentation run from its per-case table, with patient-bootstrap CIs.

Three aggregates of each overlap metric, because they answer different questions and the PHE
notes report only the first:

* ``pooled`` — voxel counts summed over every case, then the ratio (how the PHE notes report their
  Dice 0.3936; dominated by large lesions and blind to empty slices);
* ``per_image`` — the mean over cases whose truth has a lesion (the honest per-slice figure;
  an empty-truth case has no defined Dice), plus ``per_image_all`` over every case with the
  empty-case convention (both empty = 1) for comparison;
* ``per_patient`` — counts summed within a patient, then the mean over patients.

All CIs resample patients as wholes (:func:`~medtasks.metrics.bootstrap.bootstrap_ci`).

Example:
    >>> t = case_table([np.ones((2, 2))], [np.ones((2, 2))], ["p1"])
    >>> segmentation_summary(t, n_boot=20)["pooled"]["dice"]["value"]
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medtasks.metrics.bootstrap import bootstrap_ci
from medtasks.metrics.segmentation import (
    case_metric_fn,
    confusion_counts,
    hd95,
    metrics_from_counts,
    pooled_metric_fn,
)

__all__ = ["case_row", "case_table", "segmentation_summary", "SUMMARY_METRICS"]

SUMMARY_METRICS = ("dice", "iou", "sens", "spec")
COUNTS = ("tp", "fp", "fn", "tn")


def case_row(pred: np.ndarray, true: np.ndarray, group: Any, with_hd95: bool = True,
             spacing: float | Sequence[float] | None = None, empty_value: float | None = 1.0) -> dict[str, Any]:
    """One case's counts, overlap metrics, areas and HD95 (NaN unless both masks have foreground)."""
    c = confusion_counts(pred, true)
    row: dict[str, Any] = {"group": group, **c, "n_true": c["tp"] + c["fn"], "n_pred": c["tp"] + c["fp"]}
    row.update(metrics_from_counts(c, empty_value))
    row["hd95"] = hd95(pred, true, spacing) if with_hd95 and row["n_true"] and row["n_pred"] else float("nan")
    return row


def case_table(preds: Sequence[np.ndarray], trues: Sequence[np.ndarray], groups: Sequence[Any],
               **kwargs: Any) -> pd.DataFrame:
    """:func:`case_row` of every case, as a frame (one row per case, in order)."""
    return pd.DataFrame([case_row(p, t, g, **kwargs) for p, t, g in zip(preds, trues, groups)])


def _per_patient(table: pd.DataFrame, empty_value: float | None) -> pd.DataFrame:
    summed = table.groupby("group", sort=True)[list(COUNTS)].sum()
    rows = [metrics_from_counts(r, empty_value) for r in summed.to_dict("records")]
    return pd.DataFrame(rows, index=summed.index).reset_index()


def _classification(table: pd.DataFrame, min_area: int) -> dict[str, Any]:
    """The notes' seg -> classification check: truth = lesion in the mask, call = >= min_area pixels."""
    from sklearn.metrics import classification_report, confusion_matrix

    y = (table["n_true"] > 0).astype(int).to_numpy()
    p = (table["n_pred"] >= int(min_area)).astype(int).to_numpy()
    kw = dict(labels=[0, 1], target_names=["no lesion", "lesion"], zero_division=0)
    return {"min_area": int(min_area), "confusion_matrix": confusion_matrix(y, p, labels=[0, 1]).tolist(),
            "report": classification_report(y, p, output_dict=True, **kw),
            "report_text": classification_report(y, p, digits=4, **kw)}


def segmentation_summary(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0, min_area: int = 1,
                         empty_value: float | None = 1.0) -> dict[str, Any]:
    """Pooled / per-image / per-patient Dice, IoU, sensitivity, specificity with CIs, HD95, the pooled
    pixel confusion matrix and the seg -> classification report (see the module docstring).

    Args:
        table: :func:`case_table` output (``group`` = patient id).
        n_boot: bootstrap replicates (patients resampled as wholes).
        seed: bootstrap seed.
        min_area: predicted pixels that make a case "positive" in the classification check.
        empty_value: Dice etc. of a case with both masks empty (``per_image_all``; pooled sums are unaffected).
    """
    if table.empty:
        raise ValueError("no cases to summarise")
    groups = table["group"].astype(str).to_numpy()
    lesion = table[table["n_true"] > 0].reset_index(drop=True)
    patients = _per_patient(table, empty_value)
    out: dict[str, Any] = {"n_cases": int(len(table)), "n_cases_with_lesion": int(len(lesion)),
                           "n_patients": int(patients.shape[0])}
    out["pooled"] = {m: bootstrap_ci(pooled_metric_fn(table, m, empty_value), groups, n_boot=n_boot, seed=seed)
                     for m in SUMMARY_METRICS}
    out["pooled"]["counts"] = {k: int(table[k].sum()) for k in COUNTS}
    out["per_image"] = ({m: bootstrap_ci(case_metric_fn(lesion, m), lesion["group"].astype(str).to_numpy(),
                                         n_boot=n_boot, seed=seed) for m in ("dice", "iou", "sens")}
                        if len(lesion) else {})
    out["per_image_all"] = {m: bootstrap_ci(case_metric_fn(table, m), groups, n_boot=n_boot, seed=seed)
                            for m in SUMMARY_METRICS}
    out["per_patient"] = {m: bootstrap_ci(case_metric_fn(patients, m), patients["group"].astype(str).to_numpy(),
                                          n_boot=n_boot, seed=seed) for m in SUMMARY_METRICS}
    both = table[np.isfinite(table["hd95"].to_numpy(float))].reset_index(drop=True)
    out["hd95"] = ({"mean": bootstrap_ci(case_metric_fn(both, "hd95"), both["group"].astype(str).to_numpy(),
                                         n_boot=n_boot, seed=seed),
                    "median": float(both["hd95"].median()), "n": int(len(both))} if len(both) else {"n": 0})
    c = out["pooled"]["counts"]
    out["pixel_confusion_matrix"] = [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]
    out["seg_to_classification"] = _classification(table, min_area)
    out["headline"] = {"pooled_dice": out["pooled"]["dice"], "per_patient_dice": out["per_patient"]["dice"]}
    if out["per_image"]:
        out["headline"]["per_image_dice"] = out["per_image"]["dice"]
    return out
