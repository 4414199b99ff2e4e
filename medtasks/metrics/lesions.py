"""Lesion-wise segmentation metrics: detection of connected components, lesion volumes, the ISBI 2015 score.

Conventions as in :mod:`medtasks.metrics.segmentation` (whose mask checks this module uses):
lesions are connected components of ``scipy.ndimage.label`` with the connectivity rank of
``generate_binary_structure`` (2 = 18-connectivity in 3-D, the ISBI 2015 rule; the same rank is
scikit-image's ``connectivity``); LFPR = false-positive predicted lesions / predicted lesions.

Two matching rules (:data:`RULES`), computed from the same components:

* ``overlap`` (ISBI 2015) — a true lesion is detected when any of its voxels is predicted; a
  predicted lesion is a false positive when it touches no true lesion.
* ``iou`` (the MS report, l.242: "IoU above 0.5 is a true positive", after Gurkan et al. 2019) —
  for each pair of a true lesion T and a predicted component P, IoU = |T ∩ P| / |T ∪ P| with both
  whole components (voxel counts); a true lesion is detected when its best-matching single
  predicted component has IoU > ``iou_threshold``; a predicted component is a true positive when
  its best-matching true lesion has IoU > ``iou_threshold``, otherwise a false positive — also
  when it overlaps a lesion too little (a fragment of a split lesion, a blob over two lesions).
  With a threshold of at least 0.5 each component has at most one partner above it (two partners
  would each need more than half of its voxels), so the matching is one-to-one without an
  assignment step and ``n_detected`` equals the matched predicted components; lower thresholds
  are refused for that reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medtasks.metrics.segmentation import NAN, Spacing, _mask, _pair, _ratio

__all__ = ["RULES", "LesionMatch", "match_lesions", "lesion_detection", "detection_counts", "lesion_volume",
           "volume_correlation", "isbi_score", "pooled_lesion_scores"]

RULES = ("overlap", "iou")


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


def _best(owner: np.ndarray, other: np.ndarray, iou: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per component 1..n of ``owner``: the highest IoU with any partner (0 if none) and that partner (0 if none)."""
    best, partner = np.zeros(n + 1), np.zeros(n + 1, dtype=np.int64)
    for o, p, v in zip(owner, other, iou):   # pairs are few (components that touch): no vectorising needed
        if v > best[o]:
            best[o], partner[o] = v, p
    return best[1:], partner[1:]


@dataclass
class LesionMatch:
    """Components of one case and how they match (index ``i`` of each array = lesion label ``i + 1``).

    ``true_labels`` / ``pred_labels``: label maps (0 = background); ``true_touched`` / ``pred_touched``:
    overlaps any component of the other mask (the overlap rule); ``true_best_iou`` / ``pred_best_iou``:
    the IoU with the best-matching single component of the other mask (0 if none), ``true_best`` /
    ``pred_best``: that component's label (0 if none).
    """

    true_labels: np.ndarray
    pred_labels: np.ndarray
    true_touched: np.ndarray
    pred_touched: np.ndarray
    true_best_iou: np.ndarray
    pred_best_iou: np.ndarray
    true_best: np.ndarray
    pred_best: np.ndarray
    iou_threshold: float = 0.5

    @property
    def n_true(self) -> int:
        return int(self.true_touched.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_touched.size)

    def true_detected(self, rule: str) -> np.ndarray:
        """Per true lesion: detected under ``rule``."""
        return self.true_touched if _rule(rule) == "overlap" else self.true_best_iou > self.iou_threshold

    def pred_matched(self, rule: str) -> np.ndarray:
        """Per predicted lesion: a true positive under ``rule`` (``False`` = false positive)."""
        return self.pred_touched if _rule(rule) == "overlap" else self.pred_best_iou > self.iou_threshold


def _rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}: use one of {', '.join(RULES)}")
    return rule


