"""One-call evaluation summaries with patient-level bootstrap CIs on headline metrics.

These are what the tasks write to their ``metrics.json``: the full table of
point estimates, calibration, reliability bins, and a confidence interval on a
few headline numbers. Everything in the result is a plain Python
``float``/``int``/``str``/``None``/``list``/``dict``, so ``json.dumps`` works
without a custom encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from medtasks.metrics.bootstrap import GroupResampler, bootstrap_ci
from medtasks.metrics.calibration import (
    brier_score,
    expected_calibration_error,
    reliability_bins,
)
from medtasks.metrics.classification import (
    ThresholdSpec,
    _as_binary,
    _as_multilabel,
    binary_table,
    multilabel_table,
    resolve_thresholds,
    rsna_weighted_log_loss,
)

logger = logging.getLogger(__name__)

__all__ = ["multilabel_summary", "binary_summary"]

MetricFn = Callable[[np.ndarray], float]

_ML_AVERAGED = {
    "weighted_f1": ("weighted", 2),
    "macro_f1": ("macro", 2),
    "micro_f1": ("micro", 2),
    "weighted_precision": ("weighted", 0),
    "weighted_recall": ("weighted", 1),
    "macro_precision": ("macro", 0),
    "macro_recall": ("macro", 1),
}


def _class_weights(class_weights: Mapping[str, float] | Sequence[float] | None,
                   labels: list[str]) -> list[float]:
    """Per-column weights for the RSNA log loss; default 1 for every class."""
    if class_weights is None:
        return [1.0] * len(labels)
    if isinstance(class_weights, Mapping):
        missing = [lab for lab in labels if lab not in class_weights]
        if missing:
            raise ValueError(f"class_weights lacks labels {missing}")
        return [float(class_weights[lab]) for lab in labels]
    w = [float(x) for x in class_weights]
    if len(w) != len(labels):
        raise ValueError(f"need {len(labels)} class weights, got {len(w)}")
    return w


def _check_groups(groups: np.ndarray, n: int) -> np.ndarray:
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), got {g.shape}")
    return g


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise num / den with 0 where den == 0 (sklearn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _prf_from_counts(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, average: str
) -> tuple[float, float, float]:
    """Averaged precision / recall / F1 from per-class confusion counts.

    Reproduces ``precision_recall_fscore_support(..., zero_division=0)`` for
    ``average`` in {"macro", "weighted", "micro"} (checked against it in the
    tests). It exists only for speed: sklearn's input validation costs ~5 ms
    a call, which dominates a 1000-replicate bootstrap.
    """
    if average == "micro":
        tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
    prec = _ratio(tp, tp + fp)
    rec = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    if average in ("macro", "micro"):
        return float(prec.mean()), float(rec.mean()), float(f1.mean())
    if average == "weighted":
        support = (tp + fn).astype(np.float64)
        if support.sum() == 0:
            return 0.0, 0.0, 0.0
        w = support / support.sum()
        return float(prec @ w), float(rec @ w), float(f1 @ w)
    raise ValueError(f"unsupported average {average!r}")


def _ranking(score: Callable[..., float], y: np.ndarray, p: np.ndarray) -> float:
    """A ranking score that raises ValueError on a one-class sample.

    Recent scikit-learn versions warn and return NaN instead of raising there;
    checking first keeps bootstrap logs free of one warning per skipped replicate.
    """
    if y.min() == y.max():
        raise ValueError("ranking metric undefined with a single class")
    return float(score(y, p))


def _multilabel_metric_fns(
    yt: np.ndarray,
    yp: np.ndarray,
    y_pred: np.ndarray,
    labels: list[str],
    weights: list[float],
    n_bins: int,
) -> dict[str, MetricFn]:
    """Every headline metric understood by :func:`multilabel_summary`, as index closures."""
    fns: dict[str, MetricFn] = {}
    # Per-row confusion indicators, so a replicate's counts are one fancy-index + sum.
    tp_rows = ((yt == 1) & (y_pred == 1)).astype(np.int64)
    fp_rows = ((yt == 0) & (y_pred == 1)).astype(np.int64)
    fn_rows = ((yt == 1) & (y_pred == 0)).astype(np.int64)

    def averaged(avg: str, k: int) -> MetricFn:
        return lambda i: _prf_from_counts(
            tp_rows[i].sum(0), fp_rows[i].sum(0), fn_rows[i].sum(0), avg
        )[k]

    for name, (avg, k) in _ML_AVERAGED.items():
        fns[name] = averaged(avg, k)

    def auc(j: int) -> MetricFn:
        return lambda i: _ranking(roc_auc_score, yt[i, j], yp[i, j])

    def ap(j: int) -> MetricFn:
        return lambda i: _ranking(average_precision_score, yt[i, j], yp[i, j])

    for j, lab in enumerate(labels):
        fns[f"{lab}_auc"] = auc(j)
        fns[f"{lab}_pr_auc"] = ap(j)
    fns["rsna_weighted_log_loss"] = lambda i: rsna_weighted_log_loss(yt[i], yp[i], weights)
    fns["ece"] = lambda i: expected_calibration_error(yt[i], yp[i], n_bins=n_bins)
    fns["brier"] = lambda i: brier_score(yt[i], yp[i])
    return fns


def _headline(fns: dict[str, MetricFn], headline: Sequence[str], groups: np.ndarray,
              n_boot: int, seed: int) -> dict:
    """Validate the headline names first, then bootstrap each one."""
    if isinstance(headline, str):
        headline = (headline,)
    unknown = [h for h in headline if h not in fns]
    if unknown:
        raise ValueError(f"unknown headline metric(s) {unknown}; valid names: {sorted(fns)}")
    return {h: bootstrap_ci(fns[h], groups, n_boot=n_boot, seed=seed) for h in headline}


def multilabel_summary(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    labels: Sequence[str],
    groups: np.ndarray,
    thresholds: ThresholdSpec = 0.5,
    class_weights: Mapping[str, float] | Sequence[float] | None = None,
    headline: Sequence[str] = ("weighted_f1", "any_auc", "rsna_weighted_log_loss"),
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 15,
) -> dict:
    """Full multilabel evaluation plus patient-bootstrap CIs on headline metrics.

    Headline names understood: ``weighted_f1``, ``macro_f1``, ``micro_f1``,
    ``weighted_precision``, ``weighted_recall``, ``macro_precision``,
    ``macro_recall``, ``<label>_auc`` (ROC-AUC of one label, e.g. ``any_auc``),
    ``<label>_pr_auc``, ``rsna_weighted_log_loss`` (uses ``class_weights``),
    ``ece`` and ``brier``. Thresholds stay fixed across bootstrap replicates,
    so the CIs do not include threshold-selection uncertainty.

    Args:
        y_true: (N, C) 0/1 labels.
        y_prob: (N, C) probabilities.
        labels: C class names in column order.
        groups: (N,) patient id of each row (the bootstrap resampling unit).
        thresholds: float, per-class sequence or ``{label: threshold}``.
        class_weights: RSNA log-loss weights (mapping or sequence); 1 each if None.
        headline: metric names to bootstrap.
        n_boot: bootstrap replicates per headline metric.
        seed: bootstrap seed (same seed for every headline metric).
        n_bins: bins for the ECE and the reliability diagram.

    Returns:
        :func:`multilabel_table` output plus ``rsna_weighted_log_loss``,
        ``calibration`` (``ece``, ``brier``), ``reliability``, ``headline``
        (name -> :func:`bootstrap_ci` result) and ``n_patients``.

    Example:
        >>> y = np.array([[1, 1], [0, 0], [1, 0], [0, 1]])
        >>> p = np.array([[0.9, 0.8], [0.1, 0.3], [0.7, 0.4], [0.2, 0.6]])
        >>> s = multilabel_summary(y, p, ["any", "edh"], groups=np.arange(4),
        ...                        class_weights={"any": 2, "edh": 1}, n_boot=50)
        >>> s["per_class"]["any"]["roc_auc"], s["n_patients"]
        (1.0, 4)
    """
    yt, yp = _as_multilabel(y_true, y_prob)
    labels = list(labels)
    g = _check_groups(groups, yt.shape[0])
    weights = _class_weights(class_weights, labels)
    thr = resolve_thresholds(thresholds, labels)
    y_pred = (yp >= thr[None, :]).astype(np.int64)

    fns = _multilabel_metric_fns(yt, yp, y_pred, labels, weights, n_bins)
    out = multilabel_table(yt, yp, labels, thr.tolist())
    out["rsna_weighted_log_loss"] = rsna_weighted_log_loss(yt, yp, weights)
    out["class_weights"] = dict(zip(labels, weights))
    out["calibration"] = {
        "ece": expected_calibration_error(yt, yp, n_bins=n_bins),
        "brier": brier_score(yt, yp),
        "n_bins": int(n_bins),
        "pooling": "all label-probabilities pooled",
    }
    out["reliability"] = reliability_bins(yt, yp, n_bins=n_bins)
    out["headline"] = _headline(fns, headline, g, n_boot, seed)
    out["n_patients"] = GroupResampler(g).n_groups
    return out


def binary_summary(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    groups: np.ndarray,
    threshold: float = 0.5,
    headline: Sequence[str] = ("accuracy", "roc_auc", "f1"),
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 15,
) -> dict:
    """Full binary evaluation plus patient-bootstrap CIs on headline metrics.

    Headline names understood: ``accuracy``, ``precision``, ``recall``,
    ``sensitivity``, ``specificity``, ``f1``, ``roc_auc``, ``pr_auc``,
    ``log_loss``, ``ece``, ``brier``.

    Args:
        y_true: (N,) 0/1 labels.
        y_prob: (N,) probability of the positive class.
        groups: (N,) patient id of each row.
        threshold: decision threshold (fixed across replicates).
        headline: metric names to bootstrap.
        n_boot: bootstrap replicates per headline metric.
        seed: bootstrap seed.
        n_bins: bins for the ECE and the reliability diagram.

    Returns:
        :func:`binary_table` output plus ``calibration``, ``reliability``,
        ``headline`` and ``n_patients``.

    Example:
        >>> s = binary_summary(np.array([0, 1, 1, 0]), np.array([0.2, 0.8, 0.6, 0.4]),
        ...                    groups=np.array([0, 0, 1, 1]), n_boot=20)
        >>> s["accuracy"], s["n_patients"]
        (1.0, 2)
    """
    yt, yp = _as_binary(y_true, y_prob)
    g = _check_groups(groups, yt.shape[0])
    y_pred = (yp >= float(threshold)).astype(np.int64)

    def prf(k: int) -> MetricFn:
        return lambda i: float(
            precision_recall_fscore_support(
                yt[i], y_pred[i], average="binary", zero_division=0
            )[k]
        )

    def specificity(i: np.ndarray) -> float:
        neg = yt[i] == 0
        return float((y_pred[i][neg] == 0).mean()) if neg.any() else 0.0

    fns: dict[str, MetricFn] = {
        "accuracy": lambda i: float(accuracy_score(yt[i], y_pred[i])),
        "precision": prf(0),
        "recall": prf(1),
        "sensitivity": prf(1),
        "specificity": specificity,
        "f1": prf(2),
        "roc_auc": lambda i: _ranking(roc_auc_score, yt[i], yp[i]),
        "pr_auc": lambda i: _ranking(average_precision_score, yt[i], yp[i]),
        "log_loss": lambda i: float(log_loss(yt[i], yp[i], labels=[0, 1])),
        "ece": lambda i: expected_calibration_error(yt[i], yp[i], n_bins=n_bins),
        "brier": lambda i: brier_score(yt[i], yp[i]),
    }
    out = binary_table(yt, yp, threshold=threshold)
    out["calibration"] = {
        "ece": expected_calibration_error(yt, yp, n_bins=n_bins),
        "brier": brier_score(yt, yp),
        "n_bins": int(n_bins),
    }
    out["reliability"] = reliability_bins(yt, yp, n_bins=n_bins)
    out["headline"] = _headline(fns, headline, g, n_boot, seed)
    out["n_patients"] = GroupResampler(g).n_groups
    return out
