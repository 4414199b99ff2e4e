"""Metric sets of ``medtasks compare``, one per task kind, and the run record they score.

Split out of :mod:`medtasks.compare` (which loads, aligns and bootstraps) so each kind's metrics
sit in one place. A kind registers a :class:`MetricSet` subclass in :data:`COMPARE_METRICS`:
``problems`` says why a run's evaluated rows cannot be scored (missing or malformed columns),
``truth_columns`` names the columns that must agree on a shared case for a paired comparison,
``notes`` adds kind-specific caveats to the page, and ``build`` returns
``{(metric, label): metric_fn(row indices) -> float}`` closures over the run's rows, which
:mod:`medtasks.metrics.bootstrap` evaluates on resampled patients. A metric that cannot be
computed for a run raises ``ValueError``, so compare reports it as n/a instead of failing.

Example:
    >>> from medtasks.compare_metrics import COMPARE_METRICS
    >>> sorted(COMPARE_METRICS.names())
    ['binary', 'detection', 'multilabel', 'segmentation', 'segmentation_classes']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtasks.metrics.bootstrap import ResampledAUC
from medtasks.metrics.calibration import brier_score, expected_calibration_error
from medtasks.metrics.classification import rsna_weighted_log_loss
from medtasks.metrics.summary import _prf_from_counts
from medtasks.registry import Registry

__all__ = ["AlignedRun", "MetricSet", "ClassificationMetrics", "SegmentationMetrics", "COMPARE_METRICS",
           "LOWER_IS_BETTER", "OVERALL"]

OVERALL = "overall"
LOWER_IS_BETTER = frozenset({"rsna_weighted_log_loss", "ece", "brier"})

MetricKey = tuple[str, str]
MetricFn = Callable[[np.ndarray], float]
COMPARE_METRICS = Registry("compare metric set (by kind)")


@dataclass
class AlignedRun:
    """One run's evaluated rows, in the order shared by every run evaluated on the same case set.

    ``frame`` holds the rows of the evaluated split (``case_ids`` order); ``groups`` are the ids the
    bootstrap resamples (``group_column``: patient_id, or case_id when the run has none).
    ``class_weights`` and ``n_bins`` come from the reference run, so every run is scored alike.
    """

    name: str
    run_dir: Path
    task: str
    kind: str
    labels: list[str]
    synthetic: bool
    case_ids: np.ndarray
    groups: np.ndarray
    frame: pd.DataFrame
    class_weights: list[float] | None
    n_bins: int
    group_column: str = "patient_id"
    metrics: dict[str, Any] = field(default_factory=dict)

    def _columns(self, prefix: str, dtype: type) -> np.ndarray:
        return self.frame[[f"{prefix}_{lab}" for lab in self.labels]].to_numpy(dtype=dtype)

    @cached_property
    def y_true(self) -> np.ndarray:
        """(N, C) 0/1 truth of a classification run, in ``labels`` order."""
        return self._columns("true", np.int64)

    @cached_property
    def prob(self) -> np.ndarray:
        """(N, C) probabilities of a classification run."""
        return self._columns("prob", np.float64)

    @cached_property
    def pred(self) -> np.ndarray:
        """(N, C) 0/1 calls of a classification run (its own thresholds)."""
        return self._columns("pred", np.int64)


class MetricSet:
    """What compare needs from a kind; subclasses override every method (see the module docstring)."""

    rows_file = "predictions.csv"   # the run's file with one row per evaluated case that the metrics read

    @classmethod
    def problems(cls, df: pd.DataFrame, labels: Sequence[str]) -> str | None:
        """Why these evaluated rows cannot be scored, phrased to follow ``<predictions.csv>:``; None if fine."""
        return None

    @classmethod
    def truth_columns(cls, df: pd.DataFrame, labels: Sequence[str]) -> list[str]:
        """Columns holding a case's truth; a paired comparison requires them equal on every case."""
        return []

    @classmethod
    def notes(cls, run: AlignedRun) -> list[str]:
        """Caveats about this run's numbers for the page (e.g. a metric left n/a and why)."""
        return []

    @classmethod
    def build(cls, run: AlignedRun) -> dict[MetricKey, MetricFn]:
        """``{(metric, label): fn(indices) -> float}``, the same keys for every run of the kind."""
        raise NotImplementedError


