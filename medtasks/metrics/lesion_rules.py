"""Lesion detection under both matching rules, side by side: per-volume columns and their summary.

The ISBI any-overlap rule stays the one behind the per-volume lesion columns, the headline lesion
F1 and the ISBI composite (:mod:`medtasks.metrics.volume_summary`); the MS report's IoU > 0.5 rule
(:mod:`medtasks.metrics.lesions`) is added beside it, under the column prefix ``iou_``, so that
both can be reported from one labelling of each volume.

Example:
    >>> from medtasks.metrics.lesions import match_lesions
    >>> t = np.zeros((1, 1, 8), bool); t[0, 0, :4] = True
    >>> p = np.zeros_like(t); p[0, 0, 3:5] = True                 # touches the lesion, IoU 0.2
    >>> c = rule_columns(match_lesions(p, t), "iou")
    >>> c["iou_n_detected"], c["iou_n_false_pos"], c["iou_lesion_f1"]
    (0, 1, 0.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medtasks.metrics.bootstrap import bootstrap_ci
from medtasks.metrics.lesions import RULES, LesionMatch, detection_counts, pooled_lesion_scores
from medtasks.metrics.segmentation import case_metric_fn

__all__ = ["RULE_DEFINITIONS", "rule_prefix", "rule_columns", "rule_summary", "rules_summary"]

RULE_DEFINITIONS = {
    "overlap": "ISBI 2015: a true lesion is detected when any voxel of it is predicted; a predicted lesion is a "
               "false positive when it touches no true lesion",
    "iou": "the report (l.242): a true lesion is detected when one predicted component has IoU > threshold with it "
           "(IoU of the two whole components); a predicted component without such a true lesion is a false positive",
}
PER_VOLUME = ("ltpr", "lfpr", "lesion_precision", "lesion_f1")


def rule_prefix(rule: str) -> str:
    """Column prefix of a rule: ``""`` for ``overlap`` (the existing columns), ``"iou_"`` for ``iou``."""
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}: use one of {', '.join(RULES)}")
    return "" if rule == "overlap" else f"{rule}_"


def rule_columns(match: LesionMatch, rule: str) -> dict[str, Any]:
    """One volume's detection under ``rule`` as prefixed columns (``n_detected, n_false_pos, ltpr, lfpr,
    lesion_precision, lesion_f1``), with :func:`~medtasks.metrics.volume_summary.volume_row`'s rule that a
    volume with lesions and no prediction has LFPR 0 (no false lesion was made)."""
    d = detection_counts(match, rule)
    if d["n_pred_lesions"] == 0 and d["n_true_lesions"] > 0:
        d["lfpr"] = 0.0
    pre = rule_prefix(rule)
    return {f"{pre}n_detected": d["n_detected"], f"{pre}n_false_pos": d["n_false_pos"], f"{pre}ltpr": d["ltpr"],
            f"{pre}lfpr": d["lfpr"], f"{pre}lesion_precision": d["precision"], f"{pre}lesion_f1": d["f1"]}


def _pooled(t: pd.DataFrame, pre: str) -> dict[str, Any]:
    n_true, n_pred = int(t["n_true_lesions"].sum()), int(t["n_pred_lesions"].sum())
    n_det, n_fp = int(t[f"{pre}n_detected"].sum()), int(t[f"{pre}n_false_pos"].sum())
    return {**pooled_lesion_scores(n_true, n_pred, n_det, n_fp), "n_true_lesions": n_true, "n_pred_lesions": n_pred,
            "n_detected": n_det, "n_false_pos": n_fp}


def rule_summary(table: pd.DataFrame, rule: str, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per-volume means (lesion TPR / FPR / precision / F1) and pooled counts (TPR, precision, F1) under ``rule``,
    95% CIs resampled by ``group`` (subject); ``table`` has ``n_true_lesions``, ``n_pred_lesions`` and the rule's
    :func:`rule_columns`."""
    t = table.reset_index(drop=True)
    g, pre = t["group"].astype(str).to_numpy(), rule_prefix(rule)
    per_volume = {m: bootstrap_ci(case_metric_fn(t, pre + m), g, n_boot=n_boot, seed=seed) for m in PER_VOLUME}
    f1_ci = bootstrap_ci(lambda idx: _pooled(t.iloc[np.asarray(idx, dtype=int)], pre)["f1"], g, n_boot=n_boot,
                         seed=seed)
    return {"definition": RULE_DEFINITIONS[rule], "per_volume": per_volume,
            "pooled": {**_pooled(t, pre), "f1_ci": f1_ci}}


def rules_summary(table: pd.DataFrame, iou_threshold: float, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``{"iou_threshold", "overlap": rule_summary, "iou": rule_summary}`` (the ``lesion_rules`` of metrics.json)."""
    return {"iou_threshold": float(iou_threshold),
            **{r: rule_summary(table, r, n_boot=n_boot, seed=seed) for r in RULES}}


