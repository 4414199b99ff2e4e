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
    out = TTAWrapper(_Probe(), ["hflip", "vflip"], average="logit")(x, z)
    # top-left pixel seen: original 0, hflip 3, vflip 12 -> mean 5; z unchanged.
    assert out.tolist() == [[5.0, 0.25]]
    assert len(TTAWrapper(_Probe()).views) == 1 + len(DEFAULT_TTA)


def test_wrapper_averages_probabilities_by_default() -> None:
    """The report's TTA: the mean of the views' probabilities (returned as its logit), not the mean logit."""
    import math

    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0], x[0, 0, 0, 3], x[0, 0, 3, 0] = 4.0, -2.0, 40.0
    z = torch.tensor([0.0])
    out = TTAWrapper(_Probe(), ["hflip", "vflip"])(x, z)
    sig = [1 / (1 + math.exp(-v)) for v in (4.0, -2.0, 40.0)]
    assert float(torch.sigmoid(out[0, 0])) == pytest.approx(sum(sig) / 3, rel=1e-6)
    assert float(torch.sigmoid(out[0, 1])) == pytest.approx(0.5)     # z: three views of 0 -> p 0.5
    mean_logit = (4.0 - 2.0 + 40.0) / 3
    assert abs(float(out[0, 0]) - mean_logit) > 10                    # the two averages differ a lot here
    # every view saturated: a finite logit (clipped at 1e-15), never inf
    big = TTAWrapper(_Probe(), ["hflip"])(torch.full((1, 1, 2, 2), 80.0), z)
    assert torch.isfinite(big).all() and float(big[0, 0]) == pytest.approx(-math.log1p(-(1 - 1e-15)), rel=1e-6)
    with pytest.raises(ValueError, match="average"):
        TTAWrapper(_Probe(), ["hflip"], average="median")


def test_config_rejects_unknown_view() -> None:
    from medtasks.schema import EvalConfig

    with pytest.raises(ConfigError, match="tta_views"):
        EvalConfig(tta_views=["hflip", "zoom"]).validate()
