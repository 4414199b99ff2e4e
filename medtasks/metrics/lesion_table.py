"""One row per lesion of one case — true lesions and predicted lesions — for the run's ``lesions.csv``.

Components come from :func:`~medtasks.metrics.lesions.match_lesions` (the same labelling and
connectivity as the lesion metrics, so a row's status agrees with the counts in metrics.json);
volume and centroid from ``skimage.measure.regionprops_table``. Columns:

* ``case_id, kind`` (``true`` | ``pred``), ``lesion_id`` (the component's label within its own mask);
* ``voxels``, ``volume_mm3`` (voxels x voxel volume; NaN without spacing);
* ``centroid_i, centroid_j, centroid_k`` (voxel indices of the array as stored) and
  ``centroid_x_mm, centroid_y_mm, centroid_z_mm`` (the affine applied to them; NaN without one);
* ``best_iou``, ``best_match_id``: the single component of the other mask with the highest IoU (0 / 0: none);
* ``status_overlap``, ``status_iou``: for a true lesion ``detected`` | ``missed``, for a predicted one
  ``true_positive`` | ``false_positive``, under each matching rule (:data:`~medtasks.metrics.lesions.RULES`).

Example:
    >>> from medtasks.metrics.lesions import match_lesions
    >>> t = np.zeros((4, 4, 4), bool); t[0:2, 0:2, 0:2] = True
    >>> p = np.zeros_like(t); p[0, 0, 0] = True
    >>> tab = lesion_table(match_lesions(p, t), "c1", spacing=(1.0, 1.0, 2.0))
    >>> tab[["kind", "voxels", "volume_mm3", "status_overlap", "status_iou"]].values.tolist()
    [['true', 8, 16.0, 'detected', 'missed'], ['pred', 1, 2.0, 'true_positive', 'false_positive']]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from skimage.measure import regionprops_table

from medtasks.metrics.lesions import RULES, LesionMatch

__all__ = ["LESION_COLUMNS", "lesion_table"]

LESION_COLUMNS = ("case_id", "kind", "lesion_id", "voxels", "volume_mm3", "centroid_i", "centroid_j", "centroid_k",
                  "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "best_iou", "best_match_id",
                  *(f"status_{r}" for r in RULES))
_STATUS = {"true": ("detected", "missed"), "pred": ("true_positive", "false_positive")}


def _rows(labels: np.ndarray, kind: str, match: LesionMatch, voxel_mm3: float, affine: np.ndarray | None
          ) -> pd.DataFrame:
    n = match.n_true if kind == "true" else match.n_pred
    if n == 0:
        return pd.DataFrame(columns=list(LESION_COLUMNS[1:]))
    props = regionprops_table(labels, properties=("label", "area", "centroid"))
    ndim = labels.ndim
    cent = np.stack([props[f"centroid-{a}"] for a in range(ndim)], axis=1)
    cent3 = np.pad(cent, ((0, 0), (0, 3 - ndim))) if ndim < 3 else cent
    out = pd.DataFrame({"kind": kind, "lesion_id": props["label"].astype(int), "voxels": props["area"].astype(int)})
    out["volume_mm3"] = out["voxels"] * voxel_mm3
    for a, name in enumerate("ijk"):
        out[f"centroid_{name}"] = cent3[:, a]
    world = (cent3 @ affine[:3, :3].T + affine[:3, 3]) if affine is not None else np.full((n, 3), np.nan)
    for a, name in enumerate("xyz"):
        out[f"centroid_{name}_mm"] = world[:, a]
    idx = out["lesion_id"].to_numpy() - 1
    best_iou, best = (match.true_best_iou, match.true_best) if kind == "true" else (match.pred_best_iou,
                                                                                     match.pred_best)
    out["best_iou"], out["best_match_id"] = best_iou[idx], best[idx].astype(int)
    yes, no = _STATUS[kind]
    for r in RULES:
        hit = match.true_detected(r) if kind == "true" else match.pred_matched(r)
        out[f"status_{r}"] = np.where(hit[idx], yes, no)
    return out


def lesion_table(match: LesionMatch, case_id: Any, spacing: float | Sequence[float] | None = None,
                 affine: np.ndarray | None = None) -> pd.DataFrame:
    """The case's true lesions, then its predicted lesions, one row each (columns: :data:`LESION_COLUMNS`).

    Args:
        match: :func:`~medtasks.metrics.lesions.match_lesions` of the case's prediction and truth.
        case_id: written in every row.
        spacing: voxel size in mm (one value or one per axis) for ``volume_mm3``.
        affine: 4x4 voxel -> world (mm) matrix (e.g. the NIfTI's) for the ``_mm`` centroids; 2-D masks are
            treated as the first slice of a volume (k = 0).
    """
    ndim = match.true_labels.ndim
    if spacing is None:
        voxel_mm3 = float("nan")
    else:
        s = np.asarray(spacing, dtype=np.float64)
        s = np.full(ndim, float(s)) if s.ndim == 0 else s
        if s.shape != (ndim,):
            raise ValueError(f"spacing has {s.size} values for a {ndim}-D mask")
        voxel_mm3 = float(np.prod(s))
    aff = None if affine is None else np.asarray(affine, dtype=np.float64)
    if aff is not None and aff.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {aff.shape}")
    parts = [_rows(match.true_labels, "true", match, voxel_mm3, aff),
             _rows(match.pred_labels, "pred", match, voxel_mm3, aff)]
    out = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else parts[0]
    out.insert(0, "case_id", case_id)
    return out[list(LESION_COLUMNS)]
