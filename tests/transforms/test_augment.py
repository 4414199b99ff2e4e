"""Tests for medtasks.transforms.augment.build_augmentation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from medtasks.transforms.augment import AUGMENT_KEYS, build_augmentation

SIZE = 48
ALL_ON: dict[str, Any] = {
    "hflip": 0.5,
    "vflip": 0.5,
    "rotate_deg": 10,
    "rotate_prob": 0.5,
    "brightness": 0.1,
    "contrast": 0.1,
    "noise_std": 0.05,
    "noise_prob": 0.5,
    "resized_crop_scale": [0.5, 1.0],
    "erasing_prob": 0.5,
}
# The switches; rotate_prob / noise_prob only tune rotate_deg / noise_std.
SWITCHES = [k for k in ALL_ON if not k.endswith("_prob") or k == "erasing_prob"]


def _image(seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random((3, SIZE, SIZE), dtype=np.float32))


def _run(cfg: dict[str, Any], image: Any, seed: int = 0) -> torch.Tensor:
    aug = Compose(build_augmentation(["image"], cfg, SIZE))
    aug.set_random_state(seed=seed)
    return torch.as_tensor(aug({"image": image})["image"])


def test_all_on_shape_dtype_and_range() -> None:
    for seed in range(5):
        for image in (_image(seed), _image(seed).numpy(), _image(seed).double()):
            out = _run(ALL_ON, image, seed)
            assert tuple(out.shape) == (3, SIZE, SIZE) and out.dtype == torch.float32


def test_seeded_reproducibility() -> None:
    image = _image()
    assert torch.equal(_run(ALL_ON, image, seed=7), _run(ALL_ON, image, seed=7))
    assert not torch.equal(_run(ALL_ON, image, seed=7), _run(ALL_ON, image, seed=8))
    # Seeding the transforms one by one (no Compose) works too.
    transforms = build_augmentation(["image"], ALL_ON, SIZE)
    for t in transforms:
        if hasattr(t, "set_random_state"):
            t.set_random_state(seed=7)
    data = {"image": image}
    for t in transforms:
        data = t(data)
    assert tuple(data["image"].shape) == (3, SIZE, SIZE)


@pytest.mark.parametrize("off", [0, None, False])
def test_everything_off_is_identity(off: Any) -> None:
    cfg = {key: off for key in ALL_ON}
    assert build_augmentation(["image"], cfg, SIZE) == []
    assert build_augmentation(["image"], {}, SIZE) == []
    image = _image()
    assert torch.equal(Compose(build_augmentation(["image"], cfg, SIZE))({"image": image})["image"], image)


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_switch_alone(switch: str) -> None:
    assert build_augmentation(["image"], {switch: ALL_ON[switch]}, SIZE)
    out = _run({switch: ALL_ON[switch]}, _image())
    assert tuple(out.shape) == (3, SIZE, SIZE) and out.dtype == torch.float32
    # Turning just this one off removes exactly its transforms.
    cfg = dict(ALL_ON, **{switch: 0})
    assert len(build_augmentation(["image"], cfg, SIZE)) < len(build_augmentation(["image"], ALL_ON, SIZE))


def test_flip_directions() -> None:
    image = _image()
    torch.testing.assert_close(_run({"hflip": 1.0}, image), torch.flip(image, dims=[2]))
    torch.testing.assert_close(_run({"vflip": 1.0}, image), torch.flip(image, dims=[1]))


def test_intensity_ranges() -> None:
    flat = torch.full((3, SIZE, SIZE), 0.5)
    for seed in range(10):
        scaled = _run({"contrast": 0.1}, flat, seed)
        factor = float(scaled[0, 0, 0]) / 0.5
        assert 0.9 - 1e-6 <= factor <= 1.1 + 1e-6 and torch.allclose(scaled, scaled[0, 0, 0])
        shifted = _run({"brightness": 0.2}, flat, seed)
        assert 0.3 - 1e-6 <= float(shifted[0, 0, 0]) <= 0.7 + 1e-6
    # Windowed images stay within [0, 1] after brightness/contrast.
    bright = _run({"brightness": 0.9, "contrast": 0.5}, torch.ones(3, SIZE, SIZE), seed=1)
    assert float(bright.min()) >= 0.0 and float(bright.max()) <= 1.0


def test_noise_and_erasing_change_image() -> None:
    image = _image()
    noisy = _run({"noise_std": 0.1, "noise_prob": 1.0}, image)
    assert 0.05 < float((noisy - image).std()) < 0.15
    erased = _run({"erasing_prob": 1.0}, torch.ones(3, SIZE, SIZE))
    assert 0 < int((erased == 0).sum()) < erased.numel() / 2


def test_resized_crop_keeps_size_and_zooms() -> None:
    image = _image()
    out = _run({"resized_crop_scale": [0.3, 0.3]}, image)
    assert tuple(out.shape) == (3, SIZE, SIZE)
    assert not torch.equal(out, image)
    assert build_augmentation(["image"], {"resized_crop_scale": [1.0, 1.0]}, SIZE) == []


def test_invalid_config() -> None:
    with pytest.raises(ValueError) as info:
        build_augmentation(["image"], {"hflip": 0.5, "rotation": 10}, SIZE)
    message = str(info.value)
    assert "rotation" in message and all(key in message for key in AUGMENT_KEYS)
    for bad in ({"hflip": 1.5}, {"rotate_deg": -5}, {"resized_crop_scale": [0.0, 1.0]},
                {"resized_crop_scale": [0.8, 0.5]}, {"noise_std": 0.1, "noise_prob": 2}):
        with pytest.raises(ValueError):
            build_augmentation(["image"], bad, SIZE)
