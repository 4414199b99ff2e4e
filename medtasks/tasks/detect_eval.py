"""Evaluation of a detection run (the detection kind's evaluate, used by ``phe_detect``).

Writes ``predictions.csv`` (the notes' columns: one row per box at ``eval.conf``, a ``none`` row
per slice without one), ``classification_report.txt`` (image-level: a slice is positive when it
has a box >= ``eval.conf``), ``figures/extra_boxes_{tp,fp,fn}.png`` and returns the metrics:
ultralytics' validator figures (mAP50, mAP50-95, P, R, PR curve) and ours with patient-bootstrap
CIs (AP50 and mAP50-95 from :mod:`medtasks.metrics.detection`; the image-level table from
:func:`medtasks.metrics.summary.binary_summary`, scored by each slice's highest box confidence).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medtasks.data.manifest import write_csv_atomic
from medtasks.io.atomic import write_text_atomic
from medtasks.metrics.bootstrap import bootstrap_ci
from medtasks.metrics.detection import ap_fn, ap_from_matches, match_image

if TYPE_CHECKING:
    from medtasks.rundir import RunDir
    from medtasks.tasks.phe_detect import PheDetect

log = logging.getLogger(__name__)

IMAGE_HEADLINE = ("accuracy", "precision", "recall", "f1", "roc_auc")
OVERLAY_KINDS = {"tp": "true positive slices", "fp": "false positive slices", "fn": "missed slices"}


def _thin(curve: dict[str, Any], n: int = 101) -> dict[str, Any]:
    """ultralytics' 1000-point PR curve down to ``n`` points (metrics.json stays small)."""
    rec = curve.get("recall") or []
    if len(rec) <= n:
        return curve
    idx = np.linspace(0, len(rec) - 1, n).round().astype(int)
    return {"iou": curve.get("iou"), "recall": [rec[i] for i in idx],
            "precision": {k: [v[i] for i in idx] if len(v) == len(rec) else v for k, v in curve["precision"].items()}}


