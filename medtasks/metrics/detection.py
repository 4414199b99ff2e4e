"""Box detection metrics: IoU, greedy matching, average precision (COCO 101-point), image-level calls.

Our own AP exists beside ultralytics' validator for one reason: a confidence interval. The
validator gives one mAP for the split; resampling patients needs AP computed from per-image
matches, which this module does (``ap_fn`` for :func:`~medtasks.metrics.bootstrap.bootstrap_ci`).
Matching follows the COCO / ultralytics rule: per image, detections in decreasing confidence
take the unmatched truth box of highest IoU >= the threshold; the rest are false positives.
AP = area under the precision envelope sampled at 101 recall points, with ultralytics' (8.4)
``compute_ap`` sentinels: precision 1 at recall 0, and 0 from just after the highest recall
reached up to recall 1 (a perfect detector scores 0.995, as there; recall never reached adds
nothing). Matching and AP are ultralytics', so on the same detections the two agree.

Example:
    >>> m = match_image([[0, 0, 10, 10, 0.9]], [[0, 0, 10, 10]], iou=0.5)
    >>> m["tp"].tolist(), m["n_true"]
    ([[True]], 1)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["IOU_THRESHOLDS", "box_iou", "match_image", "average_precision", "ap_from_matches", "ap_fn"]

IOU_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a (N, 4)`` and ``b (M, 4)`` in ``x1, y1, x2, y2`` pixels.

    Example:
        >>> box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3]])).round(4).tolist()
        [[0.1429]]
    """
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(preds: Sequence[Sequence[float]], truths: Sequence[Sequence[float]],
                iou: float | Sequence[float] = IOU_THRESHOLDS) -> dict:
    """Greedy matching of one image's detections ``[x1, y1, x2, y2, score]`` to its truth boxes.

    Returns ``{"scores": (K,), "tp": (K, T) bool per IoU threshold, "n_true": int}``.
    """
    thr = np.atleast_1d(np.asarray(iou, float))
    p = np.asarray(preds, float).reshape(-1, 5)
    t = np.asarray(truths, float).reshape(-1, 4)
    order = np.argsort(-p[:, 4], kind="stable")
    p = p[order]
    tp = np.zeros((len(p), len(thr)), bool)
    if len(p) and len(t):
        ious = box_iou(p[:, :4], t)
        for j, th in enumerate(thr):
            used = np.zeros(len(t), bool)
            for i in range(len(p)):
                cand = np.where(~used & (ious[i] >= th), ious[i], -1.0)
                k = int(np.argmax(cand))
                if cand[k] >= 0:
                    used[k] = True
                    tp[i, j] = True
    return {"scores": p[:, 4], "tp": tp, "n_true": int(len(t))}


def average_precision(tp: np.ndarray, scores: np.ndarray, n_true: int) -> float:
    """AP of detections (``tp`` flags, ``scores``) against ``n_true`` truth boxes; 101-point COCO envelope.
    NaN when there is no truth box (undefined)."""
    if n_true == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(tp, float)[order]
    ctp, cfp = np.cumsum(hits), np.cumsum(1.0 - hits)
    recall = ctp / n_true
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    # ultralytics' sentinels: precision falls to 0 just after the highest recall reached, then stays 0 to recall 1
    mrec = np.concatenate([[0.0], recall, [recall[-1]], [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0], [0.0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    return float(trapezoid(np.interp(x, mrec, mpre), x))


def ap_from_matches(matches: Sequence[dict], which: int | None = 0) -> float:
    """AP over images' :func:`match_image` results at IoU index ``which`` (0 = 0.50); ``None`` = mean over
    all thresholds (mAP50-95)."""
    scores = np.concatenate([m["scores"] for m in matches]) if matches else np.zeros(0)
    tps = np.concatenate([m["tp"] for m in matches]) if matches else np.zeros((0, 1), bool)
    n_true = int(sum(m["n_true"] for m in matches))
    cols = range(tps.shape[1]) if which is None else [which]
    return float(np.mean([average_precision(tps[:, j], scores, n_true) for j in cols]))


def ap_fn(matches: Sequence[dict], which: int | None = 0) -> Callable[[np.ndarray], float]:
    """``idx -> AP`` over the images at those positions (for a patient bootstrap)."""
    return lambda idx: ap_from_matches([matches[int(i)] for i in idx], which)
