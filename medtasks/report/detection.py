"""Report sections for detection runs (metrics.json from :mod:`medtasks.tasks.kinds.detection`).

The box metrics side by side: ours (AP50, mAP50-95 from per-image matches, with patient-bootstrap
CIs), ultralytics' validator (mAP50, mAP50-95, precision, recall) and COCO's mAP by pycocotools (AP@[.5:.95],
AP50, AP75: the numbers papers quote); ultralytics' PR curve; the image-level confusion matrix and
classification report. Box overlays are ``figures/extra_boxes_*.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medtasks.report import figures
from medtasks.report.html import classification_report_table, figure, fmt_ci, fmt_num, note, section, table

if TYPE_CHECKING:
    from medtasks.report import RunData


def _box_section(run: RunData, fig_dir: Path) -> str:
    m = run.metrics
    ul = m.get("ultralytics") or {}
    h = m.get("headline") or {}
    coco = m.get("coco") or {}
    rows = [["AP50 (IoU 0.50)", fmt_ci(h.get("ap50")), fmt_num(ul.get("map50")), fmt_num(coco.get("map50"))],
            ["mAP50-95", fmt_ci(h.get("map50_95")), fmt_num(ul.get("map50_95")), fmt_num(coco.get("map50_95"))],
            ["AP75 (IoU 0.75)", "", "", fmt_num(coco.get("map75"))],
            ["precision (at ultralytics' max-F1 confidence)", "", fmt_num(ul.get("precision")), ""],
            ["recall (same)", "", fmt_num(ul.get("recall")), ""]]
    body = [table(["Box metric", "medtasks [95% CI, by patient]", "ultralytics validator",
                   "COCO (pycocotools COCOeval)"], rows, table_id="box-table"),
            note(f"{m.get('n')} slices, {m.get('n_boxes_true')} truth boxes, {m.get('n_patients')} patients "
                 f"('{m.get('split')}' split). All from detections above confidence {m.get('val_conf')}; ours "
                 "recomputes ultralytics' AP from per-slice matches so that patients can be resampled."),
            note("Two definitions of AP: ultralytics' (ours and its validator) integrates the precision envelope "
                 "by trapezoids with precision 0 at recall 1, so a perfect detector scores 0.995; COCO's "
                 "(pycocotools, up to 100 boxes per slice) averages it at 101 recall points, a perfect detector "
                 "scores 1.0. Papers quote COCO's: compare those with the COCO column.")]
    curve = ul.get("pr_curve") or {}
    rec, prec = curve.get("recall") or [], curve.get("precision") or {}
    curves = [(name, np.asarray(rec, float), np.asarray([np.nan if v is None else v for v in p], float),
               float((ul.get("per_class") or {}).get(name, {}).get("map50", np.nan)))
              for name, p in prec.items() if len(p) == len(rec) and len(rec)]
    if curves:
        out = figures.plot_pr_curves(curves, fig_dir / "pr_curves.png", split=m.get("split"))
        body.append(figure(out.name, "Precision-recall curve of the boxes at IoU 0.50 (ultralytics' validator); "
                                     "legend: AP50.", alt="PR curve"))
    return section("boxes", "Box detection metrics", *body)


def _image_section(run: RunData, fig_dir: Path) -> str:
    m = run.metrics
    body = []
    if m.get("confusion_matrix"):
        out = figures.plot_confusion_matrices({f"slices (box >= {m.get('conf')})": np.asarray(m["confusion_matrix"])},
                                              fig_dir / "confusion_matrices.png", ncols=1)
        body.append(figure(out.name, "Image-level confusion matrix: a slice is PHE when it has a box above the "
                                     "confidence threshold.", alt="Confusion matrix"))
    rep = m.get("classification_report") or {}
    if rep:
        body.append(classification_report_table(rep, "image-report"))
    return section("image-level", "Image-level summary", *(body or [note("not available")]))


def build_sections(run: RunData, fig_dir: Path) -> list[str]:
    """Box metrics (ours with CIs, ultralytics', COCO's), PR curve, image-level confusion matrix and report."""
    return [_box_section(run, fig_dir), _image_section(run, fig_dir)]
