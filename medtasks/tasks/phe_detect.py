"""phe_detect — perihematomal edema boxes with YOLOv8 (PHE-SICH-CT-IDS, notes' task 2).

Source: ``seeds/phe_sich_ct_ids_notes.txt`` (task 2): the release's VOC XML boxes converted to
YOLO labels, ``yolov8n`` trained with ultralytics, then per image: predicted boxes, an image-level
summary (a slice is "PHE" when it has a box above the confidence threshold) with its
classification report and confusion matrix, and mAP from ultralytics' validator.

Ultralytics' own trainer is the engine here (design §3): training is
:func:`medtasks.engine.yolo.train_yolo` — offline, its settings and fonts inside the cache, every
output inside the run (``ultralytics/``). medtasks adds the rest: the patient-grouped split, the
VOC -> YOLO conversion with ``data.yaml`` in the run directory, ``history.csv`` in the shared
format, AP50 / mAP50-95 recomputed from per-image matches so they get patient-bootstrap CIs next
to ultralytics' figures, the image-level table with CIs, box overlays (truth vs prediction) and
the report. The label is the edema (VOC class ``a``), not the hematoma.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from medtasks.config import config_hash
from medtasks.data.manifest import ManifestError, Rejected, read_manifest, write_csv_atomic
from medtasks.engine.runtime import seed_everything
from medtasks.engine.trainer import FitResult
from medtasks.io.atomic import write_text_atomic
from medtasks.io.voc import voc_to_yolo, write_yolo_labels
from medtasks.registry import TASKS
from medtasks.rundir import RunDir, write_json_atomic
from medtasks.tasks.base import Task
from medtasks.tasks.phe_classify import LABEL_NOTE, find_images
from medtasks.tasks.phe_detect_config import PheDetectConfig
from medtasks.tasks.phe_source import PheSichSource

log = logging.getLogger(__name__)

CLASS_NAME = "phe"
VOC_CLASS = "a"   # the release's XML class name for PHE
SPLITS = ("train", "val", "test")


def _boxes(value: Any) -> list[list[float]]:
    if isinstance(value, str) and value.strip():
        return [list(map(float, b)) for b in json.loads(value)]
    return []


@TASKS.register("phe_detect")
class PheDetect(PheSichSource, Task):
    """PHE boxes on PHE-SICH PNG slices: VOC -> YOLO, ultralytics YOLOv8 from ``yolov8n.yaml``."""

    name = "phe_detect"
    kind = "detection"
    labels = (CLASS_NAME,)
    Config = PheDetectConfig
    source_report = "phe_sich_ct_ids_notes.txt"
    summary = "PHE-SICH slices + VOC XML -> edema boxes, ultralytics YOLOv8n (offline), mAP50/50-95 with CIs"
    required_columns = ("patient_id", "image", "boxes", "width", "height")
    phe_manifest = "manifest_detect.csv"

    # ---- data ---------------------------------------------------------------------------------
    def load_manifest(self, path: str | Path) -> pd.DataFrame:
        df = read_manifest(path, self.required_columns, root=self.cfg.data.root, path_columns=("image",))
        bad = df["boxes"].isna() | (df["boxes"].astype(str).str.strip() == "")
        if bad.any():
            raise ManifestError(f"manifest {path}: {int(bad.sum())} row(s) have no VOC boxes column value (e.g. "
                                f"{df.loc[bad, 'image'].iloc[0]}); re-run `medtasks prepare phe_detect` (it requires "
                                f"the XML of every slice)")
        return df.assign(has_phe=[int(len(_boxes(b)) > 0) for b in df["boxes"]])

    def fold_labels(self) -> list[str]:
        return ["has_phe"]

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
            lines, dropped = voc_to_yolo([(VOC_CLASS, *b) for b in _boxes(r.boxes)], int(r.width), int(r.height),
                                         {VOC_CLASS: 0})
            for d in dropped:
                rejected.add(src, f"box_{d.reason}", f"box {d.box} dropped from the YOLO labels")
            write_yolo_labels(root / "labels" / r.split / f"{stem}.txt", lines)
        data = {"path": str(root.resolve()), **{s: f"images/{s}" for s in SPLITS}, "names": {0: CLASS_NAME}}
        data_yaml = run / "data.yaml"
        write_text_atomic(data_yaml, yaml.safe_dump(data, sort_keys=False))
        return data_yaml, rejected

    # ---- training (ultralytics' trainer) ------------------------------------------------------
    def train(self, run: RunDir, df: pd.DataFrame, resume: bool = False, progress: bool = True) -> FitResult:
        from medtasks.engine.yolo import train_yolo

        if resume:
            raise ValueError("phe_detect cannot resume through medtasks; pass detect.extra.resume=true with "
                             "detect.model=<run>/ultralytics/train/weights/last.pt")
        for split in SPLITS:
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
            tmp = run / "checkpoints" / f".{name}.tmp"
            shutil.copyfile(src, tmp)
            os.replace(tmp, run / "checkpoints" / name)
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
    def evaluate(self, run: RunDir, df: pd.DataFrame, fit_result: FitResult | None = None,
                 warnings: list[str] | None = None) -> dict[str, Any]:
        from medtasks.tasks.detect_eval import evaluate_detection

        metrics = evaluate_detection(self, run, df)
        metrics.update({"task": self.name, "kind": self.kind, "synthetic": bool(self.cfg.data.synthetic),
                        "config_hash": config_hash(self.cfg), "labels": list(self.labels),
                        "warnings": [*(warnings or []), LABEL_NOTE]})
        if fit_result is not None:
            metrics.update(best_epoch=fit_result.best_epoch, epochs_run=fit_result.epochs_run,
                           train_time_s=fit_result.train_time_s)
        write_json_atomic(run / "metrics.json", metrics)
        return metrics

    # ---- predict ------------------------------------------------------------------------------
    def predict_inputs(self, source: Path) -> tuple[pd.DataFrame, Rejected]:
        return find_images(source)

    def predict_frame(self, run: RunDir, df: pd.DataFrame, progress: bool = True, out_dir: Path | None = None
                      ) -> pd.DataFrame:
        """One row per predicted box (``class_id = none`` for a slice without one), the notes' columns."""
        from medtasks.engine.yolo import predict_yolo

        e, c = self.cfg.eval, self.cfg.detect
        preds = predict_yolo(run / "checkpoints" / "best.pt", list(df["image"]), imgsz=c.imgsz, conf=e.conf,
                             iou=e.iou, device=self.cfg.train.device, batch=e.batch_size, progress=progress)
        ids = df.set_index("image")["patient_id"] if "patient_id" in df.columns else None
        if ids is not None:
            preds.insert(1, "patient_id", preds["image"].map(ids).fillna(""))
        return preds
