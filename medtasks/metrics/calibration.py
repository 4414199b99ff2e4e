"""Probability calibration: expected calibration error, Brier score, reliability bins.

Binary and multilabel inputs are treated alike: every (sample, label)
probability is one prediction, and all of them are pooled before binning. For
a multilabel model the ECE is therefore the calibration of "a label
probability" in general, not an average of per-label ECEs.

Bins are equal-width on [0, 1] and right-closed: bin ``i`` covers
``(i/n, (i+1)/n]``, with a probability of exactly 0.0 in the first bin. This is
the convention of Guo et al. (2017) and of
``sklearn.calibration.calibration_curve(strategy="uniform")`` in the installed
scikit-learn (which bins with ``searchsorted(..., side="left")``), so the
non-empty bins of :func:`reliability_bins` match ``calibration_curve`` point for
point.
"""

from __future__ import annotations

import numpy as np

__all__ = ["expected_calibration_error", "brier_score", "reliability_bins"]


def _pooled(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten labels and probabilities to 1-D after validating them."""
    yt = np.asarray(y_true)
    yp = np.asarray(y_prob, dtype=np.float64)
    if yt.shape != yp.shape:
        raise ValueError(f"shape mismatch: y_true {yt.shape} vs y_prob {yp.shape}")
    if yt.size == 0:
        raise ValueError("empty input: no predictions")
    if not np.isin(yt, (0, 1)).all():
        raise ValueError("y_true must contain only 0/1 values")
    if not np.isfinite(yp).all() or yp.min() < 0.0 or yp.max() > 1.0:
        raise ValueError("y_prob must be finite and lie in [0, 1]")
    return yt.reshape(-1).astype(np.float64), yp.reshape(-1)


def _bin_stats(
    y: np.ndarray, p: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(edges, count, sum_pred, sum_pos)`` per equal-width bin."""
    if int(n_bins) < 1:
        raise ValueError("n_bins must be >= 1")
    n_bins = int(n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" on the inner edges gives right-closed bins (see module docstring).
    idx = np.searchsorted(edges[1:-1], p, side="left")
    count = np.bincount(idx, minlength=n_bins)
    sum_pred = np.bincount(idx, weights=p, minlength=n_bins)
    sum_pos = np.bincount(idx, weights=y, minlength=n_bins)
    return edges, count, sum_pred, sum_pos


def expected_calibration_error(
    y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 15
) -> float:
    """Expected calibration error with equal-width bins.

    ``ECE = sum_b (n_b / N) * |mean_pred_b - frac_pos_b|``. For multilabel
    input all label-probabilities are pooled (see the module docstring).

    Args:
        y_true: 0/1 labels, shape (N,) or (N, C).
        y_prob: probabilities of the same shape.
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        ECE in [0, 1] (0 is perfectly calibrated).

    Example:
        >>> round(expected_calibration_error(np.array([1, 0]), np.array([0.9, 0.9])), 6)
        0.4
    """
    y, p = _pooled(y_true, y_prob)
    _, count, sum_pred, sum_pos = _bin_stats(y, p, n_bins)
    # |sum_pred - sum_pos| / N == (n_b / N) * |mean_pred - frac_pos|, without 0/0 for empty bins.
    return float(np.abs(sum_pred - sum_pos).sum() / y.size)


def brier_score(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean squared difference between probability and outcome over all entries.

    Equals ``sklearn.metrics.brier_score_loss`` for binary input; for
    multilabel input it is the same quantity over the pooled label entries.

    Args:
        y_true: 0/1 labels, shape (N,) or (N, C).
        y_prob: probabilities of the same shape.

    Returns:
        Brier score in [0, 1].

    Example:
        >>> round(brier_score(np.array([1, 0]), np.array([0.8, 0.4])), 6)  # (0.04 + 0.16) / 2
        0.1
    """
    y, p = _pooled(y_true, y_prob)
    return float(np.mean((p - y) ** 2))


def reliability_bins(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 10) -> dict:
    """Per-bin data for a reliability diagram.

    Args:
        y_true: 0/1 labels, shape (N,) or (N, C) (pooled, as for the ECE).
        y_prob: probabilities of the same shape.
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        ``{"bin_lower", "bin_upper", "mean_pred", "frac_pos", "count"}``, each
        a list of length ``n_bins``. Empty bins have ``count`` 0 and ``None``
        for ``mean_pred`` and ``frac_pos``.

    Example:
        >>> rb = reliability_bins(np.array([0, 1]), np.array([0.1, 0.9]), n_bins=2)
        >>> rb["frac_pos"], rb["count"]
        ([0.0, 1.0], [1, 1])
    """
    y, p = _pooled(y_true, y_prob)
    edges, count, sum_pred, sum_pos = _bin_stats(y, p, n_bins)
    mean_pred: list[float | None] = []
    frac_pos: list[float | None] = []
    for c, sp, spos in zip(count, sum_pred, sum_pos):
        mean_pred.append(float(sp / c) if c else None)
        frac_pos.append(float(spos / c) if c else None)
    return {
        "bin_lower": [float(e) for e in edges[:-1]],
        "bin_upper": [float(e) for e in edges[1:]],
        "mean_pred": mean_pred,
        "frac_pos": frac_pos,
        "count": [int(c) for c in count],
    }
