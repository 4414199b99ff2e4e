"""Volume-level evaluation and prediction of ``ms_segment`` (slices back into volumes).

``evaluate_volumes``: for each held-out FLAIR volume, its brain slices go through the network
(batch by batch), each probability map is resized back to the slice's grid and thresholded, and
the slices are stacked into a mask volume in the FLAIR's own voxel grid
(:func:`~medtasks.tasks.ms_segment.volumes.predict_volume`). The minimum lesion size
(``postprocess.min_lesion_mm3``: a number, 0 = off, or ``auto`` = chosen on the validation volumes,
:mod:`medtasks.transforms.postprocess`) is applied to every predicted volume before scoring, saving
and ``predict``. Scored per volume and voxel-pooled (:mod:`medtasks.metrics.volume_summary`: 3-D
lesion detection, volumes, HD95 in mm, the raw ISBI composite), lesion-wise under both matching
rules (``lesion_rules``: ISBI any-overlap and the report's IoU > ``eval.iou_threshold``,
:mod:`medtasks.metrics.lesion_rules`), per slice (:mod:`medtasks.metrics.seg_summary`), and the
second rater against the first where ``mask2`` exists. Writes ``predictions.csv`` (one row per
volume), ``slice_metrics.csv``, ``lesions.csv`` (one row per true and per predicted lesion,
:mod:`medtasks.metrics.lesion_table`), ``masks/<subject>_<timepoint>.nii.gz`` (the FLAIR's affine
and header) and overlay grids. ``predict_volumes`` does the same without truth for ``medtasks predict``.
"""

from __future__ import annotations

import heapq
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import pandas as pd

from medtasks.data.volume_inputs import series_files
from medtasks.io.atomic import write_csv_atomic, write_json_atomic
from medtasks.io.nifti import voxel_spacing
from medtasks.io.seg_outputs import MASKS, output_path, save_label_nifti
from medtasks.metrics.lesion_rules import rule_columns, rules_summary
from medtasks.metrics.lesion_table import LESION_COLUMNS, lesion_table
from medtasks.metrics.lesions import lesion_detection, match_lesions
from medtasks.metrics.seg_summary import case_row, segmentation_summary
from medtasks.metrics.volume_summary import volume_row, volume_summary
from medtasks.tasks.kinds.volume_outputs import write_volume_outputs
from medtasks.tasks.ms_segment.slice_split import ALL_SPLITS, blank_other_slices
from medtasks.tasks.ms_segment.volumes import predict_probability, predict_volume
from medtasks.transforms.postprocess import lesion_f1_curve, remove_small_lesions, resolve_min_lesion_size
from medtasks.transforms.slicing import load_volume

if TYPE_CHECKING:
    from medtasks.tasks.ms_segment.task import MsSegment

log = logging.getLogger(__name__)

PRED_COLUMNS = ("subject_id", "timepoint", "dice", "iou", "sens", "ppv", "n_true_lesions", "n_pred_lesions",
                "n_detected", "n_false_pos", "ltpr", "lfpr", "lesion_f1", "iou_n_detected", "iou_n_false_pos",
                "iou_ltpr", "iou_lfpr", "iou_lesion_f1", "true_volume", "pred_volume", "hd95", "assd", "nsd",
                "tp", "fp", "fn", "tn", "n_true")


def choose_postprocess(task: MsSegment, model: Any, df: pd.DataFrame) -> dict[str, Any]:
    """``postprocess`` of metrics.json; for ``auto`` the validation volumes are predicted and the size chosen on
    them. The size used is kept in the task state (``predict`` reads it)."""
    pp, e = task.cfg.postprocess, task.cfg.eval
    curve_fn = None
    val = df[df.split.isin(["val", ALL_SPLITS])] if "split" in df.columns else df.iloc[:0]
    if pp.min_lesion_mm3 == "auto" and len(val):
        cases = []
        for r in val.to_dict("records"):
            pred, true = predict_volume(task, model, r, "val"), load_volume(r["mask"]) > 0
            if task.slice_level():  # the validation slices of each scan only
                pred, true = blank_other_slices(pred, true, task.eval_slices(r, "val"))
            cases.append((pred, true, voxel_spacing(r["flair"])))

        def curve_fn(candidates):
            return lesion_f1_curve(cases, candidates, e.connectivity)
    info = resolve_min_lesion_size(pp, curve_fn, e.connectivity,
                                   chosen=task.state.get("postprocess", {}).get("min_lesion_mm3"))
    if info["mode"] == "auto" and e.split == "val":
        info["note"] = "chosen and evaluated on the same split (eval.split=val): optimistic"
    task.state["postprocess"] = {"min_lesion_mm3": info["min_lesion_mm3"]}
    return info


