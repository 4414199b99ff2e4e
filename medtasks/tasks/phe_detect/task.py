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

from pathlib import Path

import pandas as pd

from medtasks.data.manifest import ManifestError, Rejected, read_manifest
from medtasks.io.voc import parse_boxes
from medtasks.tasks.contract import register_task
from medtasks.tasks.kinds.detection import DetectionTask
from medtasks.tasks.phe_detect.config import PheDetectConfig
from medtasks.tasks.sources.phe_sich import PHE_LABEL_NOTE, PheSichSource, find_images


@register_task("phe_detect")
class PheDetect(PheSichSource, DetectionTask):
    """PHE boxes on PHE-SICH PNG slices: VOC -> YOLO, ultralytics YOLOv8 from ``yolov8n.yaml``."""

    labels = ("phe",)
    Config = PheDetectConfig
    source_report = "phe_sich_ct_ids_notes.txt"
    summary = "PHE-SICH slices + VOC XML -> edema boxes, ultralytics YOLOv8n (offline), mAP50/50-95 with CIs"
    required_columns = ("patient_id", "image", "boxes", "width", "height")
    phe_manifest = "manifest_detect.csv"
    box_class = "a"                      # the release's XML class name for PHE
    image_classes = ("no PHE", "PHE")
    label_note = PHE_LABEL_NOTE

    # ---- data ---------------------------------------------------------------------------------
    def load_manifest(self, path: str | Path) -> pd.DataFrame:
        df = read_manifest(path, self.required_columns, root=self.cfg.data.root, path_columns=("image",))
        bad = df["boxes"].isna() | (df["boxes"].astype(str).str.strip() == "")
        if bad.any():
            raise ManifestError(f"manifest {path}: {int(bad.sum())} row(s) have no VOC boxes column value (e.g. "
                                f"{df.loc[bad, 'image'].iloc[0]}); re-run `medtasks prepare phe_detect` (it requires "
                                f"the XML of every slice)")
        return df.assign(has_phe=[int(len(parse_boxes(b)) > 0) for b in df["boxes"]])

    def fold_labels(self) -> list[str]:
        return ["has_phe"]

    # ---- predict ------------------------------------------------------------------------------
    def predict_inputs(self, source: Path) -> tuple[pd.DataFrame, Rejected]:
        return find_images(source)
