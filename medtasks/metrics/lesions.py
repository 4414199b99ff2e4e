"""Lesion-wise segmentation metrics: detection of connected components, lesion volumes, the ISBI 2015 score.

Conventions as in :mod:`medtasks.metrics.segmentation` (whose mask checks this module uses):
lesions are connected components of ``scipy.ndimage.label`` with the connectivity rank of
``generate_binary_structure`` (2 = 18-connectivity in 3-D, the ISBI 2015 rule); a true lesion is
detected on any voxel overlap; LFPR = false-positive predicted lesions / predicted lesions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medtasks.metrics.segmentation import NAN, Spacing, _mask, _pair, _ratio

__all__ = ["lesion_detection", "lesion_volume", "volume_correlation", "isbi_score", "pooled_lesion_scores"]


def _components(mask: np.ndarray, connectivity: int, min_size: int) -> tuple[np.ndarray, int]:
    if not 1 <= int(connectivity) <= mask.ndim:
        raise ValueError(f"connectivity must be in 1..{mask.ndim} for a {mask.ndim}-D mask")
    struct = ndimage.generate_binary_structure(mask.ndim, int(connectivity))
    labels, n = ndimage.label(mask, structure=struct)
    if min_size > 1 and n:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= min_size
        keep[0] = False
        lut = np.zeros(sizes.shape[0], dtype=labels.dtype)
        n = int(keep.sum())
        lut[keep] = np.arange(1, n + 1, dtype=labels.dtype)
        labels = lut[labels]
    return labels, int(n)


def lesion_detection(
    pred: np.ndarray, true: np.ndarray, connectivity: int = 2, min_size: int = 0
) -> dict[str, float]:
    """Lesion-wise detection: connected components matched on any overlap.

    A true lesion is detected when any of its voxels is predicted; a predicted
    lesion is a false positive when it touches no true lesion. Components
    smaller than ``min_size`` voxels are dropped from both masks first.

    Args:
        pred, true: binary masks of the same shape (2-D or 3-D).
        connectivity: rank for ``generate_binary_structure``; 2 = 18-connected
            in 3-D (ISBI 2015 default), 8-connected in 2-D.
        min_size: smallest component kept, in voxels (0/1 keep all).

    Returns:
        ``n_true_lesions, n_pred_lesions, n_detected`` (true lesions hit),
        ``n_false_pos`` (predicted lesions hitting nothing), ``ltpr`` =
        n_detected / n_true, ``lfpr`` = n_false_pos / n_pred (ISBI),
        ``precision`` = 1 - lfpr, ``f1`` = harmonic mean of precision and
        ltpr. Ratios with a zero denominator are NaN; ``f1`` is 0 when exactly
        one side has lesions and NaN when neither does.

    Example:
        >>> t = np.zeros((1, 6, 6), bool); t[0, 0, 0] = t[0, 5, 5] = True
        >>> p = np.zeros_like(t); p[0, 0, 0] = p[0, 3, 3] = True
        >>> r = lesion_detection(p, t)
        >>> r["ltpr"], r["lfpr"], r["f1"]
        (0.5, 0.5, 0.5)
    """
    p, t = _pair(pred, true)
    lp, n_p = _components(p, connectivity, min_size)
    lt, n_t = _components(t, connectivity, min_size)
    n_det = int(np.unique(lt[(lt > 0) & (lp > 0)]).size)
    n_hit = int(np.unique(lp[(lp > 0) & (lt > 0)]).size)
    ltpr, lfpr = _ratio(n_det, n_t), _ratio(n_p - n_hit, n_p)
    prec = _ratio(n_hit, n_p)
    if n_t == 0 and n_p == 0:
        f1 = NAN
    elif n_t == 0 or n_p == 0 or prec + ltpr == 0:
        f1 = 0.0
    else:
        f1 = 2 * prec * ltpr / (prec + ltpr)
    return {
        "n_true_lesions": n_t, "n_pred_lesions": n_p, "n_detected": n_det,
        "n_false_pos": n_p - n_hit, "ltpr": ltpr, "lfpr": lfpr, "precision": prec, "f1": f1,
    }


def lesion_volume(mask: np.ndarray, spacing: Spacing = None) -> float:
    """Foreground volume: voxel count, times the voxel volume in mm^3 if ``spacing`` given.

    Example:
        >>> lesion_volume(np.ones((2, 2, 2)), spacing=(1.0, 1.0, 5.0))
        40.0
    """
    m = _mask(mask, "mask")
    n = float(np.count_nonzero(m))
    if spacing is None:
        return n
    s = np.asarray(spacing, dtype=np.float64)
    s = np.full(m.ndim, float(s)) if s.ndim == 0 else s
    if s.shape != (m.ndim,):
        raise ValueError(f"spacing has {s.size} values for a {m.ndim}-D mask {m.shape}")
    return n * float(np.prod(s))


def volume_correlation(pred_volumes: Sequence[float], true_volumes: Sequence[float]) -> float:
    """Pearson r between predicted and true volumes; NaN for < 2 cases or zero variance.

    Example:
        >>> volume_correlation([1.0, 2.0, 3.0], [2.0, 4.0, 6.5])  # doctest: +ELLIPSIS
        0.99...
    """
    x = np.asarray(pred_volumes, dtype=np.float64).reshape(-1)
    y = np.asarray(true_volumes, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: pred_volumes {x.shape} vs true_volumes {y.shape}")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return NAN
    return float(np.corrcoef(x, y)[0, 1])


def isbi_score(dice: float, ppv: float, lfpr: float, ltpr: float, corr: float) -> float:
    """Raw ISBI 2015 MS-lesion composite: Dice/8 + PPV/8 + (1-LFPR)/4 + LTPR/4 + Corr/4.

    In [..., 1] (Corr can be negative). The challenge additionally normalised
    each term by inter-rater agreement and scaled to 100 (best published 93.1);
    this is the raw, un-normalised composite and is not comparable to those
    leaderboard numbers.

    Example:
        >>> isbi_score(0.8, 0.8, 0.2, 0.6, 0.9)   # 0.1 + 0.1 + 0.2 + 0.15 + 0.225
        0.775
    """
    return float(dice / 8 + ppv / 8 + (1 - lfpr) / 4 + ltpr / 4 + corr / 4)


def pooled_lesion_scores(n_true: int, n_pred: int, n_detected: int, n_false_pos: int) -> dict[str, float]:
    """Lesion TPR, precision and F1 from lesion counts summed over cases (:func:`lesion_detection`'s keys).

    NaN where undefined: TPR without true lesions, precision without predicted ones, F1 unless both exist.

    Example:
        >>> pooled_lesion_scores(n_true=4, n_pred=2, n_detected=2, n_false_pos=0)["f1"]  # 2 * 0.5 * 1 / 1.5
        0.6666666666666666
    """
    tpr = _ratio(n_detected, n_true)
    prec = _ratio(n_pred - n_false_pos, n_pred)
    f1 = 2 * tpr * prec / (tpr + prec) if n_true and n_pred and tpr + prec > 0 else NAN
    return {"ltpr": tpr, "precision": prec, "f1": f1}
