"""Binary and multilabel classification metrics.

Everything that scikit-learn already computes (precision / recall / F1, ROC-AUC,
average precision, log loss, confusion counts) is delegated to it; the only
metric written here is the Kaggle RSNA intracranial-haemorrhage weighted log
loss, which scikit-learn has no direct equivalent for.

All returned values are plain Python ``float`` / ``int`` / ``None`` so the
tables can be dumped to JSON without a custom encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

logger = logging.getLogger(__name__)

__all__ = [
    "rsna_weighted_log_loss",
    "multilabel_table",
    "binary_table",
    "resolve_thresholds",
]

ThresholdSpec = Mapping[str, float] | Sequence[float] | float


def _check_binary_targets(y_true: np.ndarray) -> None:
    """Raise if ``y_true`` holds anything but 0/1 (bools are fine)."""
    if y_true.size and not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must contain only 0/1 values")


def _check_probs(y_prob: np.ndarray) -> None:
    """Raise if ``y_prob`` is not a finite probability in [0, 1]."""
    if not np.isfinite(y_prob).all():
        raise ValueError("y_prob contains NaN or inf")
    if y_prob.size and (y_prob.min() < 0.0 or y_prob.max() > 1.0):
        raise ValueError("y_prob must lie in [0, 1] (pass probabilities, not logits)")


def _as_multilabel(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``(y_true int (N, C), y_prob float (N, C))``."""
    yt = np.asarray(y_true)
    yp = np.asarray(y_prob, dtype=np.float64)
    if yt.ndim != 2 or yp.ndim != 2:
        raise ValueError(f"expected 2-D (N, C) arrays, got y_true {yt.shape}, y_prob {yp.shape}")
    if yt.shape != yp.shape:
        raise ValueError(f"shape mismatch: y_true {yt.shape} vs y_prob {yp.shape}")
    if yt.shape[0] == 0:
        raise ValueError("empty input: no samples")
    _check_binary_targets(yt)
    _check_probs(yp)
    return yt.astype(np.int64), yp