def evaluate_detection(task: PheDetect, run: RunDir, df: pd.DataFrame) -> dict[str, Any]:
    from medtasks.engine.yolo import predict_yolo, validate_yolo
    from medtasks.metrics.summary import binary_summary
    from medtasks.tasks.phe_detect import _boxes

    e, c, t = task.cfg.eval, task.cfg.detect, task.cfg.train
    split = e.split
    test = df[df.split == split].reset_index(drop=True)
    if test.empty:
        raise ValueError(f"eval.split={split!r} has no rows in the manifest")
    best = run / "checkpoints" / "best.pt"
    ul = validate_yolo(best, run / "data.yaml", split, imgsz=c.imgsz, batch=e.batch_size, device=t.device,
                       conf=e.val_conf, iou=e.iou, save_dir=run / "ultralytics" / f"val_{split}")
    raw = predict_yolo(best, list(test["image"]), imgsz=c.imgsz, conf=e.val_conf, iou=e.iou, device=t.device,
                       batch=e.batch_size)
    boxes = raw[raw["class_id"] != "none"]
    by_image = {img: g[["x1", "y1", "x2", "y2", "confidence"]].to_numpy(float) for img, g in boxes.groupby("image")}
    truths = [_boxes(b) for b in test["boxes"]]
    dets = [by_image.get(img, np.zeros((0, 5))) for img in test["image"]]
    matches = [match_image(d, tb) for d, tb in zip(dets, truths)]
    groups = test["patient_id"].astype(str).to_numpy()
    n_boot, seed = e.n_boot, task.cfg.seed
    ap50 = bootstrap_ci(ap_fn(matches, 0), groups, n_boot=n_boot, seed=seed)
    ap_all = bootstrap_ci(ap_fn(matches, None), groups, n_boot=n_boot, seed=seed)

    # predictions.csv: boxes at eval.conf (NMS already ran on all boxes; a higher floor removes, never adds)
    keep = raw[(raw["class_id"] == "none") | (raw["confidence"] >= e.conf)]
    has_box = set(keep.loc[keep["class_id"] != "none", "image"])
    none_rows = pd.DataFrame({"image": sorted(set(test["image"]) - has_box), "class_id": "none"})
    pred = pd.concat([keep[keep["class_id"] != "none"], none_rows], ignore_index=True)
    meta = test.set_index("image")[["patient_id", "split"]]
    pred.insert(1, "patient_id", pred["image"].map(meta["patient_id"]).astype(str))
    pred.insert(2, "split", split)
    pred = pred.sort_values(["image", "confidence"], ascending=[True, False], na_position="last", kind="stable")
    write_csv_atomic(pred.reset_index(drop=True), run / "predictions.csv")

    # image level: positive truth = any VOC box; score = the slice's highest box confidence
    y = (np.array([len(b) for b in truths]) > 0).astype(int)
    score = np.array([float(d[:, 4].max()) if len(d) else 0.0 for d in dets])
    image = binary_summary(y, score, groups, threshold=e.conf, headline=IMAGE_HEADLINE, n_boot=n_boot, seed=seed,
                           n_bins=e.calibration_bins)
    from sklearn.metrics import classification_report

    kw = dict(labels=[0, 1], target_names=["no PHE", "PHE"], zero_division=0)
    yp = (score >= e.conf).astype(int)
    write_text_atomic(run / "classification_report.txt", classification_report(y, yp, digits=4, **kw))
    overlays = write_box_overlays(task, run, test, truths, dets, y, yp, score)
    headline = {"ap50": ap50, "map50_95": ap_all,
                **{f"image_{k}": image["headline"][k] for k in IMAGE_HEADLINE if k in image["headline"]}}
    log.info("%s %s: AP50 %.4f (ultralytics mAP50 %.4f), mAP50-95 %.4f (ultralytics %.4f); image accuracy %.4f",
             task.name, split, ap50["value"], ul["map50"], ap_all["value"], ul["map50_95"], image["accuracy"])
    ul["pr_curve"] = _thin(ul.get("pr_curve") or {})
    return {"split": split, "n": int(len(test)), "n_patients": int(len(set(groups))),
            "n_boxes_true": int(sum(len(b) for b in truths)), "conf": e.conf, "val_conf": e.val_conf,
            "headline": headline, "ultralytics": ul, "image_level": {k: v for k, v in image.items() if k != "headline"},
            "confusion_matrix": [[int(((y == 0) & (yp == 0)).sum()), int(((y == 0) & (yp == 1)).sum())],
                                 [int(((y == 1) & (yp == 0)).sum()), int(((y == 1) & (yp == 1)).sum())]],
            "classification_report": classification_report(y, yp, output_dict=True, **kw),
            "ap50_check": {"ours": ap_from_matches(matches, 0), "ultralytics": ul["map50"]},
            "overlays": overlays}


def write_box_overlays(task: PheDetect, run: RunDir, test: pd.DataFrame, truths: list, dets: list,
                       y: np.ndarray, yp: np.ndarray, score: np.ndarray) -> dict[str, int]:
    """Truth (green) vs predicted boxes >= eval.conf (red) on the most confident TP / FP and most missed FN slices."""
    from medtasks.io.images import read_grey
    from medtasks.viz.overlays import box_overlay_grid

    k, conf = task.cfg.eval.overlays, task.cfg.eval.conf
    kinds = {"tp": (y == 1) & (yp == 1), "fp": (y == 0) & (yp == 1), "fn": (y == 1) & (yp == 0)}
    out: dict[str, int] = {}
    for kind, mask in kinds.items():
        path = run / "figures" / f"extra_boxes_{kind}.png"
        path.unlink(missing_ok=True)
        idx = np.flatnonzero(mask)
        if not len(idx) or k < 1:
            out[kind] = 0
            continue
        idx = idx[np.argsort(score[idx] if kind == "fn" else -score[idx], kind="stable")][:k]
        images = [read_grey(test["image"].iloc[i])[0] for i in idx]
        preds = [[list(b) for b in dets[i] if b[4] >= conf] for i in idx]
        titles = [f"{Path(test['image'].iloc[i]).stem}  max conf {score[i]:.2f}" for i in idx]
        box_overlay_grid(images, [truths[i] for i in idx], preds, titles, path,
                         suptitle=f"{task.name}: {OVERLAY_KINDS[kind]} ({task.cfg.eval.split} split, conf >= {conf})")
        out[kind] = int(len(idx))
    return out
