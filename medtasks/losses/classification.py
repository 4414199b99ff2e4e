"""Classification losses."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medtasks.registry import LOSSES

log = logging.getLogger(__name__)


def weighted_bce_with_logits(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None,
                             pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over samples of ``sum_c w_c * BCE_c / sum_c w_c`` on ``(N, C)`` logits: the one weighted BCE of
    medtasks (the training loss below, and the temperature fit of :mod:`medtasks.metrics.tuning`).

    With ``class_weights = [1, 1, 1, 1, 1, 2]`` it is the RSNA competition's weighted log loss computed from
    logits, so it stays finite for confident outputs; ``None`` weighs every label 1.

    Example:
        >>> float(weighted_bce_with_logits(torch.zeros(2, 3), torch.ones(2, 3)))  # log(2)
        0.6931...
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    w = (torch.ones(logits.shape[-1], dtype=logits.dtype, device=logits.device) if class_weights is None
         else class_weights.to(device=logits.device, dtype=logits.dtype))
    return ((bce * w).sum(dim=1) / w.sum()).mean()


def prevalence_pos_weight(labels, names: Sequence[str] | None = None) -> list[float]:
    """Per-label ``BCEWithLogitsLoss`` pos_weight = negatives / positives of the (N, C) 0/1 ``labels``:
    each label's positives then weigh as much as its negatives in the loss (the minority-class weighting of
    the ich report, l.263-265). Rounded to 4 digits (saved in ``task_state.json``).

    A label with no positive (or no negative) row has no defined ratio: it gets 1.0 (no re-weighting), with a
    logged warning naming it (a small fold or a rare subtype; the run goes on).

    Example:
        >>> prevalence_pos_weight([[1, 0], [0, 0], [0, 1], [0, 1]])
        [3.0, 1.0]
    """
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] == 0:
        raise ValueError(f"expected (N, C) labels, got shape {y.shape}")
    pos = (y >= 0.5).sum(axis=0)
    neg = y.shape[0] - pos
    names = list(names) if names is not None else [str(j) for j in range(y.shape[1])]
    bad = [j for j in range(y.shape[1]) if pos[j] == 0 or neg[j] == 0]
    if bad:
        log.warning(
            "loss.pos_weight=prevalence: label(s) %s have no positive or no negative training row; their "
            "pos_weight is 1.0 (give loss.pos_weight as a list to choose)", ", ".join(names[j] for j in bad))
    return [1.0 if j in bad else round(float(neg[j] / pos[j]), 4) for j in range(y.shape[1])]


@LOSSES.register("weighted_bce")
class WeightedBCEWithLogits(nn.Module):
    """Multi-label BCE on logits with per-class weights, normalised by their sum.

    With ``class_weights = [1, 1, 1, 1, 1, 2]`` (any = 2) this is the RSNA ICH competition's
    weighted log loss: per sample, sum_c w_c * BCE_c / sum_c w_c, averaged over samples.
    ``pos_weight`` (optional, per class) up-weights positives as in ``BCEWithLogitsLoss``.
    ``label_smoothing`` ``eps`` trains towards ``y (1 - eps) + eps / 2`` (0/1 -> eps/2, 1 - eps/2);
    it applies in training mode only, so a loss module put in ``.eval()`` scores the plain targets.

    Example:
        >>> loss = WeightedBCEWithLogits([1, 1, 1, 1, 1, 2])
        >>> float(loss(torch.zeros(4, 6), torch.ones(4, 6)))  # log(2)
        0.6931...
    """

    def __init__(self, class_weights: Sequence[float] | None = None, pos_weight: Sequence[float] | None = None,
                 n_classes: int | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        n = len(class_weights) if class_weights is not None else n_classes
        if n is None:
            raise ValueError("give class_weights or n_classes")
        w = torch.as_tensor(class_weights if class_weights is not None else [1.0] * n, dtype=torch.float32)
        if pos_weight is not None and len(pos_weight) != n:
            raise ValueError(f"loss.pos_weight has {len(pos_weight)} values for {n} classes")
        self.register_buffer("class_weights", w)
        self.register_buffer("pos_weight",
                             torch.as_tensor(pos_weight, dtype=torch.float32) if pos_weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        if self.training and self.label_smoothing > 0:
            target = target * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return weighted_bce_with_logits(logits, target, self.class_weights, self.pos_weight)


@LOSSES.register("binary_ce")
class BinaryCrossEntropy(nn.Module):
    """Two-class cross-entropy on one logit, optionally class-weighted: ``CrossEntropyLoss(weight=[w0, w1])``
    on the logits ``[0, z]``, i.e. per sample ``w_y * BCE(z, y)``, averaged with the weights as the
    denominator (PyTorch's weighted-mean rule), so ``[1, 1]`` is plain CE = BCE.

    Example:
        >>> z, y = torch.tensor([[2.0], [-1.0]]), torch.tensor([[1.0], [1.0]])
        >>> ce = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0]))
        >>> bool(torch.isclose(BinaryCrossEntropy([1.0, 3.0])(z, y),
        ...                    ce(torch.cat([torch.zeros_like(z), z], 1), y[:, 0].long())))
        True
    """

    def __init__(self, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        w = [1.0, 1.0] if class_weights is None else [float(v) for v in class_weights]
        if len(w) != 2 or min(w) <= 0:
            raise ValueError("loss.class_weights: expected two positive weights [negative, positive], "
                             f"got {class_weights}")
        self.register_buffer("weights", torch.tensor(w))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        w = self.weights[0] + (self.weights[1] - self.weights[0]) * target
        return (w * per).sum() / w.sum()


@LOSSES.register("focal")
class BinaryFocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017) through MONAI's ``FocalLoss(use_softmax=False)``:
    ``-alpha_t (1 - p_t)^gamma log p_t``, mean over samples. ``alpha`` weighs the positive class
    (``1 - alpha`` the negative); ``None`` = unweighted. ``gamma = 0`` and no alpha is plain BCE.

    Example:
        >>> z, y = torch.tensor([[0.3], [-2.0]]), torch.tensor([[1.0], [0.0]])
        >>> bool(torch.isclose(BinaryFocalLoss(gamma=0.0)(z, y), F.binary_cross_entropy_with_logits(z, y)))
        True
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None) -> None:
        super().__init__()
        from monai.losses import FocalLoss

        if gamma < 0 or (alpha is not None and not 0 < alpha < 1):
            raise ValueError(f"focal loss: gamma must be >= 0 and alpha in (0, 1) or null; got {gamma}, {alpha}")
        self.loss = FocalLoss(include_background=True, gamma=gamma, alpha=alpha, use_softmax=False, reduction="mean")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target.to(logits.dtype))


@LOSSES.register("cross_entropy")
class IntegerCrossEntropy(nn.Module):
    """Cross-entropy of ``(B, K)`` logits on integer class labels of any shape (``(B,)`` or ``(B, 1)``),
    e.g. the cardiac patient-level calcium gate."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target.reshape(-1).long())
