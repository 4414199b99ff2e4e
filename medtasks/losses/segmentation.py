"""Segmentation losses on logits (binary masks: one channel, sigmoid)."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import nn

from medtasks.registry import LOSSES


@LOSSES.register("bce_dice")
def bce_dice(bce_weight: float = 1.0, dice_weight: float = 1.0, batch_dice: bool = True,
             pos_weight: float | None = None) -> DiceCELoss:
    """``bce_weight * BCEWithLogits + dice_weight * soft Dice`` on one sigmoid channel: MONAI's ``DiceCELoss``.

    ``DiceCELoss(sigmoid=True, lambda_ce=bce_weight, lambda_dice=dice_weight, batch=batch_dice)``: for a
    one-channel input its CE term is ``BCEWithLogitsLoss`` and its Dice term ``DiceLoss(sigmoid=True)`` with
    smoothing 1e-5 (the tests check both against the formulas by hand).

    ``batch_dice=True`` computes one Dice over the whole batch (sums before the ratio), so slices
    without a lesion do not each contribute a noisy 0/0 term: the usual choice for sparse lesions.
    ``batch_dice=False`` is the per-image Dice (one Dice per sample, then the mean over the batch; an
    empty slice predicted empty scores 1 through the 1e-5 smoothing).
    ``bce_weight=0.5, dice_weight=1, batch_dice=False`` is exactly the ``BCEDiceLoss`` of
    pytorch-nested-unet (``0.5 * BCE + 1 - mean_i dice_i``, smooth 1e-5), the code on the MS report's poster.
    ``pos_weight`` up-weights lesion pixels in the BCE term only: it is ``DiceCELoss``'s ``weight``, which is
    the BCE's ``pos_weight`` and which MONAI's ``DiceLoss`` leaves out for a single channel (a test checks it).

    Example:
        >>> loss = bce_dice()
        >>> y = torch.zeros(2, 1, 8, 8); y[:, :, 2:5, 2:5] = 1
        >>> round(float(loss(40 * y - 20, y)), 4)  # confident and right everywhere
        0.0
    """
    if bce_weight < 0 or dice_weight < 0 or bce_weight + dice_weight == 0:
        raise ValueError(f"loss.bce_weight / loss.dice_weight must be >= 0 and not both 0, got bce {bce_weight} "
                         f"dice {dice_weight}")
    weight = None if pos_weight is None else torch.tensor([float(pos_weight)])
    return DiceCELoss(sigmoid=True, batch=batch_dice, lambda_ce=float(bce_weight), lambda_dice=float(dice_weight),
                      smooth_nr=1e-5, smooth_dr=1e-5, weight=weight)


class MaskedDiceCELoss(nn.Module):
    """Dice + cross-entropy that leaves out the voxels whose label is one of ``ignore_classes``.

    MONAI's ``DiceCELoss`` has no ignore index, and ``MaskedDiceLoss`` masks the target *before* its
    one-hot step (a masked voxel would become class 0), so the pieces are put together here: the
    label is one-hot encoded first (ignored voxels given class 0, then masked out), MONAI
    ``MaskedDiceLoss(softmax=True)`` zeroes both the probabilities and the one-hot target at ignored
    voxels (they add nothing to intersection or denominator), and ``torch`` cross-entropy with
    ``ignore_index`` averages over the voxels that remain (0 when none remain, e.g. a patch of pure
    background with background ignored). With nothing ignored it equals
    ``DiceCELoss(to_onehot_y=True, softmax=True)`` (the tests check it).

    Label values may be >= ``C`` only if ignored (e.g. the cardiac calcium label 3 for a 3-channel
    class-1/2 network).

    Example:
        >>> loss = MaskedDiceCELoss(ignore_classes=[3])
        >>> y = torch.zeros(1, 1, 4, 4); y[..., :2] = 1; y[..., 3] = 3
        >>> x = torch.randn(1, 3, 4, 4); x2 = x.clone(); x2[..., 3] = 99.0      # change only the ignored voxels
        >>> bool(torch.isclose(loss(x, y), loss(x2, y)))
        True
    """

    def __init__(self, ignore_classes: tuple[int, ...] | list[int] = (), lambda_dice: float = 1.0,
                 lambda_ce: float = 1.0) -> None:
        super().__init__()
        from monai.losses import MaskedDiceLoss

        self.ignore = tuple(int(c) for c in ignore_classes)
        self.lambda_dice, self.lambda_ce = float(lambda_dice), float(lambda_ce)
        self.dice = MaskedDiceLoss(softmax=True, smooth_nr=1e-5, smooth_dr=1e-5)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        label = target[:, 0].long()
        keep = torch.ones_like(label, dtype=torch.bool)
        for c in self.ignore:
            keep &= label != c
        n_classes = logits.shape[1]
        idx = torch.where(keep, label, torch.zeros_like(label))
        if int(idx.max()) >= n_classes or int(idx.min()) < 0:
            raise ValueError(f"label values outside 0..{n_classes - 1} that are not ignored ({self.ignore})")
        # float32 whatever the logits' dtype: under fp16 autocast a sum over a 96^3 patch would overflow (> 65504)
        onehot = nn.functional.one_hot(idx, n_classes).movedim(-1, 1).float()
        mask = keep[:, None].float()
        dice = self.dice(logits, onehot, mask=mask)
        ce_target = torch.where(keep, label, torch.full_like(label, -100))
        ce_sum = nn.functional.cross_entropy(logits, ce_target, ignore_index=-100, reduction="sum")
        ce = ce_sum / keep.sum().clamp(min=1)
        return self.lambda_dice * dice + self.lambda_ce * ce


@LOSSES.register("dice_ce")
def dice_ce(lambda_dice: float = 1.0, lambda_ce: float = 1.0, ignore_classes: tuple[int, ...] | list[int] = ()
            ) -> nn.Module:
    """Multi-class Dice + cross-entropy on logits ``(B, C, ...)`` against an index label ``(B, 1, ...)``
    (MONAI ``DiceCELoss(softmax=True, to_onehot_y=True)``): the cardiac class-1/2 model's loss.
    ``ignore_classes``: voxels with these label values leave both terms (:class:`MaskedDiceCELoss`)."""
    if ignore_classes:
        return MaskedDiceCELoss(ignore_classes, lambda_dice=lambda_dice, lambda_ce=lambda_ce)
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
