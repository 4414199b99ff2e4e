"""Boundary-based segmentation metrics beside HD95: normalised surface Dice (NSD) and average symmetric
surface distance (ASSD), both MONAI's, with :func:`medtasks.metrics.segmentation.hd95`'s conventions.

Masks are 2-D or 3-D binary arrays (bool or 0/1) of one case; ``spacing`` is the pixel / voxel size in
mm per axis (a scalar = isotropic, ``None`` = unit spacing, i.e. distances in pixels). Surfaces are
MONAI's edge pixels: the mask minus its binary erosion (face connectivity), so a one-pixel-thick mask is
all edge. Distances are euclidean from each edge pixel of one mask to the nearest edge pixel of the other.

* :func:`assd` — MONAI ``compute_average_surface_distance(symmetric=True)``: the mean of both sets of
  directed edge distances pooled together (so the longer boundary weighs more). Empty masks: MONAI
  returns ``inf`` when exactly one mask is empty and NaN when both are; here **both cases are NaN**, as
  for HD95 (a distance to nothing is undefined), so summaries average over cases with foreground in
  both masks and report how many (``n``).
* :func:`nsd` — MONAI ``compute_surface_dice(class_thresholds=[tolerance])`` without sub-voxel areas:
  the fraction of both boundaries' edge pixels that lie within ``tolerance`` of the other boundary
  (Seidlitz et al. 2022, arXiv:2111.05408), in [0, 1]. ``tolerance`` is in the unit of ``spacing``
  (mm when a spacing is given, pixels otherwise). Empty masks: **exactly one empty -> 0.0**, as MONAI
  and Metrics Reloaded (none of either boundary is matched: a missed or a spurious lesion is a total
  failure, and NaN there would hide misses from the mean, as it must for the distances); **both empty ->
  ``empty_value``**, NaN by default (MONAI's NaN: no boundary to score), or 1.0 to follow the Dice
  convention of :mod:`medtasks.metrics.segmentation` (perfect agreement on "no lesion").

Example:
    >>> a = np.zeros((8, 8), bool); a[2] = True
    >>> b = np.zeros((8, 8), bool); b[5] = True
    >>> assd(a, b), nsd(a, b, 3.0), nsd(a, b, 2.0), assd(a, b, spacing=(0.5, 1.0))
    (3.0, 1.0, 0.0, 1.5)
"""

from __future__ import annotations

import numpy as np

from medtasks.metrics.segmentation import NAN, Spacing, _quiet, _tensors

__all__ = ["assd", "nsd"]


def assd(pred: np.ndarray, true: np.ndarray, spacing: Spacing = None) -> float:
    """Average symmetric surface distance (MONAI), in mm if ``spacing`` is given, else pixels; NaN when
    either mask is empty (see the module docstring).

    Example:
        >>> t = np.zeros((10, 10), bool); t[2:6, 2:6] = True    # 12 edge px, each 1 px from p's ring
        >>> p = np.zeros((10, 10), bool); p[1:7, 1:7] = True    # 20 edge px: 16 at 1, 4 corners at sqrt(2)
        >>> round(assd(p, t), 6) == round((16 + 4 * 2 ** 0.5 + 12) / 32, 6)
        True
    """
    from monai.metrics import compute_average_surface_distance

    p, t, yp, yt, spacing = _tensors(pred, true, spacing)
    if not p.any() or not t.any():
        return NAN
    with _quiet():
        d = compute_average_surface_distance(yp, yt, include_background=True, symmetric=True, spacing=spacing)
    return float(d.reshape(-1)[0])


def nsd(pred: np.ndarray, true: np.ndarray, tolerance_mm: float, spacing: Spacing = None,
        empty_value: float | None = None) -> float:
    """Normalised surface Dice at ``tolerance_mm`` (MONAI), in [0, 1].

    Args:
        pred: binary prediction, 2-D or 3-D.
        true: binary truth, same shape.
        tolerance_mm: boundary deviation counted as correct, in the unit of ``spacing`` (pixels without one).
        spacing: pixel / voxel size in mm per axis (scalar = isotropic).
        empty_value: NSD when both masks are empty; ``None`` -> NaN. Exactly one empty -> 0.0.

    Example:
        >>> t = np.zeros((10, 10), bool); t[2:6, 2:6] = True
        >>> p = np.zeros((10, 10), bool); p[1:7, 1:7] = True
        >>> nsd(p, t, 1.0), nsd(p, t, 1.5)     # (16 + 12) / 32: the 4 corners are sqrt(2) away
        (0.875, 1.0)
    """
    from monai.metrics import compute_surface_dice

    tol = float(tolerance_mm)
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm}")
    p, t, yp, yt, spacing = _tensors(pred, true, spacing)
    if not p.any() and not t.any():
        return NAN if empty_value is None else float(empty_value)
    if not p.any() or not t.any():
        return 0.0
    with _quiet():
        d = compute_surface_dice(yp, yt, class_thresholds=[tol], include_background=True, spacing=spacing)
    return float(d.reshape(-1)[0])