@COMPARE_METRICS.register("multilabel")
@COMPARE_METRICS.register("binary")
class ClassificationMetrics(MetricSet):
    """Per label precision / recall / F1 (at the run's ``pred_<L>``) and ROC-AUC; support-weighted
    and macro F1; RSNA weighted log loss (when ``run.class_weights``); pooled ECE and Brier."""

    @classmethod
    def problems(cls, df: pd.DataFrame, labels: Sequence[str]) -> str | None:
        cols = [f"{p}_{lab}" for lab in labels for p in ("true", "prob", "pred")]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            return (f"lacks column(s) {missing}; compare needs case_id and true_/prob_/pred_<label> for labels "
                    f"{list(labels)} (as written by `medtasks run`).")
        for col in cols:
            v, is_prob = pd.to_numeric(df[col], errors="coerce"), col.startswith("prob_")
            if not (v.between(0.0, 1.0) if is_prob else v.isin((0, 1))).all():
                want = "probabilities in [0, 1]" if is_prob else "only 0/1"
                return f"column {col} must hold {want} for every evaluated case (no blanks)."
        return None

    @classmethod
    def truth_columns(cls, df: pd.DataFrame, labels: Sequence[str]) -> list[str]:
        return [f"true_{lab}" for lab in labels]

    @classmethod
    def build(cls, run: AlignedRun) -> dict[MetricKey, MetricFn]:
        yt, yp, n = run.y_true, run.prob, run.y_true.shape[0]
        tp_rows = ((yt == 1) & (run.pred == 1)).astype(np.float64)
        fp_rows = ((yt == 0) & (run.pred == 1)).astype(np.float64)
        fn_rows = ((yt == 1) & (run.pred == 0)).astype(np.float64)

        def counts(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            w = np.bincount(idx, minlength=n).astype(np.float64)
            return w @ tp_rows, w @ fp_rows, w @ fn_rows

        def prf(k: int, j: int | None, average: str = "macro") -> MetricFn:
            cols = slice(None) if j is None else slice(j, j + 1)
            return lambda idx: _prf_from_counts(*(c[cols] for c in counts(idx)), average)[k]

        fns: dict[MetricKey, MetricFn] = {}
        for j, lab in enumerate(run.labels):
            for k, name in enumerate(("precision", "recall", "f1")):
                fns[(name, lab)] = prf(k, j)
            fns[("roc_auc", lab)] = ResampledAUC(yt[:, j], yp[:, j])
        if len(run.labels) > 1:
            fns[("weighted_f1", OVERALL)] = prf(2, None, "weighted")
            fns[("macro_f1", OVERALL)] = prf(2, None, "macro")
        if run.class_weights is not None:
            weights = run.class_weights
            fns[("rsna_weighted_log_loss", OVERALL)] = lambda idx: rsna_weighted_log_loss(yt[idx], yp[idx], weights)
        fns[("ece", OVERALL)] = lambda idx: expected_calibration_error(yt[idx], yp[idx], n_bins=run.n_bins)
        fns[("brier", OVERALL)] = lambda idx: brier_score(yt[idx], yp[idx])
        return fns


SEG_COUNTS = ("tp", "fp", "fn")


def _overlap(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, metric: str) -> np.ndarray:
    """Dice ``2tp / (2tp + fp + fn)`` or IoU ``tp / (tp + fp + fn)``; 1 where both masks are empty
    (the convention of :func:`medtasks.metrics.segmentation.metrics_from_counts`)."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    k = 2.0 if metric == "dice" else 1.0
    den = k * tp + fp + fn
    return np.where(den > 0, k * tp / np.where(den > 0, den, 1.0), 1.0)


@COMPARE_METRICS.register("segmentation")
class SegmentationMetrics(MetricSet):
    """Binary segmentation from the per-case ``predictions.csv`` of :mod:`medtasks.tasks.kinds.segmentation`.

    * ``per_image_dice`` / ``per_image_iou``: mean of the run's per-case ``dice`` / ``iou`` over cases
      whose truth has a lesion (an empty-truth case has no defined Dice), as the run's metrics.json;
    * ``pooled_dice`` / ``pooled_iou``: ``2 sum tp / (2 sum tp + sum fp + sum fn)`` (IoU:
      ``sum tp / (sum tp + sum fp + sum fn)``) over every case, from the tp/fp/fn pixel counts;
    * ``per_patient_dice`` / ``per_patient_iou``: counts summed within a patient, then the mean over
      patients (a patient with both masks empty scores 1).

    A metric whose columns the file lacks (tp/fp/fn, iou, patient_id) is n/a, with a note.
    """

    @staticmethod
    def _lesion(df: pd.DataFrame) -> pd.Series:
        col = "true_lesion" if "true_lesion" in df.columns else "n_true"
        return pd.to_numeric(df[col], errors="coerce") > 0

    @classmethod
    def problems(cls, df: pd.DataFrame, labels: Sequence[str]) -> str | None:
        if "dice" not in df.columns or not {"true_lesion", "n_true"} & set(df.columns):
            layout = (" This file has per-class dice_<class> columns (a multi-class layout such as cardiac_seg's): "
                      "its metrics.json must say layout: cardiac to be scored per class."
                      if any(c.startswith("dice_") for c in df.columns) else "")
            return ("lacks column dice or true_lesion/n_true; compare's segmentation metrics need case_id, dice, "
                    "true_lesion (or n_true) and, for pooled and per-patient Dice, tp/fp/fn pixel counts, as "
                    f"written by medtasks.tasks.kinds.segmentation.{layout}")
        lesion = cls._lesion(df)
        for col in ("dice", "iou"):
            if col in df.columns and not pd.to_numeric(df[col], errors="coerce")[lesion].between(0.0, 1.0).all():
                return f"column {col} must hold values in [0, 1] for every case with a truth lesion (no blanks)."
        for col in SEG_COUNTS:
            if col in df.columns:
                v = pd.to_numeric(df[col], errors="coerce")
                if not ((v >= 0) & (v == v.round())).all():
                    return f"column {col} must hold non-negative pixel counts for every evaluated case (no blanks)."
        return None

    @classmethod
    def truth_columns(cls, df: pd.DataFrame, labels: Sequence[str]) -> list[str]:
        return ["n_true"] if "n_true" in df.columns else ["true_lesion"]

    @classmethod
    def notes(cls, run: AlignedRun) -> list[str]:
        out = []
        if not set(SEG_COUNTS) <= set(run.frame.columns):
            out.append(f"{run.name}: predictions.csv has no tp/fp/fn pixel counts, so its pooled and per-patient "
                       "Dice/IoU are n/a; re-evaluate the run with the current medtasks to get them.")
        elif run.group_column != "patient_id":
            out.append(f"{run.name}: no patient_id in predictions.csv, so its per-patient Dice/IoU are n/a.")
        return out

    @classmethod
    def build(cls, run: AlignedRun) -> dict[MetricKey, MetricFn]:
        df, n = run.frame, len(run.frame)
        lesion = cls._lesion(df).to_numpy(dtype=bool)
        has_counts = set(SEG_COUNTS) <= set(df.columns)
        counts = df[list(SEG_COUNTS)].to_numpy(dtype=np.float64) if has_counts else None
        per_case = {m: df[m].to_numpy(dtype=np.float64) if m in df.columns else
                    (_overlap(*counts.T, m) if counts is not None else None) for m in ("dice", "iou")}
        by_patient = has_counts and run.group_column == "patient_id"
        if by_patient:
            _, ginv = np.unique(run.groups, return_inverse=True)
            ginv = ginv.reshape(-1)
            size = np.bincount(ginv).astype(np.float64)
            sums = [np.bincount(ginv, weights=counts[:, k]) for k in range(len(SEG_COUNTS))]

        def per_image(metric: str) -> MetricFn:
            v = per_case[metric]

            def fn(idx: np.ndarray) -> float:
                if v is None:
                    raise ValueError(f"no {metric} column and no tp/fp/fn counts")
                sel = idx[lesion[idx]]
                if not sel.size:
                    raise ValueError("no case with a truth lesion in this sample")
                return float(v[sel].mean())

            return fn

        def pooled(metric: str) -> MetricFn:
            def fn(idx: np.ndarray) -> float:
                if counts is None:
                    raise ValueError("no tp/fp/fn columns")
                w = np.bincount(idx, minlength=n).astype(np.float64)
                return float(_overlap(*(w @ counts), metric))

            return fn

        def per_patient(metric: str) -> MetricFn:
            score = _overlap(*sums, metric) if by_patient else None

            def fn(idx: np.ndarray) -> float:
                if score is None:
                    raise ValueError("per-patient metrics need tp/fp/fn counts and patient_id")
                # A patient drawn k times contributes all its rows k times: its multiplicity is k.
                mult = np.bincount(ginv, weights=np.bincount(idx, minlength=n), minlength=size.size) / size
                return float(mult @ score / mult.sum())

            return fn

        fns: dict[MetricKey, MetricFn] = {}
        for m in ("dice", "iou"):
            fns[(f"pooled_{m}", OVERALL)] = pooled(m)
            fns[(f"per_image_{m}", OVERALL)] = per_image(m)
            fns[(f"per_patient_{m}", OVERALL)] = per_patient(m)
        return fns


@COMPARE_METRICS.register("segmentation_classes")
class ClassSegmentationMetrics(MetricSet):
    """Multi-class segmentation scored per class, from a per-case ``predictions.csv`` with ``dice_<class>``
    columns (cardiac_seg's layout; metrics.json ``layout: cardiac``): for each class the mean Dice over the
    cases where the class is in truth or prediction (a case where it is in neither holds NaN and is left out,
    as the run's own metrics.json), and, with ``gate_open`` / ``has_calcium`` columns, the gate's accuracy."""

    @staticmethod
    def classes(df: pd.DataFrame) -> list[str]:
        return [c.removeprefix("dice_") for c in df.columns if c.startswith("dice_")]

    @classmethod
    def problems(cls, df: pd.DataFrame, labels: Sequence[str]) -> str | None:
        if not cls.classes(df):
            return "lacks dice_<class> columns; the per-class segmentation metrics need them (cardiac_seg's layout)."
        for c in cls.classes(df):
            v = pd.to_numeric(df[f"dice_{c}"], errors="coerce")
            if not v.dropna().between(0.0, 1.0).all():
                return f"column dice_{c} must hold values in [0, 1] (or be empty where the class is absent)."
        return None

    @classmethod
    def truth_columns(cls, df: pd.DataFrame, labels: Sequence[str]) -> list[str]:
        return ["has_calcium"] if "has_calcium" in df.columns else []

    @classmethod
    def build(cls, run: AlignedRun) -> dict[MetricKey, MetricFn]:
        df = run.frame

        def mean_dice(values: np.ndarray) -> MetricFn:
            def fn(idx: np.ndarray) -> float:
                v = values[idx]
                v = v[~np.isnan(v)]
                if not v.size:
                    raise ValueError("the class is in no case of this sample")
                return float(v.mean())

            return fn

        fns: dict[MetricKey, MetricFn] = {("dice", c): mean_dice(pd.to_numeric(df[f"dice_{c}"], errors="coerce")
                                                                  .to_numpy(dtype=np.float64))
                                          for c in cls.classes(df)}
        if {"gate_open", "has_calcium"} <= set(df.columns):
            hit = (df["gate_open"].astype(str).str.lower().isin(("true", "1")).to_numpy(dtype=int)
                   == df["has_calcium"].to_numpy(dtype=int)).astype(np.float64)
            fns[("gate_accuracy", OVERALL)] = lambda idx: float(hit[idx].mean())
        return fns


@COMPARE_METRICS.register("detection")
class DetectionMetrics(MetricSet):
    """Box detection from a run's ``image_matches.csv`` (one row per evaluated image: ``n_true``, ``max_conf``, the
    detections' scores and true-positive flags at IoU 0.50:0.95 as JSON; written by the detection kind): AP50 and
    mAP50-95 with ultralytics' own ``compute_ap`` (the run's own metric, so a group holding every image gives the
    run's figure), and the image-level call (a slice is positive when it has a box at ``conf`` or above:
    metrics.json's ``conf``) as precision / recall / F1, with the ROC-AUC of the slice's highest confidence."""

    rows_file = "image_matches.csv"

    @classmethod
    def problems(cls, df: pd.DataFrame, labels: Sequence[str]) -> str | None:
        need = {"n_true", "max_conf", "det_scores", "det_tp"}
        if not need <= set(df.columns):
            return (f"lacks column(s) {sorted(need - set(df.columns))}: the detection metrics read image_matches.csv "
                    "as written by the detection kind's evaluation (runs evaluated before it existed have none; "
                    "re-evaluate them with `medtasks evaluate`).")
        return None

    @classmethod
    def truth_columns(cls, df: pd.DataFrame, labels: Sequence[str]) -> list[str]:
        return ["n_true"]

    @classmethod
    def build(cls, run: AlignedRun) -> dict[MetricKey, MetricFn]:
        import json

        from medtasks.engine.yolo import ultralytics_compute_ap
        from medtasks.metrics.detection import IOU_THRESHOLDS, ap_fn

        df = run.frame
        matches = []
        for scores, tp, n in zip(df["det_scores"], df["det_tp"], df["n_true"]):
            s = np.asarray(json.loads(scores), dtype=np.float64)
            t = (np.asarray(json.loads(tp), dtype=bool).reshape(len(s), -1) if len(s)
                 else np.zeros((0, len(IOU_THRESHOLDS)), bool))
            matches.append({"scores": s, "tp": t, "n_true": int(n)})
        compute_ap = ultralytics_compute_ap()
        conf = float(run.metrics.get("conf", 0.25))
        y = (df["n_true"].to_numpy(dtype=np.int64) > 0).astype(np.int64)
        score = df["max_conf"].to_numpy(dtype=np.float64)
        call = (score >= conf).astype(np.int64)
        tp, fp, fn = ((y == 1) & (call == 1)).astype(float), ((y == 0) & (call == 1)).astype(float), \
            ((y == 1) & (call == 0)).astype(float)

        def prf(k: int) -> MetricFn:
            return lambda idx: _prf_from_counts(*(np.array([np.bincount(idx, minlength=len(df)) @ c])
                                                  for c in (tp, fp, fn)), "macro")[k]

        ap50, ap_all = ap_fn(matches, 0, compute_ap=compute_ap), ap_fn(matches, None, compute_ap=compute_ap)

        def defined(fn: MetricFn) -> MetricFn:
            def wrapped(idx: np.ndarray) -> float:
                v = fn(idx)
                if v != v:
                    raise ValueError("no truth box in this sample")
                return v
            return wrapped

        return {("ap50", OVERALL): defined(ap50), ("map50_95", OVERALL): defined(ap_all),
                ("image_precision", OVERALL): prf(0), ("image_recall", OVERALL): prf(1),
                ("image_f1", OVERALL): prf(2), ("image_roc_auc", OVERALL): ResampledAUC(y, score)}
