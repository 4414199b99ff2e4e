"""Test-time augmentation: views and averaging against hand-made expectations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medtasks.config import ConfigError
from medtasks.engine.tta import DEFAULT_TTA, TTAWrapper, apply_view, parse_view


class _Probe(nn.Module):
    """Returns the pixel at (0, 0) and the extra input: shows which view the network saw."""

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0, 0, 0], z], dim=1)


def test_views_move_pixels_where_expected() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 4] = 1.0   # top-right corner
    assert apply_view(x, ("hflip", 0))[0, 0, 0, 0] == 1.0
    assert apply_view(x, ("vflip", 0))[0, 0, 4, 4] == 1.0
    bar = torch.zeros(1, 1, 9, 9)
    bar[0, 0, 4, :] = 1.0  # horizontal bar -> vertical after 90 degrees
    rot = apply_view(bar, ("rotate", 90.0))
    assert torch.allclose(rot[0, 0, :, 4], torch.ones(9), atol=1e-5) and rot[0, 0, 4, 0] == 0.0
    assert parse_view("rotate:-10") == ("rotate", -10.0)
    for bad in ("rotate:x", "zoom"):
        with pytest.raises(ValueError, match="TTA view"):
            parse_view(bad)


def test_wrapper_averages_views_and_passes_extra_inputs() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    z = torch.tensor([0.25])
    out = TTAWrapper(_Probe(), ["hflip", "vflip"])(x, z)
    # top-left pixel seen: original 0, hflip 3, vflip 12 -> mean 5; z unchanged.
    assert out.tolist() == [[5.0, 0.25]]
    assert len(TTAWrapper(_Probe()).views) == 1 + len(DEFAULT_TTA)


def test_config_rejects_unknown_view() -> None:
    from medtasks.schema import EvalConfig

    with pytest.raises(ConfigError, match="tta_views"):
        EvalConfig(tta_views=["hflip", "zoom"]).validate()