def _slice_picks(picks: dict[str, Any], k: int, pred: np.ndarray, true: np.ndarray, r: dict, ks: Any) -> None:
    """Keep the ``k`` slices with the largest true lesion area and the ``k // 2`` lesion-free slices with the
    most false-positive pixels so far (their masks, for the overlay grids; ties: the earlier slice)."""
    for z in ks:
        t, p = true[:, :, z].T, pred[:, :, z].T
        n_true, n_fp = int(t.sum()), int((p & ~t).sum())
        seq = picks["n"] = picks["n"] + 1
        if n_true:
            picks["lesions"].append((n_true, -seq, r, int(z), p.copy(), t.copy()))
        elif n_fp:
            picks["false_positive"].append((n_fp, -seq, r, int(z), p.copy(), t.copy()))
    picks["lesions"] = heapq.nlargest(k, picks["lesions"], key=lambda x: (x[0], x[1]))
    picks["false_positive"] = heapq.nlargest(k // 2, picks["false_positive"], key=lambda x: (x[0], x[1]))


def evaluate_volumes(task: MsSegment, run: Any, df: pd.DataFrame, fit_result: Any = None,
                     warnings: list[str] | None = None) -> dict[str, Any]:
    e = task.cfg.eval
    test = task.eval_rows(df)
    model = task.load_model(run, "best")
    post = choose_postprocess(task, model, df)
    task.save_state(run)
    min_mm3 = post["min_lesion_mm3"]
    vol_rows, rater_rows, slice_rows, lesion_rows = [], [], [], []
    picks: dict[str, Any] = {"n": 0, "lesions": [], "false_positive": []}
    for r in test.to_dict("records"):
        spacing = voxel_spacing(r["flair"])
        pred = remove_small_lesions(predict_volume(task, model, r, e.split), min_mm3, spacing, e.connectivity)
        true = load_volume(r["mask"]) > 0
        ks = task.eval_slices(r, e.split)
        if task.slice_level():  # score the eval.split slices of this scan only
            pred, true = blank_other_slices(pred, true, ks)
        name = f"{r['subject_id']}_{r['timepoint']}"
        row = volume_row(pred, true, r["subject_id"], spacing, e.connectivity, nsd_tolerance=e.nsd_tolerance_mm)
        match = match_lesions(pred, true, e.connectivity, iou_threshold=e.iou_threshold)
        row.update(rule_columns(match, "iou"), subject_id=r["subject_id"], timepoint=r["timepoint"], flair=r["flair"])
        if e.lesion_table:
            lesion_rows.append(lesion_table(match, name, spacing, nib.load(r["flair"]).affine))
        if e.save_masks:
            save_label_nifti(pred, r["flair"], output_path(run.path, MASKS, name, "nifti"))
            row["mask_pred"] = f"{MASKS}/{name}.nii.gz"
        vol_rows.append(row)
        if e.raters and isinstance(r.get("mask2"), str) and r["mask2"]:
            rater_rows.append(volume_row(load_volume(r["mask2"]) > 0, true, r["subject_id"], spacing, e.connectivity))
        for k in ks:
            sr = case_row(pred[:, :, k].T, true[:, :, k].T, r["subject_id"], with_hd95=False)
            slice_rows.append({**sr, "subject_id": r["subject_id"], "timepoint": r["timepoint"], "slice_index": int(k)})
        _slice_picks(picks, e.overlays, pred, true, r, ks)
    vols, slices = pd.DataFrame(vol_rows), pd.DataFrame(slice_rows)
    vols["n_true"] = vols["tp"] + vols["fn"]  # truth voxels: `medtasks compare` scores Dice over volumes with lesions
    summary = volume_summary(vols, n_boot=e.n_boot, seed=task.cfg.seed)
    slice_summary = segmentation_summary(slices, n_boot=e.n_boot, seed=task.cfg.seed, min_area=e.min_area)
    slice_summary["seg_to_classification"].pop("report_text", None)
    metrics = task.metrics_header(warnings, layout="volumes", threshold=e.threshold, n=int(len(vols)),
                                  n_patients=summary["n_subjects"], **summary,
                                  slices={k: v for k, v in slice_summary.items() if k != "headline"})
    metrics["lesion_rules"] = rules_summary(vols, e.iou_threshold, n_boot=e.n_boot, seed=task.cfg.seed)
    metrics["headline"]["lesion_f1_iou"] = metrics["lesion_rules"]["iou"]["per_volume"]["lesion_f1"]
    metrics["postprocess"] = post
    metrics["pixel_confusion_matrix"] = slice_summary["pixel_confusion_matrix"]
    if rater_rows:
        metrics["raters"] = volume_summary(pd.DataFrame(rater_rows), n_boot=e.n_boot, seed=task.cfg.seed)
        metrics["raters"].pop("headline", None)
    task.add_fit_result(metrics, fit_result)
    preds = vols[[c for c in [*PRED_COLUMNS, "mask_pred"] if c in vols.columns]].rename(
        columns={"subject_id": "patient_id"})
    preds.insert(0, "case_id", [f"{s}_{t}" for s, t in zip(vols.subject_id, vols.timepoint)])
    preds["split"] = e.split
    write_csv_atomic(preds, run / "predictions.csv")
    write_csv_atomic(slices, run / "slice_metrics.csv")
    if e.lesion_table:
        lesions = pd.concat(lesion_rows, ignore_index=True) if lesion_rows else pd.DataFrame(columns=LESION_COLUMNS)
        write_csv_atomic(lesions, run / "lesions.csv")
        metrics["lesion_table"] = {"file": "lesions.csv", "split": e.split,
                                   "n_true": int((lesions["kind"] == "true").sum()),
                                   "n_pred": int((lesions["kind"] == "pred").sum())}
    metrics["overlays"] = _overlays(task, run, picks)
    write_json_atomic(run / "metrics.json", metrics)
    h = summary["headline"]
    log.info("%s %s: volume Dice %.4f, pooled Dice %.4f, lesion F1 %.4f (IoU rule %.4f), ISBI (raw) %.4f, "
             "min lesion %.1f mm^3", task.name, e.split, h["volume_dice"]["value"], h["pooled_dice"]["value"],
             h["lesion_f1"]["value"] or float("nan"), h["lesion_f1_iou"]["value"] or float("nan"),
             h["isbi_raw"]["value"] or float("nan"), min_mm3)
    return metrics


def _overlays(task: MsSegment, run: Any, picks: dict[str, Any]) -> dict[str, int]:
    """``figures/extra_overlays_lesions.png`` (largest true lesion slices) and ``..._false_positive.png``, drawn
    with the post-processed masks that were scored."""
    from medtasks.viz.overlays import mask_overlay_grid

    out = {}
    for kind in ("lesions", "false_positive"):
        path = run / "figures" / f"extra_overlays_{kind}.png"
        path.unlink(missing_ok=True)
        chosen = picks[kind]
        out[kind] = len(chosen)
        if not chosen:
            continue
        rows = [pd.Series({**r, "slice_index": z}) for _, _, r, z, _, _ in chosen]
        mask_overlay_grid([task.display_image(s) for s in rows], [c[5] for c in chosen], [c[4] for c in chosen],
                          [task.case_name(s) for s in rows], path,
                          suptitle=f"{task.name}: " + ('slices with the largest lesions' if kind == 'lesions'
                                                       else 'false-positive slices'))
    return out


def _min_lesion_size(task: MsSegment) -> float:
    """The size ``predict`` uses: the configured number, or the one chosen on validation (task state)."""
    pp = task.cfg.postprocess
    if pp.min_lesion_mm3 != "auto":
        return float(pp.min_lesion_mm3)
    chosen = task.state.get("postprocess", {}).get("min_lesion_mm3")
    if chosen is None:
        log.warning("postprocess.min_lesion_mm3=auto but this run has no chosen size (evaluate it first): no filter")
        return 0.0
    return float(chosen)


def predict_volumes(task: MsSegment, run: Any, df: pd.DataFrame, out_dir: Path | None, progress: bool = True,
                    probabilities: bool = False) -> pd.DataFrame:
    """One row per input volume; under ``out_dir`` the mask (``masks/<case>.nii.gz``), with ``probabilities``
    the unfiltered lesion probability (``probabilities/<case>.nii.gz``), for a DICOM series a DICOM SEG
    (``seg/<case>.dcm``), and an overlay of the slices with the most lesion."""
    from medtasks.viz.overlays import mask_overlay_grid

    model = task.load_model(run, "best")
    min_mm3, conn, thr = _min_lesion_size(task), task.cfg.eval.connectivity, task.cfg.eval.threshold
    rows = []
    for r in df.to_dict("records"):
        spacing = voxel_spacing(r["flair"])
        prob = predict_probability(task, model, {**r, "mask": ""}, "predict")
        pred = remove_small_lesions(prob >= thr, min_mm3, spacing, conn)
        det = lesion_detection(pred, pred, connectivity=conn)
        case = str(r["subject_id"])
        row = {"case_id": case, "input": r["flair"], "lesion_voxels": int(pred.sum()),
               "lesion_volume_mm3": float(pred.sum() * np.prod(spacing)), "n_lesions": det["n_pred_lesions"],
               "min_lesion_mm3": min_mm3}
        if out_dir is not None:
            row.update(write_volume_outputs(task, run, out_dir, case, pred, r["flair"], series_files(r),
                                            prob if probabilities else None))
            area = pred.sum(axis=(0, 1))
            ks = [int(k) for k in np.argsort(-area, kind="stable")[:4] if area[k] > 0] or [pred.shape[2] // 2]
            sl = [{**r, "slice_index": k} for k in ks]
            mask_overlay_grid([task.display_image(pd.Series(s)) for s in sl], [None] * len(sl),
                              [pred[:, :, k].T for k in ks], [f"slice {k}" for k in ks],
                              Path(out_dir) / "overlays" / f"{case}.png", suptitle=f"{case}: predicted lesions")
        rows.append(row)
    return pd.DataFrame(rows)
