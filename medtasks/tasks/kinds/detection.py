"""The detection kind: ultralytics' own trainer as the engine, medtasks' run directory and evaluation around it.

Design §3: detection hands training to ultralytics (:func:`medtasks.engine.yolo.train_yolo`: offline,
settings and fonts inside the cache, every output inside the run's ``ultralytics/``). The kind adds the
rest, once for every detection task: the YOLO dataset written from the manifest's ``boxes`` column
(VOC class :attr:`DetectionTask.box_class`) with ``data.yaml`` in the run directory, ``history.csv``
in the shared format, and the evaluation below.

Evaluation writes ``predictions.csv`` (one row per box at ``eval.conf``, a ``none`` row per image
without one), ``image_matches.csv`` (per image: truth count, detection scores and their matches at every IoU
threshold: what ``compare`` and ``evaluate --by`` recompute AP from), ``classification_report.txt`` (image-level:
an image is positive when it has a box
>= ``eval.conf``), ``figures/extra_boxes_{tp,fp,fn}.png`` and returns the metrics: ultralytics'
validator figures (mAP50, mAP50-95, P, R, PR curve), ours with patient-bootstrap CIs (AP50 and
mAP50-95 from :mod:`medtasks.metrics.detection`: ultralytics' AP on per-slice matches), COCO's own mAP
(pycocotools' ``COCOeval`` on the same detections: AP@[.5:.95], AP50, AP75, under ``coco``; papers quote it)
and the image-level table from :func:`medtasks.metrics.summary.binary_summary`, scored by each image's
highest box confidence.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import classification_report

from medtasks.data.manifest import Rejected
from medtasks.engine.runtime import seed_everything
from medtasks.engine.trainer import FitResult
from medtasks.engine.yolo import predict_yolo, train_yolo, ultralytics_compute_ap, validate_yolo
from medtasks.io.atomic import copy_file_atomic, write_csv_atomic, write_json_atomic, write_text_atomic
from medtasks.io.images import read_grey
from medtasks.io.voc import parse_boxes, voc_to_yolo, write_yolo_labels
from medtasks.metrics.bootstrap import bootstrap_ci, fmt_value
from medtasks.metrics.detection import ap_fn, ap_from_matches, coco_map, match_image
from medtasks.metrics.summary import binary_summary
from medtasks.rundir import RunDir
from medtasks.tasks.contract import Task
from medtasks.viz.overlays import box_overlay_grid

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_HEADLINE = ("accuracy", "precision", "recall", "f1", "roc_auc")
OVERLAY_KINDS = {"tp": "true positive slices", "fp": "false positive slices", "fn": "missed slices"}
IMAGE_MATCHES = "image_matches.csv"


class DetectionTask(Task):
    """One-class box detection on 2-D images with ultralytics YOLO; see the module docstring.

    A task sets ``labels`` (the one class, also its YOLO name), :attr:`box_class`, :attr:`image_classes`,
    ``label_note`` and its data hooks; the manifest needs ``image``, ``boxes`` (JSON), ``width``, ``height``.
    """

    kind = "detection"
    input_column = "image"
    case_column = "image"
    distributed_training = False  # ultralytics runs its own DDP (it starts the worker processes itself)
    distributed_hint = ("ultralytics trains on several GPUs with its own DDP: run it in one process with "
                        "`medtasks run <task> detect.extra.device=0,1` (not under torchrun / --nproc)")
    box_class: ClassVar[str] = ""                                  # the class name in the VOC annotations
    image_classes: ClassVar[tuple[str, str]] = ("negative", "positive")   # image-level report names
    label_note: ClassVar[str] = ""                                 # a report warning on what the label is

    # ---- the YOLO dataset in the run directory ------------------------------------------------
    def write_yolo_dataset(self, run: RunDir, df: pd.DataFrame) -> tuple[Path, Rejected]:
        """``yolo_data/{images,labels}/{split}/`` (images linked, labels from the boxes) + ``data.yaml``."""
        root = run / "yolo_data"
        rejected = Rejected()
        for split in SPLITS:
            for kind in ("images", "labels"):
                (root / kind / split).mkdir(parents=True, exist_ok=True)
        for r in df.itertuples(index=False):
            src = Path(r.image)
            stem = f"{src.stem}__p{r.patient_id}" if str(r.patient_id) not in src.stem else src.stem
            dst = root / "images" / r.split / f"{stem}{src.suffix}"
            if not dst.exists():
                try:
                    os.symlink(src, dst)
                except OSError:  # no symlinks (Windows without privilege): copy
                    shutil.copyfile(src, dst)
            lines, dropped = voc_to_yolo([(self.box_class, *b) for b in parse_boxes(r.boxes)], int(r.width),
                                         int(r.height), {self.box_class: 0})
            for d in dropped:
                rejected.add(src, f"box_{d.reason}", f"box {d.box} dropped from the YOLO labels")
            write_yolo_labels(root / "labels" / r.split / f"{stem}.txt", lines)
        present = [s for s in SPLITS if (df.split == s).any()]  # no test split under a report protocol (eval on val)
        data = {"path": str(root.resolve()), **{s: f"images/{s}" for s in present}, "names": {0: self.labels[0]}}
        data_yaml = run / "data.yaml"
        write_text_atomic(data_yaml, yaml.safe_dump(data, sort_keys=False))
        return data_yaml, rejected

    # ---- training (ultralytics' trainer) ------------------------------------------------------
    def train(self, run: RunDir, df: pd.DataFrame, resume: bool = False, progress: bool = True) -> FitResult:
        if resume:
            raise ValueError(f"{self.name} cannot resume through medtasks; pass detect.extra.resume=true with "
                             "detect.model=<run>/ultralytics/train/weights/last.pt")
        for split in ("train", "val", self.cfg.eval.split):
            if not (df.split == split).any():
                raise ValueError(f"no {split} rows: check data.split fractions or the manifest's split column")
        data_yaml, dropped = self.write_yolo_dataset(run, df)
        if len(dropped):  # boxes the conversion could not keep: listed beside the run's other rejections
            merged = Rejected.read(run / "rejected.csv")
            merged.extend(dropped)
            merged.write(run / "rejected.csv")
        c, t = self.cfg.detect, self.cfg.train
        res = train_yolo(data_yaml, run / "ultralytics", model=c.model, epochs=t.epochs,
                         patience=t.early_stopping_patience or t.epochs, imgsz=c.imgsz, batch=t.batch_size,
                         device=t.device, seed=self.cfg.seed, workers=c.workers, amp=t.amp, progress=progress,
                         extra={"plots": c.plots, **c.extra})
        seed_everything(self.cfg.seed)  # ultralytics reseeds the global RNGs; ours stay reproducible after it
        (run / "checkpoints").mkdir(exist_ok=True)
        for src, name in ((res.best_pt, "best.pt"), (res.last_pt, "last.pt")):
            copy_file_atomic(src, run / "checkpoints" / name)
        hist = self.history_from_results(res.results_csv)
        write_csv_atomic(hist, run / "history.csv")
        best = int(hist.loc[hist["val_map50_95"].idxmax(), "epoch"]) if len(hist) else 0
        return FitResult(best_epoch=best, best_score=float(hist["val_map50_95"].max()) if len(hist) else float("nan"),
                         epochs_run=res.epochs_run, train_time_s=round(res.seconds, 1),
                         best_path=run / "checkpoints" / "best.pt", last_path=run / "checkpoints" / "last.pt",
                         history_path=run / "history.csv")

    @staticmethod
    def history_from_results(csv: Path) -> pd.DataFrame:
        """ultralytics' ``results.csv`` -> our ``history.csv`` (train/val loss = box + cls + dfl; mAPs; lr)."""
        r = pd.read_csv(csv)
        r.columns = [c.strip() for c in r.columns]
        parts = ("box_loss", "cls_loss", "dfl_loss")
        out = pd.DataFrame({"epoch": r["epoch"].astype(int)})
        out["train_loss"] = sum(r[f"train/{p}"] for p in parts)
        out["val_loss"] = sum(r[f"val/{p}"] for p in parts)
        for ours, theirs in (("val_precision", "metrics/precision(B)"), ("val_recall", "metrics/recall(B)"),
                             ("val_map50", "metrics/mAP50(B)"), ("val_map50_95", "metrics/mAP50-95(B)")):
            out[ours] = r[theirs]
        out["lr"] = r.get("lr/pg0", np.nan)
        if "time" in r.columns:
            out["time_s"] = r["time"].diff().fillna(r["time"]).round(2)
        return out

    # ---- evaluation ---------------------------------------------------------------------------
    def prepare_evaluation(self, run: RunDir, df: pd.DataFrame) -> Rejected:
        """``medtasks evaluate``: the evaluated manifest as a YOLO dataset in the evaluation folder (ultralytics'
        validator reads it); returns the boxes the conversion dropped."""
        data_yaml, dropped = self.write_yolo_dataset(run, df)
        data = yaml.safe_load(data_yaml.read_text())
        split = f"images/{self.cfg.eval.split}"   # ultralytics requires train and val keys: the evaluated images
        write_text_atomic(data_yaml, yaml.safe_dump({**data, "train": split, "val": split, self.cfg.eval.split: split},
                                                    sort_keys=False))
        return dropped

    def evaluate(self, run: RunDir, df: pd.DataFrame, fit_result: FitResult | None = None,
                 warnings: list[str] | None = None) -> dict[str, Any]:
        metrics = evaluate_detection(self, run, df)
        metrics.update(self.metrics_header([*(warnings or []), *([self.label_note] if self.label_note else [])]))
        self.add_fit_result(metrics, fit_result)
        write_json_atomic(run / "metrics.json", metrics)
        return metrics

    # ---- export -------------------------------------------------------------------------------
    def export(self, run: RunDir, df: pd.DataFrame, fmt: str, out: Path, n_inputs: int) -> list[dict[str, Any]]:
        """ONNX through ultralytics' own exporter, checked in onnxruntime against torch on the run's test images."""
        from medtasks.engine.export import TOLERANCE, ExportError
        from medtasks.engine.yolo_export import export_yolo_onnx

        if fmt != "onnx":
            raise ValueError(f"{self.name} exports through ultralytics' exporter: use --format onnx")
        c, e = self.cfg.detect, self.cfg.eval
        rows = self.eval_rows(df).head(max(1, n_inputs))
        res = export_yolo_onnx(run / "checkpoints" / "best.pt", out, c.imgsz, list(rows["image"]))
        box_tol = TOLERANCE * c.imgsz
        if not (res["max_abs_diff_scores"] <= TOLERANCE and res["max_abs_diff_boxes_px"] <= box_tol):
            (out / res["file"]).unlink(missing_ok=True)
            raise ExportError(f"{res['file']}: max |diff| against torch on {res['n_inputs']} test images: scores "
                              f"{res['max_abs_diff_scores']:.3g} (limit {TOLERANCE:g}), boxes "
                              f"{res['max_abs_diff_boxes_px']:.3g} px (limit {box_tol:g}); the file was removed")
        sidecar = {"file": res["file"], "format": "onnx", "exporter": res["exporter"], "task": self.name,
                   "kind": self.kind, "labels": list(self.labels), "synthetic": bool(self.cfg.data.synthetic),
                   "run": str(Path(run.path).resolve()), "inputs": [res["input"]], "outputs": ["output0"],
                   "parity": {"max_abs_diff": res["max_abs_diff"], "scores": res["max_abs_diff_scores"],
                              "boxes_px": res["max_abs_diff_boxes_px"], "n_inputs": res["n_inputs"],
                              "tolerance": TOLERANCE, "tolerance_boxes_px": box_tol,
                              "checked_with": "onnxruntime (CPU)"},
                   "preprocessing": {"recipe": f"the slice PNG as RGB, scaled to fit {c.imgsz} px and padded "
                                               "with grey 114 centred (letterbox), CHW, / 255"},
                   "output": {"output0": f"(1, 4 + {len(self.labels)}, anchors): box centre x, y, width, height "
                                         "in input pixels, then one score per label; before NMS"},
                   "postprocess": f"keep score >= {e.conf}, class-wise NMS at IoU {e.iou}, undo the letterbox",
                   "not_in_the_file": ["NMS and the letterbox undo (ultralytics' predictor does them)"]}
        write_json_atomic(out / "model.json", sidecar)
        log.info("exported %s: max |diff| against torch on %d test images: scores %.2g, boxes %.2g px",
                 out / res["file"], res["n_inputs"], res["max_abs_diff_scores"], res["max_abs_diff_boxes_px"])
        return [sidecar]

    # ---- predict ------------------------------------------------------------------------------
    def predict_frame(self, run: RunDir, df: pd.DataFrame, progress: bool = True, out_dir: Path | None = None,
                      probabilities: bool = False) -> pd.DataFrame:
        """One row per predicted box (``class_id = none`` for a slice without one), the notes' columns."""
        e, c = self.cfg.eval, self.cfg.detect
        preds = predict_yolo(run / "checkpoints" / "best.pt", list(df["image"]), imgsz=c.imgsz, conf=e.conf,
                             iou=e.iou, device=self.cfg.train.device, batch=e.batch_size, progress=progress)
        ids = df.set_index("image")["patient_id"] if "patient_id" in df.columns else None
        if ids is not None:
            preds.insert(1, "patient_id", preds["image"].map(ids).fillna(""))
        return preds


