"""Box detection metrics: IoU, greedy matching, average precision with patient CIs, and COCO's own mAP.

Our own AP exists beside ultralytics' validator for one reason: a confidence interval. The
validator gives one mAP for the split; resampling patients needs AP computed from per-image
matches, which this module does (``ap_fn`` for :func:`~medtasks.metrics.bootstrap.bootstrap_ci`).
Matching follows the COCO / ultralytics rule: per image, detections in decreasing confidence
take the unmatched truth box of highest IoU >= the threshold; the rest are false positives.
The AP of those matches is ultralytics' own ``ultralytics.utils.metrics.compute_ap`` (the caller passes
it in, imported inside the offline fence: :func:`medtasks.engine.yolo.ultralytics_compute_ap`), so on the same
detections ours and the validator's agree. It is *not* COCO's AP: the area under the precision envelope,
trapezoids over 101 recall points, with precision 1 at recall 0 and 0 from just after the highest recall
reached up to recall 1, so a perfect detector scores 0.995.

Papers quote COCO's mAP, so :func:`coco_map` runs pycocotools' ``COCOeval`` on the same detections:
AP@[.5:.95], AP50, AP75 (the mean of the envelope at 101 recall thresholds, up to 100 detections per
image by score; a perfect detector scores 1.0).

Example:
    >>> m = match_image([[0, 0, 10, 10, 0.9]], [[0, 0, 10, 10]], iou=0.5)
    >>> m["tp"].tolist(), m["n_true"]
    ([[True]], 1)
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["IOU_THRESHOLDS", "ComputeAP", "box_iou", "match_image", "average_precision", "ap_from_matches", "ap_fn",
           "coco_map"]

#: ultralytics' ``compute_ap(recall, precision) -> (ap, envelope, recall with sentinels)``
ComputeAP = Callable[[np.ndarray, np.ndarray], tuple]

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


def average_precision(tp: np.ndarray, scores: np.ndarray, n_true: int, compute_ap: ComputeAP) -> float:
    """AP of detections (``tp`` flags, ``scores``) against ``n_true`` truth boxes: ``compute_ap`` (ultralytics') on
    their precision-recall curve, detections in decreasing score (ties in the given order). NaN when there is
    no truth box (undefined); 0 when there is no detection.

    Example:
        >>> from medtasks.engine.yolo import ultralytics_compute_ap  # doctest: +SKIP
        >>> average_precision(np.array([True]), np.array([0.9]), 1, ultralytics_compute_ap())  # doctest: +SKIP
        0.995
    """
    if n_true == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(tp, float)[order]
    ctp, cfp = np.cumsum(hits), np.cumsum(1.0 - hits)
    return float(compute_ap(ctp / n_true, ctp / (ctp + cfp))[0])


def ap_from_matches(matches: Sequence[dict], which: int | None = 0, *, compute_ap: ComputeAP) -> float:
    """AP over images' :func:`match_image` results at IoU index ``which`` (0 = 0.50); ``None`` = mean over
    all thresholds (mAP50-95); ``compute_ap`` as in :func:`average_precision`."""
    scores = np.concatenate([m["scores"] for m in matches]) if matches else np.zeros(0)
    tps = np.concatenate([m["tp"] for m in matches]) if matches else np.zeros((0, 1), bool)
    n_true = int(sum(m["n_true"] for m in matches))
    cols = range(tps.shape[1]) if which is None else [which]
    return float(np.mean([average_precision(tps[:, j], scores, n_true, compute_ap) for j in cols]))


def ap_fn(matches: Sequence[dict], which: int | None = 0, *, compute_ap: ComputeAP) -> Callable[[np.ndarray], float]:
    """``idx -> AP`` over the images at those positions (for a patient bootstrap)."""
    return lambda idx: ap_from_matches([matches[int(i)] for i in idx], which, compute_ap=compute_ap)


def coco_map(detections: Sequence[np.ndarray | Sequence[Sequence[float]]],
             truths: Sequence[Sequence[Sequence[float]]]) -> dict[str, float]:
    """COCO's box mAP by pycocotools' ``COCOeval`` (one class): ``{"map50_95", "map50", "map75"}``.

    Args:
        detections: per image, its detections ``[x1, y1, x2, y2, score]`` in pixels.
        truths: per image (same order), its truth boxes ``[x1, y1, x2, y2]``.

    Returns:
        AP@[.5:.95] (``stats[0]``), AP50 and AP75 over all areas with up to 100 detections per image; NaN
        when there is no truth box (COCOeval's -1), 0 when there is no detection.

    Example:
        >>> round(coco_map([[[0, 0, 10, 10, 0.9]]], [[[0, 0, 10, 10]]])["map50_95"], 6)  # a perfect detector
        1.0
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} images of detections but {len(truths)} of truth boxes")
    keys = ("map50_95", "map50", "map75")

    def xywh(b: Sequence[float]) -> list[float]:
        return [float(b[0]), float(b[1]), float(b[2]) - float(b[0]), float(b[3]) - float(b[1])]

    images = [{"id": i + 1} for i in range(len(truths))]
    gt = [{"id": 0, "image_id": i + 1, "category_id": 1, "bbox": xywh(b), "iscrowd": 0}
          for i, boxes in enumerate(truths) for b in np.asarray(boxes, float).reshape(-1, 4)]
    for k, g in enumerate(gt):
        g["id"], g["area"] = k + 1, g["bbox"][2] * g["bbox"][3]  # ids from 1: COCOeval marks "unmatched" with 0
    dt = [{"image_id": i + 1, "category_id": 1, "bbox": xywh(d[:4]), "score": float(d[4])}
          for i, dets in enumerate(detections) for d in np.asarray(dets, float).reshape(-1, 5)]
    if not gt:
        return dict.fromkeys(keys, float("nan"))
    if not dt:
        return dict.fromkeys(keys, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and its summary table
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gt, "categories": [{"id": 1, "name": "box"}]}
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dt), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) if v >= 0 else float("nan") for k, v in zip(keys, ev.stats[:3])}
