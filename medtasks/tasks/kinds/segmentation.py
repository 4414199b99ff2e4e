"""Kind-level base for binary 2-D segmentation: train, evaluate and predict once for every such task.

The concrete task supplies ``records`` (``image`` + ``label`` entries the transforms load),
``build_transforms``, ``build_model`` (one logit map), ``build_loss`` and two data hooks:
``truth_mask(row)`` (the case's mask at its native resolution) and ``display_image(row)`` (the
grey picture overlays are drawn on). Training is :func:`medtasks.engine.trainer.fit` with the
best checkpoint chosen by validation Dice; evaluation streams the held-out split batch by batch
(memory stays bounded on thousands of 512x512 slices): each probability map is resized back to
the case's native size, thresholded and compared there, so metrics are those of the original
masks, never of resampled ones. Outputs (names: :mod:`medtasks.io.seg_outputs`): ``predictions.csv`` (one row
per case), ``masks/<case>.png`` (predicted masks, native size), ``metrics.json`` (pooled / per-image /
per-patient Dice, IoU, sensitivity, specificity with patient-bootstrap CIs, HD95, ASSD and NSD, the
pixel confusion matrix, the seg -> classification check) and ``figures/extra_overlays_*.png``.

Boundary metrics (HD95, ASSD, NSD at ``eval.nsd_tolerance_mm``) use each case's pixel spacing from
:meth:`SegmentationTask.case_spacing` (a task may read it from the image header; by default the
configured :meth:`~SegmentationTask.hd95_spacing`). The run has one unit, recorded as
``distance_unit`` in ``metrics.json`` and per case in ``predictions.csv``: mm when every case has a
spacing, else pixels for all (see :mod:`medtasks.tasks.kinds.slice_spacing`); NSD needs mm (its
tolerance is a physical distance), so in pixels it is left out (``n`` 0) with a warning.
"""

from __future__ import annotations

import logging
import re
from abc import abstractmethod
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from medtasks.data.volume_inputs import series_files
from medtasks.engine.inference import run_inference
from medtasks.engine.trainer import FitResult, fit
from medtasks.io.atomic import write_csv_atomic, write_json_atomic, write_text_atomic
from medtasks.io.dicom_seg import SegmentSpec
from medtasks.io.seg_outputs import MASKS, PROBABILITIES, output_path, save_mask_png, save_probability_png
from medtasks.metrics.bootstrap import fmt_value
from medtasks.metrics.seg_summary import case_row, segmentation_summary
from medtasks.rundir import RunDir
from medtasks.tasks.kinds.network import NetworkTask
from medtasks.tasks.kinds.slice_spacing import CaseSpacing, resolve_units
from medtasks.tasks.kinds.volume_outputs import write_volume_outputs

log = logging.getLogger(__name__)