def _thin(curve: dict[str, Any], n: int = 101) -> dict[str, Any]:
    """ultralytics' 1000-point PR curve down to ``n`` points (metrics.json stays small)."""
    rec = curve.get("recall") or []
    if len(rec) <= n:
        return curve
    idx = np.linspace(0, len(rec) - 1, n).round().astype(int)
    return {"iou": curve.get("iou"), "recall": [rec[i] for i in idx],
            "precision": {k: [v[i] for i in idx] if len(v) == len(rec) else v for k, v in curve["precision"].items()}}


def evaluate_detection(task: DetectionTask, run: RunDir, df: pd.DataFrame) -> dict[str, Any]:
    """The detection metrics of ``task``'s best checkpoint on ``eval.split`` (see the module docstring)."""
    e, c, t = task.cfg.eval, task.cfg.detect, task.cfg.train
    split = e.split
    test = task.eval_rows(df)
    best = run / "checkpoints" / "best.pt"
    ul = validate_yolo(best, run / "data.yaml", split, imgsz=c.imgsz, batch=e.batch_size, device=t.device,
                       conf=e.val_conf, iou=e.iou, save_dir=run / "ultralytics" / f"val_{split}")
    raw = predict_yolo(best, list(test["image"]), imgsz=c.imgsz, conf=e.val_conf, iou=e.iou, device=t.device,
                       batch=e.batch_size)
    boxes = raw[raw["class_id"] != "none"]
    by_image = {img: g[["x1", "y1", "x2", "y2", "confidence"]].to_numpy(float) for img, g in boxes.groupby("image")}
    truths = [parse_boxes(b) for b in test["boxes"]]
    dets = [by_image.get(img, np.zeros((0, 5))) for img in test["image"]]
    matches = [match_image(d, tb) for d, tb in zip(dets, truths)]
    groups = test["patient_id"].astype(str).to_numpy()
    n_boot, seed = e.n_boot, task.cfg.seed
    compute_ap = ultralytics_compute_ap()
    ap50 = bootstrap_ci(ap_fn(matches, 0, compute_ap=compute_ap), groups, n_boot=n_boot, seed=seed)
    ap_all = bootstrap_ci(ap_fn(matches, None, compute_ap=compute_ap), groups, n_boot=n_boot, seed=seed)
    coco = coco_map(dets, truths)

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
    write_csv_atomic(image_matches(test, matches, dets, split), run / IMAGE_MATCHES)

    # image level: positive truth = any VOC box; score = the slice's highest box confidence
    y = (np.array([len(b) for b in truths]) > 0).astype(int)
    score = np.array([float(d[:, 4].max()) if len(d) else 0.0 for d in dets])
    image = binary_summary(y, score, groups, threshold=e.conf, headline=IMAGE_HEADLINE, n_boot=n_boot, seed=seed,
                           n_bins=e.calibration_bins)
    kw = dict(labels=[0, 1], target_names=list(task.image_classes), zero_division=0)
    yp = (score >= e.conf).astype(int)
    write_text_atomic(run / "classification_report.txt", classification_report(y, yp, digits=4, **kw))
    overlays = write_box_overlays(task, run, test, truths, dets, y, yp, score)
    headline = {"ap50": ap50, "map50_95": ap_all,
                **{f"image_{k}": image["headline"][k] for k in IMAGE_HEADLINE if k in image["headline"]}}
    log.info("%s %s: AP50 %s (ultralytics mAP50 %s), mAP50-95 %s (ultralytics %s; COCO %s); image accuracy %s",
             task.name, split, *map(fmt_value, (ap50["value"], ul["map50"], ap_all["value"], ul["map50_95"],
                                                coco["map50_95"], image["accuracy"])))
    ul["pr_curve"] = _thin(ul.get("pr_curve") or {})
    return {"split": split, "n": int(len(test)), "n_patients": int(len(set(groups))),
            "n_boxes_true": int(sum(len(b) for b in truths)), "conf": e.conf, "val_conf": e.val_conf,
            "headline": headline, "ultralytics": ul, "coco": coco,
            "image_level": {k: v for k, v in image.items() if k != "headline"},
            "confusion_matrix": [[int(((y == 0) & (yp == 0)).sum()), int(((y == 0) & (yp == 1)).sum())],
                                 [int(((y == 1) & (yp == 0)).sum()), int(((y == 1) & (yp == 1)).sum())]],
            "classification_report": classification_report(y, yp, output_dict=True, **kw),
            "ap50_check": {"ours": ap_from_matches(matches, 0, compute_ap=compute_ap), "ultralytics": ul["map50"]},
            "overlays": overlays}


