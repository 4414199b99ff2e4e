"""Classification losses."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medtasks.registry import LOSSES


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
        self.register_buffer("pos_weight", torch.as_tensor(pos_weight, dtype=torch.float32) if pos_weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        if self.training and self.label_smoothing > 0:
            target = target * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight, reduction="none")
        w = self.class_weights.to(logits.dtype)
        return ((bce * w).sum(dim=1) / w.sum()).mean()
