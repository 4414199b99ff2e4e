"""Lesion post-processing: drop connected components below a minimum volume, the size chosen on validation.

nnU-Net users expect a post-processing step that is *chosen on validation and reported*; here it is
the minimum lesion size of a binary lesion mask (MS lesions, coronary calcium):

* ``remove_small_lesions`` — ``skimage.morphology.remove_small_objects`` with the lesion metric's
  connectivity (the rank of :mod:`medtasks.metrics.lesions`: 2 = 18-connected in 3-D; scikit-image's
  ``connectivity`` is the same rank), so that what is removed is exactly a lesion the metric would count.
  The size is in mm^3 and converted per volume with its voxel spacing: a component is kept when
  ``voxels x voxel volume >= min_lesion_mm3``, i.e. at least ``ceil(min_lesion_mm3 / voxel volume)``
  voxels — the same threshold means the same physical size on scans of different resolution.
* ``lesion_f1_curve`` + ``choose_min_lesion_size`` — ``postprocess.min_lesion_mm3: auto`` scores every
  value of ``postprocess.candidates_mm3`` on the validation split and keeps the best. The criterion
  is the lesion F1 pooled over the validation volumes under the ISBI any-overlap rule: removing
  small components changes lesion counts (false-positive specks, missed small lesions) far more
  than voxel Dice, which small components barely move. Ties go to the smaller size (the least
  removal). The curve (F1, lesion TPR / precision, pooled Dice per candidate) and the chosen
  value go to metrics.json; the chosen value is used for the evaluation split and ``predict``.

Example:
    >>> m = np.zeros((6, 6, 6), bool); m[0:2, 0:2, 0:2] = True; m[5, 5, 5] = True    # 8 voxels + 1 voxel
    >>> int(remove_small_lesions(m, 4.0, spacing=(1.0, 1.0, 2.0)).sum())          # keep >= 2 voxels (4 mm^3)
    8
    >>> choose_min_lesion_size([{"min_lesion_mm3": 0.0, "lesion_f1": 0.5}, {"min_lesion_mm3": 5.0, "lesion_f1": 0.7},
    ...                         {"min_lesion_mm3": 10.0, "lesion_f1": 0.7}])
    5.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np
from skimage.morphology import remove_small_objects

from medtasks.config import ConfigError
from medtasks.metrics.lesions import lesion_detection, pooled_lesion_scores

__all__ = ["LesionPostprocessConfig", "SELECTION_METRIC", "min_voxels", "remove_small_lesions", "lesion_f1_curve",
           "choose_min_lesion_size", "resolve_min_lesion_size"]

SELECTION_METRIC = "lesion F1 pooled over the validation volumes, ISBI any-overlap rule (ties: the smaller size)"
Spacing = Union[float, Sequence[float]]


@dataclass
class LesionPostprocessConfig:
    """``postprocess`` section: minimum lesion size in mm^3 — ``auto`` (chosen on validation), a number, 0 = off."""

    min_lesion_mm3: Union[Literal["auto"], float] = 0.0
    candidates_mm3: list[float] = field(default_factory=lambda: [0.0, 3.0, 5.0, 10.0, 20.0, 50.0])   # auto's grid

    def validate(self) -> None:
        if self.min_lesion_mm3 != "auto" and self.min_lesion_mm3 < 0:
            raise ConfigError(f"min_lesion_mm3: expected auto, 0 (off) or a volume > 0 in mm^3, got "
                              f"{self.min_lesion_mm3}")
        if not self.candidates_mm3 or min(self.candidates_mm3) < 0:
            raise ConfigError(f"candidates_mm3: expected a non-empty list of volumes >= 0, got {self.candidates_mm3}")


def _voxel_mm3(spacing: Spacing, ndim: int) -> float:
    s = np.asarray(spacing, dtype=np.float64)
    s = np.full(ndim, float(s)) if s.ndim == 0 else s
    if s.shape != (ndim,) or (s <= 0).any():
        raise ValueError(f"spacing {tuple(s.tolist())}: expected {ndim} positive voxel sizes in mm")
    return float(np.prod(s))


def min_voxels(min_lesion_mm3: float, spacing: Spacing, ndim: int = 3) -> int:
    """Smallest voxel count of a kept lesion: ``ceil(min_lesion_mm3 / voxel volume)`` (0 = keep all).

    Example:
        >>> min_voxels(10.0, (0.8, 0.8, 1.5)), min_voxels(0.96, (0.8, 0.8, 1.5)), min_voxels(0, 1.0)
        (11, 1, 0)
    """
    if min_lesion_mm3 <= 0:
        return 0
    # the 1e-9 guards n * v == min exactly (e.g. 0.96 / 0.96 computed as 1.0000000000000002)
    return int(math.ceil(float(min_lesion_mm3) / _voxel_mm3(spacing, ndim) - 1e-9))


def remove_small_lesions(mask: np.ndarray, min_lesion_mm3: float, spacing: Spacing, connectivity: int = 2
                         ) -> np.ndarray:
    """``mask`` (bool) without the connected components smaller than ``min_lesion_mm3`` (module docstring)."""
    m = np.asarray(mask).astype(bool)
    k = min_voxels(min_lesion_mm3, spacing, m.ndim)
    if k <= 1 or not m.any():
        return m
    try:   # scikit-image >= 0.26: max_size removes components of <= max_size voxels
        return remove_small_objects(m, max_size=k - 1, connectivity=connectivity)
    except TypeError:   # older releases: min_size removes components of < min_size voxels
        return remove_small_objects(m, min_size=k, connectivity=connectivity)


def lesion_f1_curve(cases: Sequence[tuple[np.ndarray, np.ndarray, Spacing]], candidates: Sequence[float],
                    connectivity: int = 2, gate: Callable[[int, np.ndarray], np.ndarray] | None = None
                    ) -> list[dict[str, float]]:
    """Per candidate size: pooled lesion F1 / TPR / precision, lesion counts and pooled Dice over ``cases``.

    F1 is 0 when only one side has lesions (e.g. a size that removes every prediction), NaN when neither has.

    Args:
        cases: ``(pred, true, spacing)`` per validation volume (binary masks of one shape each).
        candidates: minimum sizes in mm^3 (sorted, duplicates dropped).
        connectivity: the lesion metric's rank (also the removal's).
        gate: optional ``gate(case_index, filtered_pred) -> pred`` applied after the removal (the cardiac calcium
            gate counts the voxels that survive it).
    """
    curve = []
    for c in sorted({float(v) for v in candidates}):
        n_t = n_p = n_d = n_fp = tp = size = 0
        for i, (pred, true, spacing) in enumerate(cases):
            p = remove_small_lesions(pred, c, spacing, connectivity)
            if gate is not None:
                p = np.asarray(gate(i, p), bool)
            t = np.asarray(true, bool)
            d = lesion_detection(p, t, connectivity=connectivity)
            n_t, n_p = n_t + d["n_true_lesions"], n_p + d["n_pred_lesions"]
            n_d, n_fp = n_d + d["n_detected"], n_fp + d["n_false_pos"]
            tp, size = tp + int(np.count_nonzero(p & t)), size + int(p.sum() + t.sum())
        s = pooled_lesion_scores(n_t, n_p, n_d, n_fp)
        f1 = 0.0 if (n_t == 0) != (n_p == 0) else s["f1"]   # lesions on one side only: F1 0 (NaN: neither side)
        curve.append({"min_lesion_mm3": c, "lesion_f1": f1, "ltpr": s["ltpr"], "precision": s["precision"],
                      "n_true_lesions": n_t, "n_pred_lesions": n_p, "n_false_pos": n_fp,
                      "dice": 2 * tp / size if size else float("nan")})
    return curve


def choose_min_lesion_size(curve: Sequence[dict[str, Any]], key: str = "lesion_f1") -> float:
    """The candidate with the highest finite ``key`` (ties: the smallest); 0 when none is finite."""
    scored = [(float(r[key]), float(r["min_lesion_mm3"])) for r in curve if np.isfinite(float(r[key]))]
    if not scored:
        return 0.0
    best = max(s for s, _ in scored)
    return min(c for s, c in scored if s == best)


def resolve_min_lesion_size(cfg: LesionPostprocessConfig, curve_fn: Callable[[Sequence[float]], list[dict]] | None,
                            connectivity: int, split: str = "val", chosen: float | None = None) -> dict[str, Any]:
    """The ``postprocess`` entry of metrics.json: the size used and, for ``auto``, how it was chosen.

    ``curve_fn(candidates)`` computes :func:`lesion_f1_curve` on the validation split (``None``: no validation
    volumes; then ``auto`` keeps ``chosen``, the size the trained run chose on its own validation volumes, e.g.
    in an external evaluation, or falls back to 0; ``note`` says which).
    """
    out: dict[str, Any] = {"mode": "auto" if cfg.min_lesion_mm3 == "auto" else "fixed",
                           "connectivity": int(connectivity)}
    if cfg.min_lesion_mm3 != "auto":
        return {**out, "min_lesion_mm3": float(cfg.min_lesion_mm3)}
    if curve_fn is None and chosen is not None:
        return {**out, "min_lesion_mm3": float(chosen),
                "note": "no validation volumes here: the size the trained run chose on its own validation volumes"}
    if curve_fn is None:
        return {**out, "min_lesion_mm3": 0.0, "note": f"no {split} volumes to choose on: no size filter"}
    curve = curve_fn(cfg.candidates_mm3)
    chosen = choose_min_lesion_size(curve)
    note = {} if any(np.isfinite(r["lesion_f1"]) for r in curve) else {
        "note": f"lesion F1 undefined on {split} for every candidate (no lesions): no size filter"}
    return {**out, "min_lesion_mm3": chosen, "selection_metric": SELECTION_METRIC, "split": split,
            "candidates_mm3": [float(c) for c in sorted(set(cfg.candidates_mm3))], "validation_curve": curve, **note}
