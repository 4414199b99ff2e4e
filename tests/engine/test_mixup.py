"""MixUp batches and label smoothing: exact mixing, training-only effects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.engines import PrepareBatchExtraInput

from medtasks.engine.mixup import MixUpBatch
from medtasks.losses.classification import WeightedBCEWithLogits


def _batch(n: int = 6) -> dict[str, torch.Tensor]:
    return {"image": torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone(),
            "label": (torch.arange(n)[:, None] % 2 == torch.tensor([[0, 1]])).float(),
            "z": torch.linspace(0, 1, n)}


def test_mixup_mixes_image_label_and_extra_input_with_one_lambda() -> None:
    b = _batch()
    mix = MixUpBatch(PrepareBatchExtraInput(extra_keys=("z",)), alpha=0.4, seed=3)
    x, y, args, kwargs = mix(b)
    lam = mix.last_lam
    assert 0.0 <= lam <= 1.0 and kwargs == {}
    # Recover the partner of each row from the image value: x = lam * i + (1 - lam) * j.
    rows = torch.arange(6, dtype=torch.float32)
    partner = (x[:, 0, 0, 0] - lam * rows) / (1 - lam)
    j = partner.round().long()
    assert torch.allclose(partner, j.float(), atol=1e-4) and sorted(j.tolist()) == list(range(6))
    assert torch.allclose(y, lam * b["label"] + (1 - lam) * b["label"][j])
    assert torch.allclose(args[0], lam * b["z"] + (1 - lam) * b["z"][j])


def test_mixup_reproducible_off_and_validation() -> None:
    a = MixUpBatch(alpha=0.2, seed=1)(_batch())
    b = MixUpBatch(alpha=0.2, seed=1)(_batch())
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    x, y = MixUpBatch(alpha=0.0)(_batch())
    assert torch.equal(x, _batch()["image"]) and torch.equal(y, _batch()["label"])
    lams = []
    mix = MixUpBatch(alpha=0.2, seed=0)
    for _ in range(400):
        mix(_batch())
        lams.append(mix.last_lam)
    # Beta(0.2, 0.2): U-shaped, mean 0.5, most draws near 0 or 1.
    assert abs(np.mean(lams) - 0.5) < 0.06 and np.mean((np.array(lams) < 0.1) | (np.array(lams) > 0.9)) > 0.5
    with pytest.raises(ValueError):
        MixUpBatch(alpha=-1)


def test_label_smoothing_training_only() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = WeightedBCEWithLogits([1.0, 2.0], label_smoothing=0.1)
    smooth = target * 0.9 + 0.05
    w = torch.tensor([1.0, 2.0])
    expected = (F.binary_cross_entropy_with_logits(logits, smooth, reduction="none") * w).sum(1).div(3).mean()
    assert float(loss(logits, target)) == pytest.approx(float(expected))
    plain = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).sum(1).div(3).mean()
    assert float(loss.eval()(logits, target)) == pytest.approx(float(plain))
    with pytest.raises(ValueError):
        WeightedBCEWithLogits([1.0], label_smoothing=1.0)