def _as_binary(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return 1-D ``(y_true int, y_prob float)``; (N, 1) is squeezed."""
    yt = np.asarray(y_true)
    yp = np.asarray(y_prob, dtype=np.float64)
    if yt.ndim == 2 and yt.shape[1] == 1:
        yt = yt[:, 0]
    if yp.ndim == 2 and yp.shape[1] == 1:
        yp = yp[:, 0]
    if yt.ndim != 1 or yp.ndim != 1 or yt.shape != yp.shape:
        raise ValueError(f"expected 1-D arrays of equal length, got {yt.shape} and {yp.shape}")
    if yt.shape[0] == 0:
        raise ValueError("empty input: no samples")
    _check_binary_targets(yt)
    _check_probs(yp)
    return yt.astype(np.int64), yp


def _opt_float(x: float | None) -> float | None:
    """Python float, or None for missing / non-finite values (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _ranking_scores(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[float | None, float | None]:
    """ROC-AUC and average precision, or ``(None, None)`` when only one class is present.

    Both scores are undefined without positives *and* negatives; returning None
    keeps a rare class from crashing a whole evaluation.
    """
    if np.unique(y_true).size < 2:
        return None, None
    return _opt_float(roc_auc_score(y_true, y_prob)), _opt_float(
        average_precision_score(y_true, y_prob)
    )


def rsna_weighted_log_loss(
    y_true: np.ndarray, y_prob: np.ndarray, weights: Sequence[float], eps: float = 1e-15
) -> float:
    """Kaggle RSNA intracranial-haemorrhage weighted multilabel log loss.

    For each sample the binary log losses of the C labels are averaged with
    ``weights`` (normalised by ``sum(weights)``); the result is the mean over
    samples. With the competition weights (``any`` = 2, the five subtypes = 1)
    the normaliser is 7. Probabilities are clipped to ``[eps, 1 - eps]`` so a
    confident mistake costs a large but finite amount; ``eps = 1e-15`` as Kaggle's
    scorer (sklearn's historical ``log_loss`` default), in float64. A larger eps
    (1e-7) understates a model whose float32 sigmoids saturate to exactly 0/1
    past |logit| ~17: such an entry costs ``-log(1e-15) = 34.5``, not 16.1.

    Because every sample carries the same total weight, this equals
    ``sklearn.metrics.log_loss`` on the flattened labels with
    ``sample_weight = np.tile(weights, N)``.

    Args:
        y_true: (N, C) 0/1 labels.
        y_prob: (N, C) predicted probabilities.
        weights: C non-negative class weights, not all zero.
        eps: clipping constant (Kaggle's 1e-15).

    Returns:
        The weighted log loss (lower is better).

    Example:
        >>> y = np.array([[1, 0]]); p = np.array([[0.9, 0.2]])
        >>> round(rsna_weighted_log_loss(y, p, [2, 1]), 4)  # (2*0.1054 + 0.2231) / 3
        0.1446
    """
    yt, yp = _as_multilabel(y_true, y_prob)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != yt.shape[1]:
        raise ValueError(f"need {yt.shape[1]} weights, got shape {w.shape}")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    p = np.clip(yp, eps, 1.0 - eps)
    per_entry = -(yt * np.log(p) + (1 - yt) * np.log1p(-p))
    per_sample = per_entry @ w / w.sum()
    return float(per_sample.mean())


def resolve_thresholds(thresholds: ThresholdSpec, labels: Sequence[str]) -> np.ndarray:
    """Turn a threshold spec into one threshold per label.

    Args:
        thresholds: a single float, a sequence aligned with ``labels``, or a
            mapping ``label -> threshold`` covering every label.
        labels: class names, in column order.

    Returns:
        Float array of shape ``(len(labels),)``.

    Example:
        >>> resolve_thresholds({"a": 0.3, "b": 0.6}, ["a", "b"]).tolist()
        [0.3, 0.6]
    """
    labels = list(labels)
    if isinstance(thresholds, Mapping):
        missing = [lab for lab in labels if lab not in thresholds]
        if missing:
            raise ValueError(f"thresholds mapping lacks labels {missing}")
        extra = sorted(set(thresholds) - set(labels))
        if extra:
            # Probably a typo in a config; tolerate it but make it visible.
            logger.warning("ignoring thresholds for unknown labels %s", extra)
        thr = np.array([float(thresholds[lab]) for lab in labels])
    elif np.ndim(thresholds) == 0:
        thr = np.full(len(labels), float(thresholds))  # type: ignore[arg-type]
    else:
        thr = np.asarray(thresholds, dtype=np.float64)
        if thr.shape != (len(labels),):
            raise ValueError(f"need {len(labels)} thresholds, got shape {thr.shape}")
    if not np.isfinite(thr).all():
        raise ValueError("thresholds must be finite")
    return thr


def _prf(y_true: np.ndarray, y_pred: np.ndarray, average: str) -> dict:
    """sklearn precision / recall / F1 for one averaging mode, as Python floats."""
    if y_true.ndim == 2 and y_true.shape[1] == 1:  # one label: every average is that label's binary figure
        y_true, y_pred, average = y_true[:, 0], y_pred[:, 0], "binary"
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, average=average, zero_division=0
    )
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def multilabel_table(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    labels: Sequence[str],
    thresholds: ThresholdSpec = 0.5,
) -> dict:
    """Per-class and averaged metrics for a multilabel problem.

    A label is predicted positive when ``prob >= threshold``. Precision /
    recall / F1 use ``zero_division=0``; the ``weighted`` average is
    support-weighted exactly as scikit-learn's
    ``precision_recall_fscore_support(average="weighted")`` on the indicator
    matrix. ROC-AUC and PR-AUC (average precision) are ``None`` for a class
    whose ``y_true`` column holds a single value.

    Args:
        y_true: (N, C) 0/1 labels.
        y_prob: (N, C) predicted probabilities.
        labels: C class names in column order.
        thresholds: float, per-class sequence, or ``{label: threshold}``.

    Returns:
        ``{"per_class": {label: {...}}, "macro": {...}, "weighted": {...},
        "micro": {...}, "n": N}``.

    Example:
        >>> y = np.array([[1, 0], [0, 1], [1, 1]])
        >>> p = np.array([[0.8, 0.1], [0.3, 0.7], [0.6, 0.4]])
        >>> multilabel_table(y, p, ["a", "b"])["per_class"]["a"]["recall"]
        1.0
    """
    yt, yp = _as_multilabel(y_true, y_prob)
    labels = list(labels)
    if len(labels) != yt.shape[1]:
        raise ValueError(f"{len(labels)} labels for {yt.shape[1]} columns")
    thr = resolve_thresholds(thresholds, labels)
    y_pred = (yp >= thr[None, :]).astype(np.int64)

    per_class: dict[str, dict] = {}
    for j, lab in enumerate(labels):
        # Column by column with average="binary": a single (N, 1) column handed to sklearn as a
        # whole would be read as a two-class target (class 0's numbers first).
        prec, rec, f1, _ = precision_recall_fscore_support(
            yt[:, j], y_pred[:, j], average="binary", zero_division=0
        )
        tn, fp, fn, tp = confusion_matrix(yt[:, j], y_pred[:, j], labels=[0, 1]).ravel()
        roc, ap = _ranking_scores(yt[:, j], yp[:, j])
        per_class[lab] = {
            "precision": float(prec),
            "recall": float(rec),
            "f1": float(f1),
            "roc_auc": roc,
            "pr_auc": ap,
            # labels= keeps log_loss defined for a column with a single class.
            "log_loss": float(log_loss(yt[:, j], yp[:, j], labels=[0, 1])),
            "support": int(tp + fn),
            "tp": int(tp),
            "fp": int(fp),
            "fn": int(fn),
            "tn": int(tn),
            "threshold": float(thr[j]),
        }

    return {
        "per_class": per_class,
        "macro": _prf(yt, y_pred, "macro"),
        "weighted": _prf(yt, y_pred, "weighted"),
        "micro": _prf(yt, y_pred, "micro"),
        "n": int(yt.shape[0]),
    }


def binary_table(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict:
    """Threshold and ranking metrics for a binary problem.

    Positive prediction means ``prob >= threshold``. Ratios with an empty
    denominator are 0 (scikit-learn's ``zero_division=0``); ROC-AUC and PR-AUC
    are ``None`` when ``y_true`` holds a single class.

    Args:
        y_true: (N,) 0/1 labels (an (N, 1) column is accepted).
        y_prob: (N,) probability of the positive class.
        threshold: decision threshold.

    Returns:
        dict with ``accuracy, precision, recall, sensitivity (= recall),
        specificity, f1, roc_auc, pr_auc, log_loss, tp, fp, fn, tn, n, n_pos,
        threshold``.

    Example:
        >>> binary_table(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.4]))["specificity"]
        1.0
    """
    yt, yp = _as_binary(y_true, y_prob)
    y_pred = (yp >= float(threshold)).astype(np.int64)
    (tn, fp), (fn, tp) = confusion_matrix(yt, y_pred, labels=[0, 1])
    p, r, f, _ = precision_recall_fscore_support(
        yt, y_pred, average="binary", pos_label=1, zero_division=0
    )
    # Same zero_division=0 convention as sklearn's ratios when there are no negatives.
    spec = tn / (tn + fp) if (tn + fp) > 0 else 0.0
    roc, ap = _ranking_scores(yt, yp)
    return {
        "accuracy": float(accuracy_score(yt, y_pred)),
        "precision": float(p),
        "recall": float(r),
        "sensitivity": float(r),
        "specificity": float(spec),
        "f1": float(f),
        "roc_auc": roc,
        "pr_auc": ap,
        "log_loss": float(log_loss(yt, yp, labels=[0, 1])),
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "tn": int(tn),
        "n": int(yt.shape[0]),
        "n_pos": int(yt.sum()),
        "threshold": float(threshold),
    }