def match_lesions(pred: np.ndarray, true: np.ndarray, connectivity: int = 2, min_size: int = 0,
                  iou_threshold: float = 0.5) -> LesionMatch:
    """Connected components of both masks and their pairwise overlaps (see the module docstring).

    Example:
        >>> t = np.zeros((1, 1, 8), bool); t[0, 0, :4] = True
        >>> p = np.zeros_like(t); p[0, 0, 3:5] = True          # 1 voxel shared of 5: IoU 0.2
        >>> m = match_lesions(p, t)
        >>> m.true_detected("overlap").tolist(), m.true_detected("iou").tolist(), m.true_best_iou.tolist()
        ([True], [False], [0.2])
    """
    if not 0.5 <= float(iou_threshold) < 1.0:
        raise ValueError(f"iou_threshold must be in [0.5, 1): below 0.5 a component can match two lesions and "
                         f"the counts need an assignment step (got {iou_threshold})")
    p, t = _pair(pred, true)
    lp, n_p = _components(p, connectivity, min_size)
    lt, n_t = _components(t, connectivity, min_size)
    both = (lt > 0) & (lp > 0)
    code = lt[both].astype(np.int64) * (n_p + 1) + lp[both]
    pairs, inter = np.unique(code, return_counts=True)
    ti, pj = pairs // (n_p + 1), pairs % (n_p + 1)
    size_t = np.bincount(lt.ravel(), minlength=n_t + 1)
    size_p = np.bincount(lp.ravel(), minlength=n_p + 1)
    iou = inter / (size_t[ti] + size_p[pj] - inter)
    t_best, t_partner = _best(ti, pj, iou, n_t)
    p_best, p_partner = _best(pj, ti, iou, n_p)
    return LesionMatch(lt, lp, np.isin(np.arange(1, n_t + 1), ti), np.isin(np.arange(1, n_p + 1), pj),
                       t_best, p_best, t_partner, p_partner, float(iou_threshold))


def lesion_detection(
    pred: np.ndarray, true: np.ndarray, connectivity: int = 2, min_size: int = 0, rule: str = "overlap",
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """Lesion-wise detection: connected components matched on any overlap (ISBI) or on IoU (the MS report).

    ``rule="overlap"``: a true lesion is detected when any of its voxels is predicted; a predicted
    lesion is a false positive when it touches no true lesion. ``rule="iou"``: both need a partner
    component with IoU > ``iou_threshold`` (module docstring). Components smaller than
    ``min_size`` voxels are dropped from both masks first.

    Args:
        pred, true: binary masks of the same shape (2-D or 3-D).
        connectivity: rank for ``generate_binary_structure``; 2 = 18-connected
            in 3-D (ISBI 2015 default), 8-connected in 2-D.
        min_size: smallest component kept, in voxels (0/1 keep all).
        rule: ``"overlap"`` or ``"iou"``.
        iou_threshold: the ``iou`` rule's threshold, in [0.5, 1).

    Returns:
        ``n_true_lesions, n_pred_lesions, n_detected`` (true lesions detected),
        ``n_false_pos`` (predicted lesions without a match), ``ltpr`` =
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
    return detection_counts(match_lesions(pred, true, connectivity, min_size, iou_threshold), rule)


def detection_counts(m: LesionMatch, rule: str = "overlap") -> dict[str, float]:
    """:func:`lesion_detection`'s result from an existing :func:`match_lesions` (one labelling, both rules)."""
    n_t, n_p = m.n_true, m.n_pred
    n_det, n_hit = int(m.true_detected(rule).sum()), int(m.pred_matched(rule).sum())
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

    NaN where undefined: TPR without true lesions, precision without predicted ones, F1 unless both exist
    (0 when both exist and no lesion is matched, as in :func:`lesion_detection`).

    Example:
        >>> pooled_lesion_scores(n_true=4, n_pred=2, n_detected=2, n_false_pos=0)["f1"]  # 2 * 0.5 * 1 / 1.5
        0.6666666666666666
    """
    tpr = _ratio(n_detected, n_true)
    prec = _ratio(n_pred - n_false_pos, n_pred)
    if not (n_true and n_pred):
        f1 = NAN
    else:
        f1 = 2 * tpr * prec / (tpr + prec) if tpr + prec > 0 else 0.0
    return {"ltpr": tpr, "precision": prec, "f1": f1}
