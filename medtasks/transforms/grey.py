"""The 2-D grey-image pipeline every 2-D classifier shares: file -> grey -> resize -> augment ->
channels -> channel mean/std -> tensor.

Augmenting before the channel replication keeps the replicated channels identical (noise
included) and costs a third of the work.

Example:
    >>> grey_pipeline(64)({"image": "0004_15.png"})["image"].shape  # doctest: +SKIP
    torch.Size([3, 64, 64])
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Compose, EnsureTyped, MapTransform, RepeatChanneld

from medtasks.io.images import read_grey
from medtasks.transforms.resize import NormalizeChannelsd, ResizeImaged

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class LoadGreyImaged(MapTransform):
    """Replace the file path under ``keys`` by ``reader(path)``: a ``(1, H, W)`` float array in [0, 1]."""

    def __init__(self, keys: KeysCollection, reader: Callable[[str | Path], np.ndarray] = read_grey,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reader = reader

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.reader(d[key])
        return d


def grey_pipeline(size: int, channels: int = 3, mean: list[float] | None = None, std: list[float] | None = None,
                  augment: list | None = None, reader: Callable[[str | Path], np.ndarray] = read_grey) -> Compose:
    """Image path -> ``(channels, size, size)`` float32 tensor (see the module docstring)."""
    steps = [LoadGreyImaged("image", reader), ResizeImaged("image", size, mode="area"), *(augment or [])]
    if channels > 1:
        steps.append(RepeatChanneld("image", repeats=channels))
    if mean is not None and std is not None:
        steps.append(NormalizeChannelsd("image", mean, std, as_tensor=True))
    steps.append(EnsureTyped("image", data_type="tensor", dtype=torch.float32, track_meta=False))
    return Compose(steps)


def grey_stats(records: list[dict], load: Callable[[dict], dict], channels: int, n_samples: int,
               seed: int) -> tuple[list[float], list[float]]:
    """Grey mean/std of up to ``n_samples`` records (seeded pick) after ``load`` (a deterministic pipeline
    giving ``{"image": (1, H, W)}``), repeated per channel."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(records), size=min(n_samples, len(records)), replace=False)
    stack = np.stack([np.asarray(load(dict(records[i]))["image"]) for i in sorted(pick)])
    return [round(float(stack.mean()), 6)] * channels, [round(max(float(stack.std()), 1e-6), 6)] * channels


def channel_normalisation(normalize: str, channels: int, stats: Callable[[], tuple[list[float], list[float]]]
                          ) -> dict[str, list[float]]:
    """``{"norm_mean", "norm_std"}`` for ``input.normalize``: ImageNet's (3 channels only), the training
    images' (``stats()`` is called only then) or none (``{}``)."""
    if normalize == "imagenet":
        if channels != 3:
            raise ValueError(f"input.normalize=imagenet needs input.channels=3, got {channels}")
        return {"norm_mean": list(IMAGENET_MEAN), "norm_std": list(IMAGENET_STD)}
    if normalize == "dataset":
        mean, std = stats()
        return {"norm_mean": mean, "norm_std": std}
    return {}
