"""Volume-level evaluation and prediction of ``ms_segment`` (slices back into volumes).

``evaluate_volumes``: for each held-out FLAIR volume, its brain slices go through the network
(batch by batch), each probability map is resized back to the slice's grid and thresholded, and
the slices are stacked into a mask volume in the FLAIR's own voxel grid. Scored per volume and
voxel-pooled (:mod:`medtasks.metrics.volume_summary`: 3-D lesion detection, volumes, HD95 in mm,
the raw ISBI composite), per slice (:mod:`medtasks.metrics.seg_summary`), and the second rater
against the first where ``mask2`` exists. Writes ``predictions.csv`` (one row per volume),
``slice_metrics.csv``, ``masks/<subject>_<timepoint>.nii.gz`` (the FLAIR's affine and header) and
overlay grids. ``predict_volumes`` does the same without truth for ``medtasks predict``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import pandas as pd

from medtasks.data.manifest import Rejected
from medtasks.io.atomic import write_csv_atomic, write_json_atomic
from medtasks.io.nifti import check_axial, save_nifti_atomic
from medtasks.io.radiograph import is_dicom  # suffix .dcm or the DICM marker (DICOM often has no suffix)
from medtasks.metrics.lesions import lesion_detection
from medtasks.metrics.seg_summary import case_row, segmentation_summary
from medtasks.metrics.volume_summary import volume_row, volume_summary
from medtasks.paths import cache_dir
from medtasks.transforms.slicing import load_volume

if TYPE_CHECKING:
    from medtasks.tasks.ms_segment.task import MsSegment

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
VOLUME_COLUMNS = ("subject_id", "timepoint", "flair", "mask")


def parse_shape(text: str) -> tuple[int, ...]:
    """``"181x217x181"`` -> ``(181, 217, 181)``."""
    return tuple(int(v) for v in str(text).lower().split("x"))


def _predict_volume(task: MsSegment, model: Any, row: dict, split: str) -> np.ndarray:
    """Boolean lesion mask in the FLAIR's ``(x, y, z)`` grid (slices outside the brain stay empty)."""
    shape = parse_shape(row["shape"])
    pred = np.zeros(shape[:3], bool)
    slices = task.slice_frame(pd.DataFrame([row]))
    ks = slices["slice_index"].to_numpy()
    thr = task.cfg.eval.threshold

    def consume(i: int, prob: np.ndarray) -> None:
        pred[:, :, int(ks[i])] = (prob >= thr).T

    if len(slices):
        task.stream_masks(model, slices.assign(split=split), split, consume)
    return pred


def _save_mask(mask: np.ndarray, reference: str, path: Path) -> None:
    """``mask`` as uint8 NIfTI with ``reference``'s affine and header (the input's own space)."""
    ref = nib.load(reference)
    img = nib.Nifti1Image(mask.astype(np.uint8), ref.affine, ref.header)
    img.set_data_dtype(np.uint8)
    save_nifti_atomic(img, path)


def _spacing(path: str) -> tuple[float, float, float]:
    return tuple(float(z) for z in nib.load(path).header.get_zooms()[:3])  # type: ignore[return-value]


