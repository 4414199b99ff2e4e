"""Segmentation losses on logits (binary masks: one channel, sigmoid)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch import nn

from medtasks.registry import LOSSES


@LOSSES.register("bce_dice")
class BCEDiceLoss(nn.Module):
    """``bce_weight * BCEWithLogits + dice_weight * soft Dice`` (MONAI ``DiceLoss(sigmoid=True)``).

    ``batch_dice=True`` computes one Dice over the whole batch (sums before the ratio), so slices
    without a lesion do not each contribute a noisy 0/0 term: the usual choice for sparse lesions.
    ``pos_weight`` up-weights lesion pixels in the BCE term.

    Example:
        >>> loss = BCEDiceLoss()
        >>> y = torch.zeros(2, 1, 8, 8); y[:, :, 2:5, 2:5] = 1
        >>> round(float(loss(40 * y - 20, y)), 4)  # confident and right everywhere
        0.0
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, batch_dice: bool = True,
                 pos_weight: float | None = None) -> None:
        super().__init__()
        if bce_weight < 0 or dice_weight < 0 or bce_weight + dice_weight == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got bce {bce_weight} dice {dice_weight}")
        self.bce_weight, self.dice_weight = float(bce_weight), float(dice_weight)
        pw = None if pos_weight is None else torch.tensor([float(pos_weight)])
        self.bce = nn.BCEWithLogitsLoss(pos_weight=pw)
        self.dice = DiceLoss(sigmoid=True, batch=batch_dice, smooth_nr=1e-5, smooth_dr=1e-5)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        out = logits.new_zeros(())
        if self.bce_weight:
            out = out + self.bce_weight * self.bce(logits, target)
        if self.dice_weight:
            out = out + self.dice_weight * self.dice(logits, target)
        return out


@LOSSES.register("dice_ce")
def dice_ce(lambda_dice: float = 1.0, lambda_ce: float = 1.0) -> nn.Module:
    """Multi-class Dice + cross-entropy on logits ``(B, C, ...)`` against an index label ``(B, 1, ...)``
    (MONAI ``DiceCELoss(softmax=True, to_onehot_y=True)``): the cardiac class-1/2 model's loss."""
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=lambda_dice, lambda_ce=lambda_ce)


@LOSSES.register("tversky")
def tversky(alpha: float = 0.3, beta: float = 0.7) -> nn.Module:
    """Tversky loss (MONAI, softmax over ``C`` logits, index label): ``beta > alpha`` weighs false negatives
    more than false positives, so training leans towards recall (tiny calcifications)."""
    from monai.losses import TverskyLoss

    return TverskyLoss(to_onehot_y=True, softmax=True, alpha=alpha, beta=beta)


@LOSSES.register("dice_focal")
def dice_focal(gamma: float = 2.0, lambda_dice: float = 1.0, lambda_focal: float = 1.0) -> nn.Module:
    """Dice + focal loss (MONAI ``DiceFocalLoss``, softmax, index label): the focal term concentrates on the
    hard voxels, the Dice term on overlap."""
    from monai.losses import DiceFocalLoss

    return DiceFocalLoss(to_onehot_y=True, softmax=True, gamma=gamma, lambda_dice=lambda_dice,
                         lambda_focal=lambda_focal)
