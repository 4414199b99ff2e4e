"""Evaluation summary of a binary segmentation run from its per-case table, with patient-bootstrap CIs.

Three aggregates of each overlap metric, because they answer different questions and the PHE
notes report only the first:

* ``pooled`` — voxel counts summed over every case, then the ratio (how the PHE notes report their
  Dice 0.3936; dominated by large lesions and blind to empty slices);
* ``per_image`` — the mean over cases whose truth has a lesion (the honest per-slice figure;
  an empty-truth case has no defined Dice), plus ``per_image_all`` over every case with the
  empty-case convention (both empty = 1) for comparison;
* ``per_patient`` — counts summed within a patient, then the mean over patients.

Boundary metrics are per-case means: ``hd95`` and ``assd`` over cases with foreground in both masks
(a distance to an empty mask is undefined; ``n`` says how many), ``nsd`` over cases whose truth has a
lesion like ``per_image`` Dice (a missed lesion scores 0; false alarms on lesion-free slices are left
to ``seg_to_classification``). Their unit is the caller's (mm or pixels; the run's ``metrics.json``
records it).

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
from medtasks.metrics.surface import assd, nsd

__all__ = ["case_row", "case_table", "segmentation_summary", "SUMMARY_METRICS"]

SUMMARY_METRICS = ("dice", "iou", "sens", "spec")
COUNTS = ("tp", "fp", "fn", "tn")


def case_row(pred: np.ndarray, true: np.ndarray, group: Any, with_hd95: bool = True,
             spacing: float | Sequence[float] | None = None, empty_value: float | None = 1.0,
             with_surface: bool = False, nsd_tolerance: float | None = None) -> dict[str, Any]:
    """One case's counts, overlap metrics, areas and HD95 (NaN unless both masks have foreground).

    ``with_surface`` adds ``assd`` (NaN unless both masks have foreground, like HD95) and ``nsd`` at
    ``nsd_tolerance`` (in the unit of ``spacing``: mm, or pixels without one; 0 when exactly one mask is
    empty, NaN when both are or when no tolerance is given; see :mod:`medtasks.metrics.surface`). Without
    it neither column exists, so callers that never asked for them (ms_segment's slices) keep their tables.
    """
    c = confusion_counts(pred, true)
    row: dict[str, Any] = {"group": group, **c, "n_true": c["tp"] + c["fn"], "n_pred": c["tp"] + c["fp"]}
    row.update(metrics_from_counts(c, empty_value))
    both = bool(row["n_true"] and row["n_pred"])
    row["hd95"] = hd95(pred, true, spacing) if with_hd95 and both else float("nan")
    if with_surface:
        row["assd"] = assd(pred, true, spacing) if both else float("nan")
        row["nsd"] = float("nan") if nsd_tolerance is None else nsd(pred, true, nsd_tolerance, spacing)
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


def _case_summary(table: pd.DataFrame, column: str, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean (patient-bootstrap CI), median and ``n`` of a per-case column over the rows where it is finite."""
    sub = table[np.isfinite(table[column].to_numpy(float))].reset_index(drop=True)
    if not len(sub):
        return {"n": 0}
    return {"mean": bootstrap_ci(case_metric_fn(sub, column), sub["group"].astype(str).to_numpy(), n_boot=n_boot,
                                 seed=seed),
            "median": float(sub[column].median()), "n": int(len(sub))}


def segmentation_summary(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0, min_area: int = 1,
                         empty_value: float | None = 1.0) -> dict[str, Any]:
    """Pooled / per-image / per-patient Dice, IoU, sensitivity, specificity with CIs, HD95 (and ASSD / NSD
    when the table has them), the pooled pixel confusion matrix and the seg -> classification report (see
    the module docstring).

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
    out["hd95"] = _case_summary(table, "hd95", n_boot, seed)
    if "assd" in table.columns:
        out["assd"] = _case_summary(table, "assd", n_boot, seed)
    if "nsd" in table.columns:       # like per_image Dice: slices with a truth lesion, a missed one scores 0
        out["nsd"] = _case_summary(lesion, "nsd", n_boot, seed)
    c = out["pooled"]["counts"]
    out["pixel_confusion_matrix"] = [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]
    out["seg_to_classification"] = _classification(table, min_area)
    out["headline"] = {"pooled_dice": out["pooled"]["dice"], "per_patient_dice": out["per_patient"]["dice"]}
    if out["per_image"]:
        out["headline"]["per_image_dice"] = out["per_image"]["dice"]
    return out