def evaluate_volumes(task: MsSegment, run: Any, df: pd.DataFrame, fit_result: Any = None,
                     warnings: list[str] | None = None) -> dict[str, Any]:
    e = task.cfg.eval
    test = task.eval_rows(df)
    model = task.load_model(run, "best")
    vol_rows, rater_rows, slice_rows, picks = [], [], [], []
    for r in test.to_dict("records"):
        pred = _predict_volume(task, model, r, e.split)
        true = load_volume(r["mask"]) > 0
        spacing = _spacing(r["flair"])
        name = f"{r['subject_id']}_{r['timepoint']}"
        row = volume_row(pred, true, r["subject_id"], spacing, e.connectivity)
        row.update(subject_id=r["subject_id"], timepoint=r["timepoint"], flair=r["flair"])
        if e.save_masks:
            _save_mask(pred, r["flair"], run / "masks" / f"{name}.nii.gz")
            row["mask_pred"] = f"masks/{name}.nii.gz"
        vol_rows.append(row)
        if e.raters and isinstance(r.get("mask2"), str) and r["mask2"]:
            rater_rows.append(volume_row(load_volume(r["mask2"]) > 0, true, r["subject_id"], spacing, e.connectivity))
        for k in task.slice_frame(pd.DataFrame([r]))["slice_index"]:
            sr = case_row(pred[:, :, k].T, true[:, :, k].T, r["subject_id"], with_hd95=False)
            slice_rows.append({**sr, "subject_id": r["subject_id"], "timepoint": r["timepoint"], "slice_index": int(k)})
            picks.append((int(sr["n_true"]), int(sr["fp"]), r, int(k)))
    vols, slices = pd.DataFrame(vol_rows), pd.DataFrame(slice_rows)
    summary = volume_summary(vols, n_boot=e.n_boot, seed=task.cfg.seed)
    slice_summary = segmentation_summary(slices, n_boot=e.n_boot, seed=task.cfg.seed, min_area=e.min_area)
    slice_summary["seg_to_classification"].pop("report_text", None)
    metrics = task.metrics_header(warnings, layout="volumes", threshold=e.threshold, n=int(len(vols)),
                                  n_patients=summary["n_subjects"], **summary,
                                  slices={k: v for k, v in slice_summary.items() if k != "headline"})
    metrics["pixel_confusion_matrix"] = slice_summary["pixel_confusion_matrix"]
    if rater_rows:
        metrics["raters"] = volume_summary(pd.DataFrame(rater_rows), n_boot=e.n_boot, seed=task.cfg.seed)
        metrics["raters"].pop("headline", None)
    task.add_fit_result(metrics, fit_result)
    cols = ["subject_id", "timepoint", "dice", "iou", "sens", "ppv", "n_true_lesions", "n_pred_lesions", "n_detected",
            "n_false_pos", "ltpr", "lfpr", "lesion_f1", "true_volume", "pred_volume", "hd95", "tp", "fp", "fn", "tn"]
    preds = vols[[c for c in [*cols, "mask_pred"] if c in vols.columns]].rename(columns={"subject_id": "patient_id"})
    preds.insert(0, "case_id", [f"{s}_{t}" for s, t in zip(vols.subject_id, vols.timepoint)])
    preds["split"] = e.split
    write_csv_atomic(preds, run / "predictions.csv")
    write_csv_atomic(slices, run / "slice_metrics.csv")
    metrics["overlays"] = _overlays(task, run, picks)
    write_json_atomic(run / "metrics.json", metrics)
    h = summary["headline"]
    log.info("%s %s: volume Dice %.4f, pooled Dice %.4f, lesion F1 %.4f, ISBI (raw) %.4f", task.name, e.split,
             h["volume_dice"]["value"], h["pooled_dice"]["value"], h["lesion_f1"]["value"] or float("nan"),
             h["isbi_raw"]["value"] or float("nan"))
    return metrics


