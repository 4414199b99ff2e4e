"""Test-time augmentation for classifiers: the mean output over fixed views of each batch.

Views are deterministic image transforms of a ``(B, C, H, W)`` batch: ``identity``, ``hflip``,
``vflip`` and ``rotate:<deg>`` (bilinear, corners filled with each channel's minimum, i.e. the
normalised window floor of CT input). The wrapper averages the views' sigmoid probabilities
(``average="prob"``, the ich report's "mean of the five predictions") and returns the logit of that
mean, so that the callers' logit interface, and temperature scaling fitted afterwards on it, stay
as they are (with T = 1 the output probability is exactly the mean); ``average="logit"`` averages
the logits. Extra inputs (e.g. the slice position) pass through unchanged.

Example:
    >>> import torch
    >>> net = TTAWrapper(torch.nn.Flatten(), ["hflip"], average="logit")
    >>> net(torch.arange(4.0).view(1, 1, 2, 2)).tolist()   # mean of the image and its mirror
    [[0.5, 0.5, 2.5, 2.5]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from medtasks.schema import DEFAULT_TTA, parse_view

__all__ = ["TTAWrapper", "parse_view", "DEFAULT_TTA"]



def apply_view(x: torch.Tensor, view: tuple[str, float]) -> torch.Tensor:
    kind, deg = view
    if kind == "identity":
        return x
    if kind == "hflip":
        return torch.flip(x, dims=(-1,))
    if kind == "vflip":
        return torch.flip(x, dims=(-2,))
    fill = [float(v) for v in x.amin(dim=(0, 2, 3))]
    return TF.rotate(x, deg, interpolation=InterpolationMode.BILINEAR, fill=fill)


class TTAWrapper(nn.Module):
    """``network`` evaluated on the original batch and each view in ``views``; the views averaged as
    sigmoid probabilities (``prob``, returned as the logit of the mean) or as logits (``logit``)."""

    # logit(mean p) is computed in float64 and clipped at Kaggle's log-loss eps, so a view-mean of
    # exactly 1 stays a large finite logit (34.5) rather than inf
    EPS = 1e-15

    def __init__(self, network: nn.Module, views: Sequence[str] = DEFAULT_TTA, average: str = "prob") -> None:
        super().__init__()
        if average not in ("prob", "logit"):
            raise ValueError(f"average: 'prob' or 'logit', got {average!r}")
        self.network = network
        self.average = average
        self.views = [("identity", 0.0)] + [parse_view(v) for v in views if v != "identity"]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        total = None
        for view in self.views:
            out = self.network(apply_view(x, view), *args, **kwargs).double()
            if self.average == "prob":
                out = torch.sigmoid(out)
            total = out if total is None else total + out
        mean = total / len(self.views)
        if self.average == "prob":
            mean = torch.logit(mean, eps=self.EPS)
        return mean.float()
