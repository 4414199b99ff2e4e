"""Series-level second stage: refine each slice's outputs from its neighbours along the series.

Every top RSNA ICH solution looked at neighbouring slices; this head does it cheaply on top of any
slice classifier. It reads the first stage's logits of a whole series in z order, ``(B, L, S)``
for ``L`` labels and ``S`` slices, and adds a correction computed by a bidirectional GRU or a
stack of 1-D convolutions. The correction layer starts at zero, so an untrained head is the
identity and training can only move away from the first stage where the sequence helps.

Example:
    >>> import torch
    >>> head = SeriesRefiner(n_labels=6, kind="gru")
    >>> x = torch.randn(1, 6, 20)
    >>> torch.allclose(head(x), x[0].T)   # identity at initialisation
    True
"""

from __future__ import annotations

import torch
from torch import nn

from medtasks.registry import MODELS

__all__ = ["SeriesRefiner"]


@MODELS.register("series_refiner")
class SeriesRefiner(nn.Module):
    """Residual sequence head; output ``(B * S, L)`` refined logits (series concatenated).

    Args:
        n_labels: Labels per slice (input and output channels).
        kind: ``"gru"`` (bidirectional GRU) or ``"conv"`` (two 1-D convolutions, receptive field
            ``2 * kernel - 1`` slices).
        hidden: GRU hidden size per direction / convolution channels.
        kernel: Convolution width (odd).
        dropout: Dropout before the correction layer.
    """

    def __init__(self, n_labels: int = 6, kind: str = "gru", hidden: int = 32, kernel: int = 5,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if kind not in ("gru", "conv"):
            raise ValueError(f"sequence head kind must be 'gru' or 'conv', got {kind!r}")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be odd and >= 1, got {kernel}")
        self.kind, self.n_labels = kind, n_labels
        if kind == "gru":
            self.rnn = nn.GRU(n_labels, hidden, batch_first=True, bidirectional=True)
            width = 2 * hidden
        else:
            self.conv = nn.Sequential(nn.Conv1d(n_labels, hidden, kernel, padding=kernel // 2), nn.ReLU(),
                                      nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2), nn.ReLU())
            width = hidden
        self.drop = nn.Dropout(dropout)
        self.correction = nn.Linear(width, n_labels)
        nn.init.zeros_(self.correction.weight)
        nn.init.zeros_(self.correction.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != self.n_labels:
            raise ValueError(f"expected (batch, {self.n_labels}, slices) logits, got {tuple(x.shape)}")
        seq = x.transpose(1, 2)  # (B, S, L)
        feats = self.rnn(seq)[0] if self.kind == "gru" else self.conv(x).transpose(1, 2)
        return (seq + self.correction(self.drop(feats))).reshape(-1, self.n_labels)
