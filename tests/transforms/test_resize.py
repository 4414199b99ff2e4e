"""Fast 2-D resize and channel normalisation against hand computations and MONAI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import NormalizeIntensityd

from medtasks.transforms.resize import NormalizeChannelsd, ResizeImaged, resize_2d


def test_area_integer_factor_is_exact_box_mean() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 512, 512)).astype(np.float32)
    out = resize_2d(img, 256)
    ref = img.reshape(2, 256, 2, 256, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    assert out.dtype == np.float32 and out.shape == (2, 256, 256)


def test_area_non_integer_factor_is_antialiased() -> None:
    # A 1-pixel checkerboard has mean 0.5 everywhere at any coarser scale: area keeps it flat,
    # plain bilinear sampling aliases it into stripes of 0s and 1s.
    board = (np.indices((512, 512)).sum(0) % 2).astype(np.float32)[None]
    area = resize_2d(board, 224)
    assert area.shape == (1, 224, 224)
    assert np.abs(area - 0.5).max() < 0.1
    assert np.abs(resize_2d(board, 224, "bilinear") - 0.5).max() > 0.3


def test_area_preserves_a_smooth_ramp_and_constant() -> None:
    ramp = np.tile(np.linspace(-1000, 1000, 512, dtype=np.float32), (512, 1))
    out = resize_2d(ramp, (224, 224))
    centres = (np.arange(224) + 0.5) * 512 / 224 - 0.5
    expected = np.interp(centres, np.arange(512), ramp[0])
    np.testing.assert_allclose(out[100], expected, atol=3.0)  # 4 HU per input pixel
    np.testing.assert_allclose(resize_2d(np.full((3, 300, 200), 7.0), (50, 60)), 7.0, rtol=1e-6)


def test_enlarge_nearest_and_dtypes() -> None:
    labels = np.array([[0, 1], [2, 3]], dtype=np.int64)[None]
    up = resize_2d(labels, 4, "nearest")
    assert up.dtype == np.int64
    np.testing.assert_array_equal(up[0], np.kron(labels[0], np.ones((2, 2), np.int64)))
    assert resize_2d(np.zeros((1, 5, 5), np.int16), 10).dtype == np.float32
    with pytest.raises(ValueError, match="mode"):
        resize_2d(labels, 4, "cubic")
    with pytest.raises(ValueError, match="size"):
        resize_2d(labels, (4, 0))


def test_resize_imaged_tensor_and_numpy() -> None:
    img = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
    out_np = ResizeImaged("image", 4)({"image": img})["image"]
    out_t = ResizeImaged("image", 4)({"image": torch.from_numpy(img)})["image"]
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_array_equal(out_np, out_t.numpy())
    assert out_np[0, 0, 0] == pytest.approx((0 + 1 + 8 + 9) / 4)


def test_normalize_channels_matches_monai() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((3, 16, 16)).astype(np.float32)
    mean, std = [0.2, 0.4, 0.6], [0.1, 0.2, 0.3]
    ours = NormalizeChannelsd("image", mean, std)({"image": img})["image"]
    ref = NormalizeIntensityd("image", subtrahend=np.array(mean), divisor=np.array(std), channel_wise=True)(
        {"image": img.copy()})["image"]  # MONAI normalises a numpy input in place
    np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-6, atol=1e-6)
    as_t = NormalizeChannelsd("image", mean, std, as_tensor=True)({"image": img})["image"]
    assert type(as_t) is torch.Tensor
    np.testing.assert_allclose(as_t.numpy(), ours)
    np.testing.assert_allclose(
        NormalizeChannelsd("image", mean, std)({"image": torch.from_numpy(img)})["image"].numpy(),
        ours, rtol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        NormalizeChannelsd("image", [0.0], [1.0])({"image": img})
    with pytest.raises(ValueError, match="std"):
        NormalizeChannelsd("image", [0.0], [0.0])
