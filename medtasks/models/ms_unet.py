"""The MS-lesion report's U-Net (``seeds/ms_lesion_unet_report.txt``), with its ablation switches.

Blocks are ``DoubleConv``: ``[Conv3x3 -> BatchNorm -> activation] x convs_per_block`` (``order:
act_bn`` puts the activation before the BatchNorm, the report's table 4-6). The encoder doubles the
channels from 64 up to ``max_channels`` (512: 64-128-256-512, 1024: 64-...-1024, the report's
table 4-9) with 2x2 max-pooling between blocks; the decoder upsamples bilinearly (x2) and
concatenates the skip (the report's "512 + 256, 256 + 128, 128 + 64"), then a 1x1 conv gives one
output channel: logits, no activation. Each table of the report is one switch:

==================  =======================================  ===================
switch              values                                   report's choice
==================  =======================================  ===================
``activation``      relu | leaky_relu | sigmoid | tanh        leaky_relu (4-1)
``order``           bn_act | act_bn                          bn_act (4-6)
``softmax_head``    false | true                             false (4-7)
``convs_per_block`` 2 | 3 | 4                                2 (4-8)
``max_channels``    512 | 1024                               1024 (4-9)
==================  =======================================  ===================

``softmax_head: true`` applies a softmax over the channel axis of the one-channel output, as the
report's variant did: over one channel it is the constant 1, so the network cannot express a
mask at all (the report: Dice 0.0000). Read as a logit by the loss, 1 gives sigmoid 0.73 > 0.5:
every pixel is called lesion and the Dice collapses to the lesion fraction — the report's failure
by construction (their figure shows no mask; the constant lands on one side of the threshold).
``base_channels`` (64 in the report) scales every width, keeping the depth that ``max_channels`` sets:
``base_channels=16, max_channels=1024`` is the report's 5-level network at a quarter of its widths.

Example:
    >>> net = MsUNet(in_channels=3, max_channels=512)
    >>> net(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 1, 64, 64])
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from medtasks.registry import MODELS

__all__ = ["ACTIVATIONS", "DoubleConv", "MsUNet"]

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")
REPORT_BASE = 64


def _activation(name: str, negative_slope: float) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope, inplace=True)
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"model.activation={name!r}: use one of {', '.join(ACTIVATIONS)}")


class DoubleConv(nn.Sequential):
    """``[Conv3x3 -> BN -> act] x n`` (``order="act_bn"``: ``Conv3x3 -> act -> BN``)."""

    def __init__(self, in_channels: int, out_channels: int, n: int = 2, activation: str = "leaky_relu",
                 order: str = "bn_act", negative_slope: float = 0.01) -> None:
        if order not in ("bn_act", "act_bn"):
            raise ValueError(f"model.order={order!r}: use bn_act or act_bn")
        layers: list[nn.Module] = []
        for i in range(n):
            layers.append(nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1))
            pair = [nn.BatchNorm2d(out_channels), _activation(activation, negative_slope)]
            layers += pair if order == "bn_act" else pair[::-1]
        super().__init__(*layers)


class MsUNet(nn.Module):
    """See the module docstring. Input sides must be divisible by ``2 ** (depth - 1)`` (16 for 1024)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, activation: str = "leaky_relu",
                 order: Literal["bn_act", "act_bn"] = "bn_act", convs_per_block: int = 2, max_channels: int = 1024,
                 softmax_head: bool = False, base_channels: int = 64, negative_slope: float = 0.01) -> None:
        super().__init__()
        if convs_per_block < 1:
            raise ValueError(f"model.convs_per_block must be >= 1, got {convs_per_block}")
        # max_channels sets the depth as in the report (64 -> 512: 4 blocks, 64 -> 1024: 5); base_channels scales
        # every width by base_channels / 64 (64 = the report's network; 16 = a quarter, for a CPU)
        levels = (max_channels // REPORT_BASE).bit_length()
        if max_channels < REPORT_BASE or REPORT_BASE << (levels - 1) != max_channels:
            raise ValueError(f"model.max_channels={max_channels}: "
                             "expected 64 x a power of 2 (512 or 1024 in the report)")
        widths = [base_channels << i for i in range(levels)]
        block = dict(n=convs_per_block, activation=activation, order=order, negative_slope=negative_slope)
        self.down = nn.ModuleList([DoubleConv(in_channels if i == 0 else widths[i - 1], w, **block)
                                   for i, w in enumerate(widths)])
        self.up = nn.ModuleList([DoubleConv(widths[i + 1] + widths[i], widths[i], **block)
                                 for i in reversed(range(len(widths) - 1))])
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        self.softmax_head = bool(softmax_head)
        self.factor = 2 ** (len(widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"input {tuple(x.shape[-2:])} must be divisible by {self.factor} (the network pools "
                             f"{self.factor.bit_length() - 1} times); resize or pad the slices")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            x = block(torch.cat([skips.pop(), self.upsample(x)], dim=1))
        out = self.head(x)
        return torch.softmax(out, dim=1) if self.softmax_head else out


@MODELS.register("ms_unet")
def ms_unet(in_channels: int = 3, out_channels: int = 1, activation: str = "leaky_relu", order: str = "bn_act",
            convs_per_block: int = 2, max_channels: int = 1024, softmax_head: bool = False,
            base_channels: int = 64) -> MsUNet:
    """The registered factory of :class:`MsUNet` (config keys = arguments)."""
    return MsUNet(in_channels, out_channels, activation, order, convs_per_block, max_channels, softmax_head,
                  base_channels)
