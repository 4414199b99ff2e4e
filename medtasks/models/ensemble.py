"""The mean of several networks' outputs (cross-validation folds, sequence-head folds).

Example:
    >>> import torch
    >>> m = EnsembleModel([torch.nn.Identity(), torch.nn.Identity()])
    >>> m(torch.ones(1, 2)).tolist()
    [[1.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class EnsembleModel(nn.Module):
    """Mean of the logits of several models with the same inputs (``cv.select: ensemble``, fold heads)."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.stack([m(*args, **kwargs).float() for m in self.members]).mean(0)