def image_matches(test: pd.DataFrame, matches: list[dict], dets: list[np.ndarray], split: str) -> pd.DataFrame:
    """One row per evaluated image (``image_matches.csv``): its truth box count, its detections' scores (at
    ``eval.val_conf``, after NMS) and their true-positive flags at IoU 0.50, 0.55, ..., 0.95, as JSON — what
    AP needs, so ``medtasks compare`` and the subgroup tables recompute it on any set of images."""
    import json

    return pd.DataFrame({
        "case_id": test["image"].astype(str).to_numpy(), "patient_id": test["patient_id"].astype(str).to_numpy(),
        "split": split, "n_true": [m["n_true"] for m in matches],
        "max_conf": [float(d[:, 4].max()) if len(d) else 0.0 for d in dets],
        "det_scores": [json.dumps([round(float(v), 6) for v in m["scores"]]) for m in matches],
        "det_tp": [json.dumps(m["tp"].astype(int).tolist()) for m in matches]})


def write_box_overlays(task: DetectionTask, run: RunDir, test: pd.DataFrame, truths: list, dets: list,
                       y: np.ndarray, yp: np.ndarray, score: np.ndarray) -> dict[str, int]:
    """Truth (green) vs predicted boxes >= eval.conf (red) on the most confident TP / FP and most missed FN slices."""
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
