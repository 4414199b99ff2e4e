"""A registered backbone + dropout + linear head: the 2-D image classifiers' network.

Example:
    >>> ImageClassifier("resnet18")(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 1])
"""

from __future__ import annotations

import torch
from torch import nn

from medtasks.registry import BACKBONES


class ImageClassifier(nn.Module):
    """Backbone features -> dropout -> ``Linear(dim, n_outputs)`` (torchvision's "replace fc")."""

    def __init__(self, backbone: str = "resnet18", n_outputs: int = 1, in_channels: int = 3, dropout: float = 0.0,
                 pretrained: str | None = None, weights: str | None = None) -> None:
        super().__init__()
        self.backbone, dim = BACKBONES.get(backbone)(in_channels=in_channels, pretrained=pretrained, weights=weights)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_outputs))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(image))