def dice_scores(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Validation Dice of a batch of logit maps: ``dice`` pooled over all pixels, ``dice_per_image``
    the mean over images whose target has foreground (NaN when none has)."""
    pred = torch.sigmoid(logits.float()) >= threshold
    true = target >= 0.5
    dims = tuple(range(1, pred.ndim))
    inter = (pred & true).sum(dims).double()
    sizes = pred.sum(dims).double() + true.sum(dims).double()
    pooled = float(2 * inter.sum() / sizes.sum()) if sizes.sum() > 0 else 1.0
    has = true.sum(dims) > 0
    per = float((2 * inter[has] / sizes[has]).mean()) if has.any() else float("nan")
    return {"dice": pooled, "dice_per_image": per}


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "case"


def unique_names(names: list[str]) -> list[str]:
    """``names`` with ``-2``, ``-3`` ... appended to repeats (two ``scan.png`` in different folders)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def distance_header(table: pd.DataFrame, unit: str, nsd_tolerance: float | None) -> dict[str, Any]:
    """``metrics.json`` keys naming the boundary metrics' unit: ``distance_unit`` (``"mm"``/``"px"``),
    ``nsd_tolerance_mm`` (None when NSD was left out), ``pixel_spacing_mm`` (the distinct ``[row, col]``
    spacings used, None in pixels) and ``spacing_sources`` (cases per source: nifti_header / config / none)."""
    spaced = table.dropna(subset=["spacing_row_mm", "spacing_col_mm"])
    used = sorted({(round(float(r), 6), round(float(c), 6))
                   for r, c in zip(spaced["spacing_row_mm"], spaced["spacing_col_mm"])})
    return {"distance_unit": unit, "nsd_tolerance_mm": nsd_tolerance,
            "pixel_spacing_mm": [list(u) for u in used] if unit == "mm" else None,
            "spacing_sources": {str(k): int(v) for k, v in table["spacing_source"].value_counts().sort_index().items()}}


class SegmentationTask(NetworkTask):
    """Binary 2-D segmentation (one logit map, sigmoid); see the module docstring."""

    kind = "segmentation"
    labels = ("lesion",)
    id_columns: tuple[str, ...] = ("patient_id",)
    case_column: str = "image"
    input_column = "image"
    probability_maps = True
    # the segment of a DICOM SEG written for DICOM input (SNOMED CT keywords of pydicom's codes.SCT)
    dicom_segments: tuple[SegmentSpec, ...] = (SegmentSpec(1, "lesion", "MorphologicallyAbnormalStructure", "Lesion"),)

    # ---- hooks --------------------------------------------------------------------------------
    @abstractmethod
    def truth_mask(self, row: pd.Series) -> np.ndarray:
        """The case's truth mask, bool ``(H, W)`` at the native resolution."""

    @abstractmethod
    def display_image(self, row: pd.Series) -> np.ndarray:
        """The case's grey image in [0, 1], ``(H, W)`` native resolution (overlays are drawn on it)."""

    def native_shape(self, row: pd.Series) -> tuple[int, int]:
        """``(H, W)`` the probability map is resized back to: the row's ``native_h`` / ``native_w`` when it has
        them (a slice of a volume), else the display image's."""
        if "native_h" in row.index and "native_w" in row.index:
            return int(row["native_h"]), int(row["native_w"])
        return tuple(self.display_image(row).shape[-2:])  # type: ignore[return-value]

    def case_name(self, row: pd.Series) -> str:
        return _safe_name(Path(str(row[self.case_column])).stem)

    def hd95_spacing(self) -> float | None:
        """Configured isotropic pixel spacing (mm) of the boundary metrics; None = pixels (default)."""
        return None

    def case_spacing(self, row: pd.Series) -> CaseSpacing | None:
        """The case's ``(row, col)`` pixel spacing in mm at its native grid; default :meth:`hd95_spacing` for
        every case (None = unknown: the run's boundary metrics fall back to pixels)."""
        s = self.hd95_spacing()
        return None if s is None else CaseSpacing((float(s), float(s)), "config")

    # ---- training -----------------------------------------------------------------------------
    def train(self, run: RunDir, df: pd.DataFrame, resume: bool = False, progress: bool = True) -> FitResult:
        train_df, val_df = self.split_train_val(df)
        if not resume:
            self.fit_state(self.records(train_df))
        self.save_state(run)
        model, loss = self.build_model(), self.build_loss()
        log.info("training %s on %d slices (%d val), device %s", self.name, len(train_df), len(val_df), self.device())
        t, thr = self.cfg.train, self.cfg.eval.threshold
        return fit(self.training_spec(run.path, model, loss, self.loader(train_df, "train", True, t.batch_size),
                                      self.loader(val_df, "val", False, self.cfg.eval.batch_size), resume, progress,
                                      score_fn=lambda logits, y: dice_scores(logits, y, thr),
                                      prepare_batch=self.prepare_batch()))

    def load_model(self, run: RunDir, which: str = "best") -> torch.nn.Module:
        return self.restore(self.build_model(), run / "checkpoints" / f"{which}.pt")

    def export_contract(self, run: RunDir) -> dict[str, Any]:
        out = super().export_contract(run)
        out.update(output={"logits": "(batch, 1, H, W) at the network's input size",
                           "probability": "sigmoid(logits[:, 0]), resized (bilinear) to the slice's native size",
                           "mask": f"probability >= {self.cfg.eval.threshold} (eval.threshold)"},
                   threshold=float(self.cfg.eval.threshold), not_in_the_file=[])
        return out

    def bundle_spec(self, run: RunDir, df: pd.DataFrame) -> Any:
        """MONAI bundle parts: the task's 2-D image inputs (:meth:`bundle_inputs`), then what
        :meth:`_predict_images` does with a probability map: back to the image's size, ``>= eval.threshold``,
        ``masks/<case>.png``."""
        from medtasks.engine.bundle_spec import merge_parts, png_mask_outputs

        return merge_parts(self.bundle_inputs(run), png_mask_outputs(self.cfg.eval.threshold), {"notes": [
            "The bundle writes the masks; medtasks predict also writes predictions.csv (area, slice call at "
            f"eval.min_area={self.cfg.eval.min_area} px) and overlays.",
            "Mask names: the image's file stem (medtasks predict names PHE-SICH slices `<patient:04d>_<slice:02d>`, "
            "the same stem for the release's files)."]})

    # ---- inference ----------------------------------------------------------------------------
    def stream_masks(self, model: torch.nn.Module, df: pd.DataFrame, split: str, consume,
                     progress: bool = False) -> None:
        """Call ``consume(i, prob)`` for every row ``i`` of ``df`` with its probability map resized
        back to :meth:`native_shape` (float32 ``(H, W)``), batch by batch."""
        df = df.reset_index(drop=True)
        loader = self.loader(df, split, False, self.cfg.eval.batch_size)

        def on_batch(logits: np.ndarray, first: int) -> None:
            probs = 1.0 / (1.0 + np.exp(-np.clip(logits[:, 0], -60, 60)))
            for j, p in enumerate(probs):
                h, w = self.native_shape(df.iloc[first + j])
                if p.shape != (h, w):
                    p = cv2.resize(p.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
                consume(first + j, p.astype(np.float32))

        run_inference(model, loader, self.device(), self.prepare_batch(),
                      amp=self.cfg.train.amp, cpu_bf16=self.cfg.train.cpu_bf16,
                      channels_last=self.cfg.train.channels_last, progress=progress, on_batch=on_batch)

    def volume_probability(self, model: torch.nn.Module, volume: str, slice_rows: pd.DataFrame | None = None,
                           split: str = "volume", progress: bool = False) -> np.ndarray:
        """The probability (float32 ``(x, y, z)``) of the NIfTI ``volume``'s axial slices, each through the network
        as :meth:`loader` prepares ``split``: ``slice_rows`` (one row per slice, with ``slice_index``; e.g. the
        brain slices of ms_segment), by default every slice; the other slices stay 0."""
        import nibabel as nib

        shape = nib.load(str(volume)).shape[:3]
        prob = np.zeros(shape, np.float32)
        rows = slice_rows if slice_rows is not None else pd.DataFrame(
            {"image": str(volume), "slice_index": range(shape[2]), "native_h": shape[1], "native_w": shape[0]})
        ks = rows["slice_index"].to_numpy()

        def consume(i: int, p: np.ndarray) -> None:
            prob[:, :, int(ks[i])] = p.T

        if len(rows):
            self.stream_masks(model, rows.assign(split=split), split, consume, progress=progress)
        return prob

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluate(self, run: RunDir, df: pd.DataFrame, fit_result: FitResult | None = None,
                 warnings: list[str] | None = None) -> dict[str, Any]:
        e = self.cfg.eval
        split = e.split
        test_df = self.eval_rows(df)
        model = self.load_model(run, "best")
        rows: list[dict[str, Any]] = [{}] * len(test_df)
        names = unique_names([self.case_name(r) for _, r in test_df.iterrows()])
        spacings, unit, unit_note = resolve_units([self.case_spacing(r) for _, r in test_df.iterrows()])
        tolerance = float(e.nsd_tolerance_mm) if unit == "mm" else None
        notes = [n for n in (unit_note, None if tolerance is not None else
                             f"NSD left out: its {e.nsd_tolerance_mm} mm tolerance needs a pixel spacing") if n]

        def consume(i: int, prob: np.ndarray) -> None:
            row, sp = test_df.iloc[i], spacings[i]
            pred, true = prob >= e.threshold, self.truth_mask(row)
            if pred.shape != true.shape:
                raise ValueError(f"{row[self.case_column]}: truth mask {true.shape} is not the image's {pred.shape}")
            if sp is not None and sp.grid is not None and tuple(sp.grid) != pred.shape:
                raise ValueError(f"{row[self.case_column]}: its {sp.source} spacing is for a {sp.grid} grid, the "
                                 f"slice is {pred.shape}; metrics would be in the wrong mm (configure the spacing "
                                 "of this grid instead)")
            rows[i] = case_row(pred, true, str(row[self.group_column]), with_hd95=True,
                               spacing=None if sp is None else sp.mm, with_surface=True, nsd_tolerance=tolerance)
            rows[i].update(distance_unit=unit, spacing_source="none" if sp is None else sp.source,
                           spacing_row_mm=np.nan if sp is None else sp.mm[0],
                           spacing_col_mm=np.nan if sp is None else sp.mm[1])
            if e.save_masks:
                save_mask_png(pred, output_path(run.path, MASKS, names[i], "png"))

        self.stream_masks(model, test_df, split, consume, progress=True)
        table = pd.DataFrame(rows)
        summary = segmentation_summary(table, n_boot=e.n_boot, seed=self.cfg.seed, min_area=e.min_area)
        preds = pd.DataFrame({"case_id": test_df[self.case_column].astype(str)})
        for col in (*self.id_columns, "slice_index", "split"):
            if col in test_df.columns:
                preds[col] = test_df[col].values
        cols = ["n_true", "n_pred", "dice", "iou", "sens", "spec", "ppv", "hd95", "assd", "nsd", "distance_unit",
                "spacing_source", "spacing_row_mm", "spacing_col_mm", "tp", "fp", "fn", "tn"]
        preds = pd.concat([preds, table[cols]], axis=1)
        preds["true_lesion"] = (table["n_true"] > 0).astype(int)
        preds["pred_lesion"] = (table["n_pred"] >= e.min_area).astype(int)
        if e.save_masks:
            preds["mask"] = [f"{MASKS}/{n}.png" for n in names]
        write_csv_atomic(preds, run / "predictions.csv")
        write_text_atomic(run / "classification_report.txt", summary["seg_to_classification"].pop("report_text"))
        metrics = self.add_fit_result(self.metrics_header([*(warnings or []), *notes], threshold=e.threshold,
                                                          **distance_header(table, unit, tolerance), **summary),
                                      fit_result)
        metrics["overlays"] = self.write_overlays(run, model, test_df, preds)
        write_json_atomic(run / "metrics.json", metrics)
        h = summary["headline"]
        log.info("%s %s: pooled Dice %s, per-patient Dice %s, per-image Dice (lesion slices) %s", self.name, split,
                 fmt_value(h["pooled_dice"]["value"]), fmt_value(h["per_patient_dice"]["value"]),
                 fmt_value(h["per_image_dice"]["value"]) if "per_image_dice" in h else "n/a")
        return metrics

    def write_overlays(self, run: RunDir, model: torch.nn.Module, test_df: pd.DataFrame,
                       preds: pd.DataFrame) -> dict[str, int]:
        """``figures/extra_overlays_{best,worst,false_positive}.png``: lesion slices with the highest and
        the lowest Dice, and lesion-free slices with the largest predicted area."""
        from medtasks.viz.overlays import mask_overlay_grid

        k = int(self.cfg.eval.overlays)
        lesion = preds[preds.true_lesion == 1]
        picks = {"best": lesion.sort_values(["dice", "case_id"], ascending=[False, True]).head(k // 2),
                 "worst": lesion.sort_values(["dice", "case_id"], ascending=[True, True]).head(k // 2),
                 "false_positive": preds[(preds.true_lesion == 0) & (preds.n_pred > 0)]
                 .sort_values(["n_pred", "case_id"], ascending=[False, True]).head(k // 2)}
        written: dict[str, int] = {}
        for kind, rows in picks.items():
            path = run / "figures" / f"extra_overlays_{kind}.png"
            path.unlink(missing_ok=True)
            if rows.empty or k < 2:
                written[kind] = 0
                continue
            sub = test_df.loc[rows.index].reset_index(drop=True)
            probs: dict[int, np.ndarray] = {}
            self.stream_masks(model, sub, self.cfg.eval.split, lambda i, p: probs.__setitem__(i, p))
            images = [self.display_image(r) for _, r in sub.iterrows()]
            truths = [self.truth_mask(r) for _, r in sub.iterrows()]
            masks = [probs[i] >= self.cfg.eval.threshold for i in range(len(sub))]
            titles = [f"{Path(str(c)).stem}  Dice {d:.2f}" if t else f"{Path(str(c)).stem}  {int(n)} px predicted"
                      for c, d, t, n in zip(rows.case_id, rows.dice, rows.true_lesion, rows.n_pred)]
            mask_overlay_grid(images, truths, masks, titles, path,
                              suptitle=f"{self.name}: {kind.replace('_', ' ')} ({self.cfg.eval.split} split)")
            written[kind] = len(rows)
        return written

    # ---- predict ------------------------------------------------------------------------------
    def predict_frame(self, run: RunDir, df: pd.DataFrame, progress: bool = True,
                      out_dir: Path | None = None, probabilities: bool = False) -> pd.DataFrame:
        """Per input: predicted lesion area and call. A 2-D image gives ``masks/<case>.png`` (and overlays);
        a volume row (column ``volume``: NIfTI input or a DICOM series) gives the files of
        :func:`~medtasks.tasks.kinds.volume_outputs.write_volume_outputs` (NIfTI mask, DICOM SEG for DICOM
        input). ``probabilities``: ``probabilities/<case>.png`` (16-bit) or ``.nii.gz`` too."""
        df = df.reset_index(drop=True)
        is_volume = df["volume"].fillna("").astype(str) != "" if "volume" in df.columns else pd.Series(False, df.index)
        parts = []
        if (~is_volume).any():
            parts.append(self._predict_images(run, df[~is_volume], progress, out_dir, probabilities))
        if is_volume.any():
            parts.append(self._predict_volumes(run, df[is_volume], progress, out_dir, probabilities))
        return pd.concat(parts, ignore_index=True)

    def _predict_volumes(self, run: RunDir, df: pd.DataFrame, progress: bool, out_dir: Path | None,
                         probabilities: bool) -> pd.DataFrame:
        model = self.load_model(run, "best")
        rows = []
        for r in df.to_dict("records"):
            prob = self.volume_probability(model, r["volume"], progress=progress)
            mask = prob >= self.cfg.eval.threshold
            row = {"case_id": r["name"], "input": r["volume"], "pred_area_px": int(mask.sum()),
                   "pred_lesion": int(mask.sum(axis=(0, 1)).max(initial=0) >= self.cfg.eval.min_area),
                   "pred_slices": int((mask.sum(axis=(0, 1)) >= self.cfg.eval.min_area).sum())}
            if out_dir is not None:
                row.update(write_volume_outputs(self, run, out_dir, str(r["name"]), mask, r["volume"], series_files(r),
                                                prob if probabilities else None))
            rows.append(row)
        return pd.DataFrame(rows)

    def _predict_images(self, run: RunDir, df: pd.DataFrame, progress: bool, out_dir: Path | None,
                        probabilities: bool) -> pd.DataFrame:
        from medtasks.viz.overlays import mask_overlay_grid

        e = self.cfg.eval
        model = self.load_model(run, "best")
        df = df.reset_index(drop=True).assign(split="predict")
        names = unique_names([self.case_name(r) for _, r in df.iterrows()])
        areas = [0] * len(df)

        def consume(i: int, prob: np.ndarray) -> None:
            mask = prob >= e.threshold
            areas[i] = int(mask.sum())
            if out_dir is not None:
                save_mask_png(mask, output_path(out_dir, MASKS, names[i], "png"))
                if probabilities:
                    save_probability_png(prob, output_path(out_dir, PROBABILITIES, names[i], "png"))
                if i < int(e.overlays):
                    mask_overlay_grid([self.display_image(df.iloc[i])], [None], [mask], [names[i]],
                                      Path(out_dir) / "overlays" / f"{names[i]}.png")

        self.stream_masks(model, df, "predict", consume, progress=progress)
        out = pd.DataFrame({"case_id": names, "input": df[self.case_column].astype(str)})
        for col in self.id_columns:
            if col in df.columns:
                out[col] = df[col].values
        out["pred_area_px"] = areas
        out["pred_lesion"] = (np.asarray(areas) >= e.min_area).astype(int)
        if out_dir is not None:
            out["mask"] = [f"{MASKS}/{n}.png" for n in names]
            if probabilities:
                out["probabilities"] = [f"{PROBABILITIES}/{n}.png" for n in names]
        return out
