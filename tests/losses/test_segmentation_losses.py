"""``bce_dice`` is MONAI's DiceCELoss(sigmoid=True): values against the formula by hand, weights, pos_weight."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from medtasks.losses.segmentation import bce_dice
from medtasks.registry import LOSSES

EPS = 1e-5  # MONAI's smooth_nr = smooth_dr, and the old loss's


def _by_hand(logits: torch.Tensor, y: torch.Tensor, bce_w: float, dice_w: float, batch: bool,
             pos_weight: float | None = None) -> float:
    """The loss before the change, written out in float64: ``bce_w * BCE + dice_w * (1 - Dice)``, with Dice
    over the whole batch (``batch``) or per image then averaged."""
    x, t = logits.double().numpy(), y.double().numpy()
    p = 1 / (1 + np.exp(-x))
    pw = 1.0 if pos_weight is None else pos_weight
    bce = float(np.mean(-(pw * t * np.log(p) + (1 - t) * np.log(1 - p))))
    axes = (0, 1, 2, 3) if batch else (1, 2, 3)
    inter, total = (p * t).sum(axis=axes), (p + t).sum(axis=axes)
    dice = float(np.mean(1 - (2 * inter + EPS) / (total + EPS)))
    return bce_w * bce + dice_w * dice


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(4, 1, 16, 16, generator=g)
    y = torch.zeros(4, 1, 16, 16)
    y[0, 0, 3:9, 4:10] = 1
    y[1, 0, 10:12, 1:3] = 1            # image 2: a small lesion; image 3: a few scattered pixels; image 4: empty
    y[2, 0, ::7, ::5] = 1
    return logits, y


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize(("bce_w", "dice_w"), [(1.0, 1.0), (0.5, 1.0), (2.0, 0.25), (0.0, 1.0), (1.0, 0.0)])
def test_bce_dice_is_dice_ce_and_equals_the_old_formula(batch: bool, bce_w: float, dice_w: float) -> None:
    logits, y = _batch()
    loss = LOSSES.get("bce_dice")(bce_weight=bce_w, dice_weight=dice_w, batch_dice=batch)
    assert isinstance(loss, DiceCELoss)
    got = float(loss(logits, y))
    assert got == pytest.approx(_by_hand(logits, y, bce_w, dice_w, batch), rel=1e-6, abs=1e-7)
    # MONAI's own DiceCELoss, configured as the docstring says, gives the same number
    plain = DiceCELoss(sigmoid=True, batch=batch, lambda_ce=bce_w, lambda_dice=dice_w)
    assert got == float(plain(logits, y))


def test_batch_on_and_off_differ_as_by_hand() -> None:
    """Per-image Dice counts the empty image (predicted near-empty only by the smoothing) on its own; one Dice over
    the batch does not: the two settings give different losses, each equal to its formula."""
    logits, y = _batch(3)
    on = float(bce_dice(batch_dice=True)(logits, y))
    off = float(bce_dice(batch_dice=False)(logits, y))
    assert on == pytest.approx(_by_hand(logits, y, 1, 1, True), rel=1e-6)
    assert off == pytest.approx(_by_hand(logits, y, 1, 1, False), rel=1e-6)
    assert abs(on - off) > 1e-3


def test_small_exact_case_by_hand() -> None:
    """p = 0.5 everywhere: BCE = ln 2; image 1 holds 2 lesion pixels of 4, image 2 none."""
    logits, y = torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    y[0, 0, 0] = 1
    per_image = 1 - ((2 * 1.0 + EPS) / (2.0 + 2.0 + EPS) + (0.0 + EPS) / (2.0 + 0.0 + EPS)) / 2
    whole = 1 - (2 * 1.0 + EPS) / (4.0 + 2.0 + EPS)
    assert float(bce_dice(0.5, 1.0, batch_dice=False)(logits, y)) == pytest.approx(0.5 * math.log(2) + per_image,
                                                                                      abs=1e-6)
    assert float(bce_dice(0.5, 1.0, batch_dice=True)(logits, y)) == pytest.approx(0.5 * math.log(2) + whole,
                                                                                     abs=1e-6)


def test_pos_weight_weighs_the_bce_term_only() -> None:
    """pos_weight = 4 multiplies the lesion pixels' BCE; the Dice term stays as it was (MONAI's DiceLoss leaves a
    class weight out for one channel: if a MONAI release changed that, this test would say so)."""
    logits, y = _batch(1)
    for batch in (True, False):
        got = float(bce_dice(bce_weight=0.5, pos_weight=4.0, batch_dice=batch)(logits, y))
        assert got == pytest.approx(_by_hand(logits, y, 0.5, 1.0, batch, pos_weight=4.0), rel=1e-6)
        dice_only = float(bce_dice(bce_weight=0.0, pos_weight=4.0, batch_dice=batch)(logits, y))
        assert dice_only == pytest.approx(_by_hand(logits, y, 0.0, 1.0, batch), rel=1e-6)
    assert got != pytest.approx(_by_hand(logits, y, 0.5, 1.0, False), rel=1e-3)   # the weight does act


def test_confident_and_right_is_zero_and_weights_are_checked() -> None:
    y = torch.zeros(2, 1, 8, 8)
    y[:, :, 2:5, 2:5] = 1
    assert float(bce_dice()(40 * y - 20, y)) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match="not both 0"):
        bce_dice(bce_weight=0.0, dice_weight=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        bce_dice(bce_weight=-1.0)
