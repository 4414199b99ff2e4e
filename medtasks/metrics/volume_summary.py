"""Per-volume evaluation of lesion segmentation (MS lesions): overlap, lesion-wise detection, volumes, ISBI.

One row per volume (:func:`volume_row`): voxel counts, Dice / IoU / sensitivity / PPV, lesion-wise
detection with 3-D connected components (18-connectivity, the ISBI 2015 rule), true and predicted
lesion volumes in mm^3, HD95 in mm. :func:`volume_summary` aggregates them with 95% CIs resampled
by subject (a subject's timepoints move together):

* ``per_volume`` — mean over volumes of Dice, IoU, sensitivity, PPV, lesion TPR / FPR / precision / F1;
* ``pooled`` — voxel counts summed over all volumes, then Dice / IoU / sensitivity / PPV;
* ``lesions_pooled`` — lesion counts summed, then TPR, precision, F1;
* ``volume_correlation`` — Pearson r of predicted vs true lesion volume over volumes;
* ``isbi`` — the raw ISBI 2015 composite (:func:`~medtasks.metrics.lesions.isbi_score`) of the
  per-volume means and the correlation (not the challenge's rater-normalised score).

Example:
    >>> t = np.zeros((8, 8, 4), bool); t[1:3, 1:3, 1] = True
    >>> row = volume_row(t, t, "s1")
    >>> row["dice"], row["ltpr"]
    (1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medtasks.metrics.bootstrap import bootstrap_ci
from medtasks.metrics.lesions import (
    isbi_score,
    lesion_detection,
    lesion_volume,
    pooled_lesion_scores,
    volume_correlation,
)
from medtasks.metrics.segmentation import case_metric_fn, confusion_counts, hd95, metrics_from_counts, pooled_metric_fn
from medtasks.metrics.surface import assd, nsd

__all__ = ["volume_row", "volume_summary"]

PER_VOLUME = ("dice", "iou", "sens", "ppv", "ltpr", "lfpr", "lesion_precision", "lesion_f1")


def volume_row(pred: np.ndarray, true: np.ndarray, group: Any, spacing: float | Sequence[float] | None = None,
               connectivity: int = 2, with_hd95: bool = True, nsd_tolerance: float | None = None) -> dict[str, Any]:
    """One volume's counts, overlap, lesion detection, volumes (mm^3 with ``spacing``), HD95 and ASSD (NaN
    unless both masks have foreground) and, with ``nsd_tolerance`` (mm), the normalised surface Dice (0 when
    exactly one mask is empty, NaN when both are; :mod:`medtasks.metrics.surface`)."""
    c = confusion_counts(pred, true)
    row: dict[str, Any] = {"group": group, **c, **metrics_from_counts(c, empty_value=1.0)}
    det = lesion_detection(pred, true, connectivity=connectivity)
    row.update(n_true_lesions=det["n_true_lesions"], n_pred_lesions=det["n_pred_lesions"],
               n_detected=det["n_detected"], n_false_pos=det["n_false_pos"], ltpr=det["ltpr"], lfpr=det["lfpr"],
               lesion_precision=det["precision"], lesion_f1=det["f1"])
    if det["n_pred_lesions"] == 0 and det["n_true_lesions"] > 0:
        # nothing predicted where lesions exist: PPV 0 (not undefined), so the ISBI composite penalises the miss
        # in its PPV term too; LFPR stays 0 (no false lesion was made)
        row["ppv"], row["lfpr"] = 0.0, 0.0
    row["true_volume"], row["pred_volume"] = lesion_volume(true, spacing), lesion_volume(pred, spacing)
    both = c["tp"] + c["fn"] > 0 and c["tp"] + c["fp"] > 0
    row["hd95"] = hd95(pred, true, spacing) if with_hd95 and both else float("nan")
    row["assd"] = assd(pred, true, spacing) if with_hd95 and both else float("nan")
    row["nsd"] = float("nan") if nsd_tolerance is None else nsd(pred, true, nsd_tolerance, spacing)
    return row


def _lesions_pooled(t: pd.DataFrame) -> dict[str, float]:
    n_true, n_pred = int(t["n_true_lesions"].sum()), int(t["n_pred_lesions"].sum())
    scores = pooled_lesion_scores(n_true, n_pred, int(t["n_detected"].sum()), int(t["n_false_pos"].sum()))
    return {**scores, "n_true_lesions": n_true, "n_pred_lesions": n_pred}


def _isbi(t: pd.DataFrame) -> float:
    mean = t[["dice", "ppv", "lfpr", "ltpr"]].astype(float).mean(skipna=True)
    corr = volume_correlation(t["pred_volume"], t["true_volume"])
    return isbi_score(mean["dice"], mean["ppv"], mean["lfpr"], mean["ltpr"], corr)


def volume_summary(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The aggregates of the module docstring; ``table`` = :func:`volume_row` rows (``group`` = subject)."""
    if table.empty:
        raise ValueError("no volumes to summarise")
    t = table.reset_index(drop=True)
    g = t["group"].astype(str).to_numpy()
    ci = lambda fn: bootstrap_ci(fn, g, n_boot=n_boot, seed=seed)  # noqa: E731
    sub = lambda idx: t.iloc[np.asarray(idx, dtype=int)]  # noqa: E731
    out: dict[str, Any] = {"n_volumes": int(len(t)), "n_subjects": int(len(set(g)))}
    out["per_volume"] = {m: ci(case_metric_fn(t, m)) for m in PER_VOLUME}
    out["pooled"] = {m: ci(pooled_metric_fn(t, m)) for m in ("dice", "iou", "sens", "ppv")}
    out["lesions_pooled"] = {**_lesions_pooled(t), "f1_ci": ci(lambda idx: _lesions_pooled(sub(idx))["f1"])}
    out["volume_correlation"] = ci(lambda idx: volume_correlation(sub(idx)["pred_volume"], sub(idx)["true_volume"]))
    out["isbi"] = ci(lambda idx: _isbi(sub(idx)))
    for m in ("hd95", "assd", "nsd"):  # over the volumes where each is defined; n says how many
        if m not in t.columns:
            continue
        finite = t[np.isfinite(t[m].astype(float))].reset_index(drop=True)
        out[m] = ({"mean": bootstrap_ci(case_metric_fn(finite, m), finite["group"].astype(str).to_numpy(),
                                        n_boot=n_boot, seed=seed), "median": float(finite[m].median()),
                   "n": int(len(finite))} if len(finite) else {"n": 0})
    out["headline"] = {"volume_dice": out["per_volume"]["dice"], "pooled_dice": out["pooled"]["dice"],
                       "lesion_f1": out["per_volume"]["lesion_f1"], "isbi_raw": out["isbi"]}
    return out
