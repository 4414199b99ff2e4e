"""Binary / multi-class segmentation metrics, task-agnostic.

Masks are numpy bool or 0/1 arrays of any dimensionality (2-D slices, 3-D
volumes); a "case" is one such array. Spacing, where accepted, is the voxel
size in mm per axis (a scalar means isotropic).

Conventions (Metrics Reloaded, ISBI 2015):

* Empty cases: when prediction and truth are both empty, Dice, IoU,
  sensitivity and PPV take ``empty_value`` (default 1.0, perfect agreement;
  ``None`` gives NaN so callers can exclude the case). Truth empty but
  prediction not: Dice = IoU = PPV = 0 and sensitivity is NaN (0/0).
  Prediction empty but truth not: Dice = IoU = sensitivity = 0, PPV NaN.
  Any other 0/0 ratio is NaN; summaries ignore NaN and report ``n``.
* HD95 uses MONAI ``compute_hausdorff_distance(percentile=95)`` (symmetric,
  euclidean, on mask edges); it is NaN when either mask is empty, so it is
  computed only on cases where both have foreground and the caller reports
  how many (``n`` in the summaries). NSD and ASSD, with the same spacing convention, are in
  :mod:`medtasks.metrics.surface`.
* Lesion-wise detection, volumes and the ISBI composite live in :mod:`medtasks.metrics.lesions`.
* Lesions are connected components (``scipy.ndimage.label``); connectivity is
  the rank of ``generate_binary_structure``: 1 = faces (6 in 3-D, 4 in 2-D),
  2 = faces + edges (18 in 3-D, the ISBI 2015 rule; 8 in 2-D), 3 = 26 in 3-D.
  LFPR = false-positive predicted lesions / predicted lesions (ISBI).
* ``pooled`` sums voxel counts over all cases before taking ratios (what the
  PHE source notes report); ``per_case`` averages per-case values;
  ``per_group`` sums counts within a patient, then averages over patients.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd

__all__ = [
    "confusion_counts", "metrics_from_counts", "overlap_metrics", "pooled_and_per_case",
    "hd95",
    "pixel_confusion_matrix", "seg_to_classification", "per_class_dice",
    "case_metric_fn", "pooled_metric_fn",
]

METRICS = ("dice", "iou", "sens", "spec", "ppv")
NAN = float("nan")
Masks = Sequence[np.ndarray] | np.ndarray
Spacing = float | Sequence[float] | None


def _mask(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != bool:
        if a.size and not np.isin(a, (0, 1)).all():
            raise ValueError(f"{name} must be a binary mask (bool or 0/1 values)")
        a = a.astype(bool)
    return a


def _pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = _mask(pred, "pred"), _mask(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch: pred {p.shape} vs true {t.shape}")
    return p, t


def _cases(preds: Masks, trues: Masks) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(preds) != len(trues):
        raise ValueError(f"number of cases differs: {len(preds)} preds vs {len(trues)} trues")
    return [_pair(p, t) for p, t in zip(preds, trues)]


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else NAN


def confusion_counts(pred: np.ndarray, true: np.ndarray) -> dict[str, int]:
    """Voxel counts ``{"tp", "fp", "fn", "tn"}`` of one binary case.

    Example:
        >>> confusion_counts(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
        {'tp': 1, 'fp': 1, 'fn': 1, 'tn': 1}
    """
    p, t = _pair(pred, true)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(p.size) - tp - fp - fn}


def metrics_from_counts(counts: dict, empty_value: float | None = 1.0) -> dict[str, float]:
    """Dice, IoU, sensitivity, specificity, PPV from ``tp/fp/fn/tn`` counts.

    Keys are ``dice, iou, sens`` (recall), ``spec, ppv`` (precision); the
    empty-case convention is the module's (see its docstring).

    Example:
        >>> metrics_from_counts({"tp": 2, "fp": 1, "fn": 1, "tn": 4})["dice"]
        0.6666666666666666
    """
    tp, fp, fn, tn = (int(counts[k]) for k in ("tp", "fp", "fn", "tn"))
    spec = _ratio(tn, tn + fp)
    if tp + fp + fn == 0:
        e = NAN if empty_value is None else float(empty_value)
        return {"dice": e, "iou": e, "sens": e, "spec": spec, "ppv": e}
    dice, iou = 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)
    return {"dice": dice, "iou": iou, "sens": _ratio(tp, tp + fn), "spec": spec,
            "ppv": _ratio(tp, tp + fp)}


def overlap_metrics(pred: np.ndarray, true: np.ndarray, empty_value: float | None = 1.0) -> dict:
    """Overlap metrics of one case: ``dice, iou, sens, spec, ppv``.

    Args:
        pred: binary prediction, any shape.
        true: binary ground truth, same shape.
        empty_value: Dice/IoU/sens/PPV when both masks are empty; ``None`` -> NaN.

    Example:
        >>> a = np.zeros((4, 4), bool); a[:2, :2] = True   # 4 px
        >>> b = np.zeros((4, 4), bool); b[:2, :3] = True   # 6 px, 4 shared
        >>> overlap_metrics(a, b)["dice"]                   # 2*4 / (4+6)
        0.8
    """
    return metrics_from_counts(confusion_counts(pred, true), empty_value)


def _summary(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"mean": NAN, "median": NAN, "std": NAN, "n": 0}
    std = float(np.std(v, ddof=1)) if v.size > 1 else NAN
    return {"mean": float(v.mean()), "median": float(np.median(v)), "std": std, "n": int(v.size)}


def pooled_and_per_case(
    preds: Masks, trues: Masks, groups: Sequence | np.ndarray | None = None,
    empty_value: float | None = 1.0, with_hd95: bool = False, spacing: Spacing = None,
) -> dict:
    """Pooled, per-case and (optionally) per-group aggregates of overlap metrics.

    Args:
        preds: list of binary masks, or a stacked array whose first axis is the case.
        trues: the matching ground truths.
        groups: group id (e.g. patient) per case; enables ``per_group``.
        empty_value: see :func:`overlap_metrics`.
        with_hd95: also compute :func:`hd95` per case (column ``hd95``).
        spacing: voxel spacing passed to :func:`hd95`.

    Returns:
        ``{"pooled": {metric: value, tp, fp, fn, tn}, "per_case": {metric:
        {mean, median, std, n}}, "per_group": same or None, "n_cases",
        "n_groups", "table": DataFrame}``. ``table`` has one row per case
        (index ``case``) with ``group, dice, iou, sens, spec, ppv, n_true,
        n_pred, tp, fp, fn, tn`` (and ``hd95``). ``std`` is the sample std
        (ddof=1); ``n`` counts non-NaN values.

    Example:
        >>> t = np.zeros((2, 4, 4), bool); t[:, :2, :2] = True
        >>> pooled_and_per_case(t, t)["pooled"]["dice"]
        1.0
    """
    pairs = _cases(preds, trues)
    if not pairs:
        raise ValueError("no cases given")
    if groups is not None and len(groups) != len(pairs):
        raise ValueError(f"groups has {len(groups)} entries for {len(pairs)} cases")
    rows = []
    for i, (p, t) in enumerate(pairs):
        c = confusion_counts(p, t)
        row = {"case": i, "group": None if groups is None else groups[i]}
        row.update(metrics_from_counts(c, empty_value))
        row.update(n_true=c["tp"] + c["fn"], n_pred=c["tp"] + c["fp"], **c)
        if with_hd95:
            row["hd95"] = hd95(p, t, spacing)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("case")
    cols = [*METRICS, "hd95"] if with_hd95 else list(METRICS)
    totals = {k: int(table[k].sum()) for k in ("tp", "fp", "fn", "tn")}
    out = {
        "pooled": {**metrics_from_counts(totals, empty_value), **totals},
        "per_case": {m: _summary(table[m].to_numpy()) for m in cols},
        "per_group": None, "n_cases": len(pairs), "n_groups": None, "table": table,
    }
    if groups is not None:
        summed = table.groupby("group", sort=True)[["tp", "fp", "fn", "tn"]].sum()
        rows = [metrics_from_counts(r, empty_value) for r in summed.to_dict("records")]
        per_group = pd.DataFrame(rows)
        out["per_group"] = {m: _summary(per_group[m].to_numpy()) for m in METRICS}
        out["n_groups"] = len(summed)
    return out


def _tensors(pred: np.ndarray, true: np.ndarray, spacing: Spacing):
    """Validated masks as MONAI's one-hot, batch-first ``(1, 1, *spatial)`` float tensors, plus the spacing."""
    import torch

    p, t = _pair(pred, true)
    if p.ndim not in (2, 3):
        raise ValueError(f"surface metrics take 2-D or 3-D masks, got shape {p.shape}")
    if spacing is not None:
        if np.isscalar(spacing):
            spacing = float(spacing)
        else:
            spacing = [float(s) for s in spacing]
            if len(spacing) != p.ndim:
                raise ValueError(f"spacing has {len(spacing)} values for a {p.ndim}-D mask {p.shape}")
    yp, yt = (torch.from_numpy(m[None, None].astype(np.float32)) for m in (p, t))
    return p, t, yp, yt, spacing


@contextmanager
def _quiet() -> Iterator[None]:
    """MONAI 1.5+ warns about its own deprecated ``always_return_as_numpy`` on every call, and about
    empty masks, which are handled before MONAI is called; both are noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*always_return_as_numpy", FutureWarning)
        warnings.filterwarnings("ignore", ".*is all 0, this may result in nan/inf distance", UserWarning)
        yield


def hd95(
    pred: np.ndarray, true: np.ndarray, spacing: Spacing = None, percentile: float = 95.0
) -> float:
    """95th-percentile symmetric Hausdorff distance (MONAI), in mm if ``spacing`` is given.

    NaN when either mask is empty (the distance is undefined): report it over
    cases with foreground in both and say how many.

    Example:
        >>> a = np.zeros((8, 8), bool); a[2] = True
        >>> b = np.zeros((8, 8), bool); b[5] = True
        >>> hd95(a, b), hd95(a, b, spacing=(2.0, 1.0))
        (3.0, 6.0)
    """
    from monai.metrics import compute_hausdorff_distance

    p, t, yp, yt, spacing = _tensors(pred, true, spacing)
    if not p.any() or not t.any():
        return NAN
    with _quiet():
        d = compute_hausdorff_distance(yp, yt, include_background=True, percentile=percentile, spacing=spacing)
    return float(d.reshape(-1)[0])


def pixel_confusion_matrix(preds: Masks, trues: Masks) -> np.ndarray:
    """Pooled 2x2 voxel confusion matrix ``[[tn, fp], [fn, tp]]`` (sklearn layout).

    Example:
        >>> pixel_confusion_matrix([np.array([1, 0])], [np.array([1, 1])]).tolist()
        [[0, 0], [1, 1]]
    """
    cm = np.zeros((2, 2), dtype=np.int64)
    for p, t in _cases(preds, trues):
        c = confusion_counts(p, t)
        cm += np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]], dtype=np.int64)
    return cm


def seg_to_classification(pred_masks: Masks, min_area: int) -> np.ndarray:
    """Case-level positive call: predicted mask has >= ``min_area`` foreground pixels.

    Example:
        >>> m = np.zeros((2, 4, 4), bool); m[0, :2, :2] = True
        >>> seg_to_classification(m, min_area=4).tolist()
        [True, False]
    """
    if int(min_area) < 1:
        raise ValueError(f"min_area must be >= 1 pixel, got {min_area}")
    areas = [np.count_nonzero(_mask(m, "pred_masks")) for m in pred_masks]
    return np.asarray(areas, dtype=np.int64) >= int(min_area)


def per_class_dice(
    pred_labels: np.ndarray, true_labels: np.ndarray, classes: Sequence[int],
    empty_value: float | None = 1.0,
) -> dict[int, float]:
    """Dice of each label of integer label maps, one-vs-rest, with the empty convention.

    Example:
        >>> t = np.array([0, 1, 1, 2]); p = np.array([0, 1, 2, 2])
        >>> per_class_dice(p, t, classes=[1, 2, 3])
        {1: 0.6666666666666666, 2: 0.6666666666666666, 3: 1.0}
    """
    p, t = np.asarray(pred_labels), np.asarray(true_labels)
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch: pred_labels {p.shape} vs true_labels {t.shape}")
    return {int(c): overlap_metrics(p == c, t == c, empty_value)["dice"] for c in classes}


def case_metric_fn(per_case_df: pd.DataFrame, column: str) -> Callable[[np.ndarray], float]:
    """``idx -> mean of column over those rows`` (row positions, NaN ignored), for bootstrap_ci.

    Pair with the table's ``group`` column to resample by patient.

    Example:
        >>> from medtasks.metrics.bootstrap import bootstrap_ci
        >>> df = pd.DataFrame({"dice": [0.5, 0.7, 0.9, 0.6], "group": [1, 1, 2, 2]})
        >>> bootstrap_ci(case_metric_fn(df, "dice"), df["group"].to_numpy(), n_boot=50)["value"]
        0.675
    """
    if column not in per_case_df.columns:
        raise KeyError(f"column {column!r} not in table; available: {list(per_case_df.columns)}")
    v = per_case_df[column].to_numpy(dtype=np.float64)

    def fn(idx: np.ndarray) -> float:
        s = v[np.asarray(idx, dtype=np.int64)]
        s = s[~np.isnan(s)]
        return float(s.mean()) if s.size else NAN

    return fn


def pooled_metric_fn(
    per_case_df: pd.DataFrame, metric: str, empty_value: float | None = 1.0
) -> Callable[[np.ndarray], float]:
    """``idx -> pooled metric`` (counts summed over those rows, then the ratio), for bootstrap_ci.

    Example:
        >>> df = pd.DataFrame({"tp": [1, 3], "fp": [1, 0], "fn": [0, 1], "tn": [5, 5]})
        >>> pooled_metric_fn(df, "dice")(np.array([0, 1]))   # 2*4 / (8+1+1)
        0.8
    """
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; choose from {METRICS}")
    c = per_case_df[["tp", "fp", "fn", "tn"]].to_numpy(dtype=np.int64)

    def fn(idx: np.ndarray) -> float:
        tot = c[np.asarray(idx, dtype=np.int64)].sum(axis=0)
        return metrics_from_counts(dict(zip(("tp", "fp", "fn", "tn"), tot)), empty_value)[metric]

    return fn
