"""The source report's position-aware classifier (ich_classify).

Backbone features (e.g. ResNet50, 2048-d) are concatenated with a 64-d embedding of the slice's
normalised z position (``z_normalized`` in [0, 1], mapped to [-1, 1] here), then a fusion MLP
(-> 256, ReLU, dropout 0.3) gives one logit per label. ``use_position=False`` drops the position
branch: the report's image-only ablation with the same fusion head.
"""

from __future__ import annotations

import torch
from torch import nn

from medtasks.registry import BACKBONES, MODELS


@MODELS.register("position_aware_classifier")
class PositionAwareClassifier(nn.Module):
    """Image backbone + slice-position MLP + fusion MLP -> ``n_outputs`` logits.

    Example:
        >>> net = PositionAwareClassifier("resnet18", n_outputs=6)
        >>> net(torch.zeros(2, 3, 64, 64), torch.tensor([0.0, 1.0])).shape
        torch.Size([2, 6])
    """

    def __init__(self, backbone: str = "resnet50", n_outputs: int = 6, in_channels: int = 3,
                 use_position: bool = True, position_dim: int = 64, fusion_dim: int = 256, dropout: float = 0.3,
                 pretrained: str | None = None, weights: str | None = None) -> None:
        super().__init__()
        self.backbone, feat_dim = BACKBONES.get(backbone)(in_channels=in_channels, pretrained=pretrained,
                                                          weights=weights)
        self.use_position = use_position
        self.position = nn.Sequential(nn.Linear(1, position_dim), nn.ReLU(inplace=True)) if use_position else None
        fused = feat_dim + (position_dim if use_position else 0)
        self.head = nn.Sequential(nn.Linear(fused, fusion_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(fusion_dim, n_outputs))

    def embed(self, image: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Features before the last linear layer (used by sequence heads and Grad-CAM)."""
        feats = self.backbone(image)
        if self.position is not None:
            if z is None:
                raise ValueError("this model uses slice position: pass z (z_normalized in [0, 1]) with the image")
            z = z.reshape(-1, 1).to(feats.dtype) * 2.0 - 1.0
            feats = torch.cat([feats, self.position(z)], dim=1)
        return self.head[:-1](feats)

    def forward(self, image: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return self.head[-1](self.embed(image, z))
