"""cardiac_seg evaluation: every held-out patient predicted by each trained branch (in the input's
space), fused under each gate mode, scored per patient and overall, the gate modes compared.

Per patient and class: Dice (rule for a class absent from both truth and prediction: undefined,
left out of that class's mean; ``n_<class>_scored`` counts the patients that do score — a patient
without calcium predicted without calcium is a true negative, not a Dice of 1 or 0), HD95 in mm; calcium lesions as 3-D
connected components (``eval.connectivity``), recall / precision / F1 pooled over patients; the
gate's patient-level accuracy against "has calcium". The configured gate (``infer.gate``) gives
``predictions.csv``, the masks and ``lesions.csv`` (one row per true / predicted calcium lesion,
:mod:`medtasks.tasks.cardiac_seg.calcium`); ``gate_comparison`` holds the three modes side by side.
The calcium mask loses its lesions below ``postprocess.min_lesion_mm3`` (fixed, or ``auto``: chosen
on the validation patients) before any gate, in evaluation and ``predict`` alike.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import pandas as pd

from medtasks.data.volume_inputs import series_files
from medtasks.io.atomic import write_csv_atomic, write_json_atomic
from medtasks.io.nifti import voxel_spacing
from medtasks.io.seg_outputs import MASKS, output_path, save_label_nifti
from medtasks.metrics.bootstrap import bootstrap_ci
from medtasks.metrics.lesion_table import LESION_COLUMNS
from medtasks.metrics.lesions import lesion_detection, pooled_lesion_scores
from medtasks.metrics.segmentation import NAN, case_metric_fn, hd95, overlap_metrics
from medtasks.metrics.surface import assd, nsd
from medtasks.tasks.cardiac_seg.calcium import (
    calcium_lesions,
    choose_calcium_postprocess,
    evaluation_gate,
    min_calcium_mm3,
)
from medtasks.tasks.cardiac_seg.config import CLASSES, STAGES
from medtasks.tasks.cardiac_seg.infer import GATES, calcium_probability, fuse, predict_stage
from medtasks.tasks.kinds.volume_outputs import write_volume_outputs
from medtasks.transforms.postprocess import remove_small_lesions

if TYPE_CHECKING:
    from medtasks.tasks.cardiac_seg.task import CardiacSeg

log = logging.getLogger(__name__)


def _branches(task: CardiacSeg, run: Any) -> dict[str, Any]:
    """The trained branches of the run (``None`` for a stage it did not train, e.g. ``stages=[class3]``)."""
    models = {s: task.load_stage_model(run, s) if (run / s / "checkpoints" / "best.pt").is_file() else None
              for s in STAGES}
    if models["class12"] is None and models["class3"] is None:
        raise FileNotFoundError(f"{run}: neither class12 nor class3 was trained; nothing to evaluate")
    return models


def missing_note(models: dict[str, Any]) -> list[str]:
    return [f"stage {s} was not trained in this run: " + ("myocardium and valve are empty in the fused maps"
            if s == "class12" else "no calcium is fused") for s in ("class12", "class3") if models[s] is None]


def _predict(task: CardiacSeg, models: dict[str, Any], image: str, min_mm3: float = 0.0,
             with_probability: bool = False) -> dict[str, Any]:
    """Both branches and the gate's probability for one volume; calcium without its lesions below ``min_mm3``.
    ``with_probability``: ``prob`` ``(x, y, z, 3)``, each branch's softmax probability of myocardium, aortic valve
    (class12) and calcification (class3), before fusion, gate and size filter (0 for a branch not trained)."""
    t0 = time.perf_counter()
    shape = nib.load(image).shape[:3]
    prob = np.zeros((*shape, len(CLASSES)), np.float32) if with_probability else None
    base, calcium = np.zeros(shape, np.uint8), np.zeros(shape, bool)
    if models["class12"] is not None:
        base = predict_stage(task, models["class12"], image, "class12", with_probability)
        if with_probability:
            base, p12 = base
            prob[..., 0], prob[..., 1] = p12[1], p12[2]
    if models["class3"] is not None:
        lab3 = predict_stage(task, models["class3"], image, "class3", with_probability)
        if with_probability:
            lab3, p3 = lab3
            prob[..., 2] = p3[1]
        calcium = lab3 == 1
    calcium = remove_small_lesions(calcium, min_mm3, voxel_spacing(image), task.cfg.eval.connectivity)
    p = calcium_probability(task, models["gate"], image) if models["gate"] is not None else None
    return {"base": base, "calcium": calcium, "p_calcium": p, "prob": prob, "seconds": time.perf_counter() - t0}


def patient_row(pred: np.ndarray, true: np.ndarray, spacing: tuple[float, ...], connectivity: int,
                nsd_tolerance: float = 2.0) -> dict[str, Any]:
    """Per-class Dice, HD95 and ASSD in mm (NaN unless the class is in both maps), normalised surface Dice
    at ``nsd_tolerance`` mm (NaN when the class is in neither map, 0 when in one only), calcium lesion counts."""
    row: dict[str, Any] = {}
    for c, name in CLASSES.items():
        p, t = pred == c, true == c
        both = p.any() and t.any()
        row[f"dice_{name}"] = overlap_metrics(p, t, empty_value=None)["dice"]
        row[f"hd95_{name}"] = hd95(p, t, spacing) if both else NAN
        row[f"assd_{name}"] = assd(p, t, spacing) if both else NAN
        row[f"nsd_{name}"] = nsd(p, t, nsd_tolerance, spacing)
    det = lesion_detection(pred == 3, true == 3, connectivity=connectivity)
    row.update(calc_true_lesions=det["n_true_lesions"], calc_pred_lesions=det["n_pred_lesions"],
               calc_detected=det["n_detected"], calc_false_pos=det["n_false_pos"],
               has_calcium=int((true == 3).any()), calcium_voxels_pred=int((pred == 3).sum()))
    return row


def _mode_summary(rows: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in CLASSES.values():
        v = rows[f"dice_{name}"].astype(float)
        out[f"dice_{name}"] = float(v.mean()) if v.notna().any() else NAN
        out[f"n_{name}_scored"] = int(v.notna().sum())
    les = pooled_lesion_scores(int(rows.calc_true_lesions.sum()), int(rows.calc_pred_lesions.sum()),
                               int(rows.calc_detected.sum()), int(rows.calc_false_pos.sum()))
    out.update(calcium_lesion_recall=les["ltpr"], calcium_lesion_precision=les["precision"],
               calcium_lesion_f1=les["f1"],
               gate_accuracy=float((rows.gate_open.astype(int) == rows.has_calcium).mean()),
               false_positive_patients=int(((rows.has_calcium == 0) & (rows.calcium_voxels_pred > 0)).sum()))
    return out


def evaluate_cardiac(task: CardiacSeg, run: Any, df: pd.DataFrame, fit_result: Any = None,
                     warnings: list[str] | None = None) -> dict[str, Any]:
    e, inf = task.cfg.eval, task.cfg.infer
    test = task.eval_rows(df)
    models = _branches(task, run)
    modes = [g for g in GATES if g != "classifier" or models["gate"] is not None]
    chosen = evaluation_gate(task, models)
    post = choose_calcium_postprocess(task, models, df)
    task.save_state(run)
    rows: dict[str, list] = {g: [] for g in modes}
    lesion_rows = []
    for r in test.itertuples():
        out = _predict(task, models, r.image, post["min_lesion_mm3"])
        ref = nib.load(r.label)
        true = np.asarray(ref.dataobj).astype(np.uint8)
        spacing = tuple(float(z) for z in ref.header.get_zooms()[:3])
        for g in modes:
            fused, open_ = fuse(out["base"], out["calcium"], g, inf.min_calcium_voxels, out["p_calcium"],
                                inf.classifier_threshold)
            row = {"case_id": r.patient_id, "patient_id": r.patient_id, "split": e.split, "gate": g, "gate_open": open_,
                   "p_calcium": out["p_calcium"], "seconds": round(out["seconds"], 2),
                   **patient_row(fused, true, spacing, e.connectivity, e.nsd_tolerance_mm)}
            if g == chosen and e.save_masks:
                save_label_nifti(fused, r.image, output_path(run.path, MASKS, str(r.patient_id), "nifti"))
                row["mask"] = f"{MASKS}/{r.patient_id}.nii.gz"
            if g == chosen and e.lesion_table:
                lesion_rows.append(calcium_lesions(fused, true, r.patient_id, voxel_spacing(r.image),
                                                   nib.load(r.image).affine, e.connectivity, e.iou_threshold))
            rows[g].append(row)
    tables = {g: pd.DataFrame(v) for g, v in rows.items()}
    t = tables[chosen]
    groups = t.patient_id.astype(str).to_numpy()
    headline = {}
    for name in CLASSES.values():
        col = f"dice_{name}"
        sub = t[t[col].notna()].reset_index(drop=True)
        if len(sub):
            headline[col] = bootstrap_ci(case_metric_fn(sub, col), sub.patient_id.astype(str).to_numpy(),
                                         n_boot=e.n_boot, seed=task.cfg.seed)
    headline["calcium_lesion_f1"] = bootstrap_ci(lambda idx: _mode_summary(t.iloc[idx])["calcium_lesion_f1"], groups,
                                                 n_boot=e.n_boot, seed=task.cfg.seed)
    headline["gate_accuracy"] = bootstrap_ci(lambda idx: float((t.gate_open.astype(int).to_numpy()[idx]
                                                                == t.has_calcium.to_numpy()[idx]).mean()),
                                             groups, n_boot=e.n_boot, seed=task.cfg.seed)
    write_csv_atomic(t, run / "predictions.csv")
    write_csv_atomic(pd.concat(tables.values(), ignore_index=True), run / "gate_predictions.csv")
    header = task.metrics_header([*(warnings or []), *missing_note(models)])  # + the protocol's departures
    metrics = {**header, "layout": "cardiac", "gate": chosen, "n": int(len(t)),
               "n_patients": int(len(set(groups))), "n_with_calcium": int(t.has_calcium.sum()),
               "headline": headline, "summary": _mode_summary(t),
               "gate_comparison": {g: _mode_summary(tab) for g, tab in tables.items()},
               **{f"{m}_mm" if m != "nsd" else "nsd": {
                   name: float(t[f"{m}_{name}"].mean()) if t[f"{m}_{name}"].notna().any() else NAN
                   for name in CLASSES.values()} for m in ("hd95", "assd", "nsd")},
               "nsd_tolerance_mm": e.nsd_tolerance_mm,
               "seconds_per_patient": float(t.seconds.mean()), "stages": task.state.get("stages", {}),
               "empty_rule": "a class absent from truth and prediction is left out of its Dice mean",
               "postprocess": post}
    if e.lesion_table:
        lesions = pd.concat(lesion_rows, ignore_index=True) if lesion_rows else pd.DataFrame(columns=LESION_COLUMNS)
        write_csv_atomic(lesions, run / "lesions.csv")
        metrics["lesion_table"] = {"file": "lesions.csv", "split": e.split, "class": CLASSES[3], "gate": chosen,
                                   "n_true": int((lesions["kind"] == "true").sum()),
                                   "n_pred": int((lesions["kind"] == "pred").sum())}
    task.add_fit_result(metrics, fit_result)
    write_json_atomic(run / "metrics.json", metrics)
    log.info("cardiac_seg %s (%s gate): Dice myocardium %.4f valve %.4f calcium %s; gate accuracy %.3f", e.split,
             chosen, metrics["summary"]["dice_myocardium"], metrics["summary"]["dice_aortic_valve"],
             metrics["summary"]["dice_calcification"], metrics["summary"]["gate_accuracy"])
    return metrics


def predict_cardiac(task: CardiacSeg, run: Any, df: pd.DataFrame, out_dir: Path | None, progress: bool = True,
                    probabilities: bool = False) -> pd.DataFrame:
    """Fused label maps (``infer.gate``) in each input's space, one row per volume: ``masks/<case>.nii.gz``,
    with ``probabilities`` the branches' probabilities (``probabilities/<case>.nii.gz``, 4th axis myocardium /
    aortic valve / calcification), for a DICOM series a DICOM SEG (``seg/<case>.dcm``, one segment per class)."""
    models = _branches(task, run)
    inf = task.cfg.infer
    gate, min_mm3 = evaluation_gate(task, models), min_calcium_mm3(task)
    rows = []
    for r in df.to_dict("records"):
        out = _predict(task, models, r["image"], min_mm3, with_probability=probabilities and out_dir is not None)
        fused, open_ = fuse(out["base"], out["calcium"], gate, inf.min_calcium_voxels, out["p_calcium"],
                            inf.classifier_threshold)
        case = str(r["patient_id"])
        row = {"case_id": case, "input": r["image"], "gate": gate, "gate_open": open_,
               "p_calcium": out["p_calcium"],
               **{f"voxels_{n}": int((fused == c).sum()) for c, n in CLASSES.items()},
               "min_calcium_mm3": min_mm3, "seconds": round(out["seconds"], 2)}
        if out_dir is not None:
            row.update(write_volume_outputs(task, run, out_dir, case, fused, r["image"], series_files(r), out["prob"]))
        rows.append(row)
    return pd.DataFrame(rows)