def _overlays(task: MsSegment, run: Any, picks: list) -> dict[str, int]:
    """``figures/extra_overlays_lesions.png`` (largest true lesion slices) and ``..._false_positive.png``."""
    from medtasks.viz.overlays import mask_overlay_grid

    k = task.cfg.eval.overlays
    model = task.load_model(run, "best")
    out = {}
    for kind, chosen in (("lesions", sorted((p for p in picks if p[0] > 0), key=lambda p: -p[0])[:k]),
                         ("false_positive", sorted((p for p in picks if p[0] == 0 and p[1] > 0),
                                                   key=lambda p: -p[1])[:k // 2])):
        path = run / "figures" / f"extra_overlays_{kind}.png"
        path.unlink(missing_ok=True)
        out[kind] = len(chosen)
        if not chosen:
            continue
        frame = pd.DataFrame([{**r, "slice_index": s} for _, _, r, s in chosen])
        probs: dict[int, np.ndarray] = {}
        task.stream_masks(model, frame.assign(split="test"), "test", lambda i, p: probs.__setitem__(i, p))
        rows = [frame.iloc[i] for i in range(len(frame))]
        mask_overlay_grid([task.display_image(r) for r in rows], [task.truth_mask(r) for r in rows],
                          [probs[i] >= task.cfg.eval.threshold for i in range(len(rows))],
                          [task.case_name(r) for r in rows], path,
                          suptitle=f"{task.name}: " + ('slices with the largest lesions' if kind == 'lesions'
                                                       else 'false-positive slices'))
    return out


def _dicom_to_nifti(folder: Path, cache: Path) -> Path:
    """A DICOM series folder as a NIfTI volume (MONAI's PydicomReader: affine in RAS), cached by folder + files."""
    from monai.transforms import LoadImage

    files = sorted(p for p in folder.iterdir() if p.is_file())
    key = hashlib.sha256("|".join(f"{p}:{p.stat().st_mtime_ns}" for p in files).encode()).hexdigest()[:12]
    out = cache / f"{folder.name}-{key}.nii.gz"
    if not out.is_file():
        img = LoadImage(reader="PydicomReader", image_only=True, ensure_channel_first=False)(str(folder))
        arr = np.asarray(img).astype(np.float32)
        if arr.ndim != 3:
            raise ValueError(f"{folder}: expected one 3-D series, got an array of shape {arr.shape}")
        save_nifti_atomic(nib.Nifti1Image(arr, np.asarray(img.affine, dtype=np.float64)), out)
    return out


def find_volumes(task: MsSegment, source: Path) -> tuple[pd.DataFrame, Rejected]:
    """NIfTI files under ``source`` (or ``source`` itself) and DICOM series folders (converted once, cached)."""
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    rows, rejected = [], Rejected()
    dicom = {p for p in files if not p.name.lower().endswith(NIFTI_SUFFIXES) and is_dicom(p)}
    series = sorted({p.parent for p in dicom})
    for p in files:
        if p in dicom:
            continue
        if not p.name.lower().endswith(NIFTI_SUFFIXES):
            rejected.add(p, "unknown_file", "not a NIfTI file or a DICOM series (.dcm)")
            continue
        rows.append((p, p.name.split(".nii")[0]))
    for folder in series:
        try:
            rows.append((_dicom_to_nifti(folder, cache_dir() / "dicom_series"), folder.name))
        except Exception as exc:  # any reader error: one row, the run goes on
            rejected.add(folder, "unreadable", f"DICOM series: {type(exc).__name__}: {exc}")
    out = []
    for path, name in rows:
        try:
            check_axial(str(path))
            shape = load_volume(path).shape
        except ValueError as exc:
            rejected.add(path, "unreadable", str(exc).split(": ", 1)[-1])
            continue
        out.append({"flair": str(path), "subject_id": name, "timepoint": "", "shape": "x".join(map(str, shape))})
    return pd.DataFrame(out, columns=["flair", "subject_id", "timepoint", "shape"]), rejected


def predict_volumes(task: MsSegment, run: Any, df: pd.DataFrame, out_dir: Path | None, progress: bool = True
                    ) -> pd.DataFrame:
    from medtasks.viz.overlays import mask_overlay_grid

    model = task.load_model(run, "best")
    rows = []
    for r in df.to_dict("records"):
        pred = _predict_volume(task, model, {**r, "mask": ""}, "predict")
        spacing = _spacing(r["flair"])
        det = lesion_detection(pred, pred, connectivity=task.cfg.eval.connectivity)
        row = {"case_id": r["subject_id"], "input": r["flair"], "lesion_voxels": int(pred.sum()),
               "lesion_volume_mm3": float(pred.sum() * np.prod(spacing)), "n_lesions": det["n_pred_lesions"]}
        if out_dir is not None:
            mask_path = Path(out_dir) / "masks" / f"{r['subject_id']}_mask.nii.gz"
            _save_mask(pred, r["flair"], mask_path)
            row["mask"] = str(mask_path.relative_to(out_dir))
            area = pred.sum(axis=(0, 1))
            ks = [int(k) for k in np.argsort(-area, kind="stable")[:4] if area[k] > 0] or [pred.shape[2] // 2]
            sl = [{**r, "slice_index": k} for k in ks]
            mask_overlay_grid([task.display_image(pd.Series(s)) for s in sl], [None] * len(sl),
                              [pred[:, :, k].T for k in ks], [f"slice {k}" for k in ks],
                              Path(out_dir) / "overlays" / f"{r['subject_id']}.png",
                              suptitle=f"{r['subject_id']}: predicted lesions")
        rows.append(row)
    return pd.DataFrame(rows)
