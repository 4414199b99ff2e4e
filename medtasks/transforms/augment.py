"""Training-time augmentation for 2-D windowed images, built from MONAI dictionary transforms.

The transforms expect channel-first images in [0, 1], i.e. the resized windows of
:class:`medtasks.transforms.ct_load.LoadCTWindowsd` (without ``mean``/``std``), *before* intensity
normalisation (brightness/contrast ranges and the erase fill value are in those
units). Pass the list as ``ct_window_pipeline(..., augment=build_augmentation(...))``
or insert it yourself between the resize and the channel normalisation.

Example:
    >>> from monai.transforms import Compose
    >>> aug = Compose(build_augmentation(["image"], {"hflip": 0.5, "rotate_deg": 10}, size=64))
    >>> _ = aug.set_random_state(seed=0)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import (
    CastToTyped,
    RandCoarseDropoutd,
    RandFlipd,
    RandGaussianNoised,
    RandRotated,
    RandScaleCropd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    ScaleIntensityRanged,
    Transform,
)

logger = logging.getLogger(__name__)

__all__ = ["AUGMENT_KEYS", "build_augmentation"]

# cfg key -> meaning; the default is "off" for every switch.
AUGMENT_KEYS: dict[str, str] = {
    "hflip": "probability of a left-right flip",
    "vflip": "probability of an up-down flip",
    "rotate_deg": "max rotation in degrees, uniform in [-d, d]",
    "rotate_prob": "probability of rotating (default 0.5)",
    "brightness": "additive shift, uniform in [-b, b] ([0, 1] image units)",
    "contrast": "multiplicative factor, uniform in [1 - c, 1 + c]",
    "noise_std": "std of additive Gaussian noise",
    "noise_prob": "probability of adding noise (default 0.5)",
    "resized_crop_scale": "[min_area_fraction, max_area_fraction] crop, resized back to size",
    "erasing_prob": "probability of erasing 1-3 rectangles of 2-20% of the side",
}
_ERASE_SIDE = (0.02, 0.20)  # hole side as a fraction of the image side
_ERASE_HOLES = (1, 3)


def _prob(cfg: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    value = cfg.get(key)
    value = default if value is None or value is False else float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"augmentation {key!r} must be a probability in [0, 1], got {value}")
    return value


def _magnitude(cfg: Mapping[str, Any], key: str) -> float:
    value = cfg.get(key)
    value = 0.0 if value is None or value is False else float(value)
    if value < 0:
        raise ValueError(f"augmentation {key!r} must be >= 0, got {value}")
    return value


def _crop_scale(cfg: Mapping[str, Any]) -> tuple[float, float] | None:
    value = cfg.get("resized_crop_scale")
    if value is None or value is False or value == 0:
        return None
    if isinstance(value, (int, float)):
        value = (float(value), 1.0)
    lo, hi = (float(v) for v in value)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"resized_crop_scale must satisfy 0 < min <= max <= 1, got {list(value)}")
    return lo, hi


def build_augmentation(keys: Sequence[str], cfg: Mapping[str, Any], size: int,
                       label_keys: Sequence[str] = ()) -> list[Transform]:
    """Build the random augmentation list described by ``cfg``.

    Every cfg key is optional and 0 / None / False switches its augmentation off, so an
    empty or all-zero cfg returns ``[]`` (identity). Order: resized crop, flips,
    rotation, contrast, brightness (then clipped back to [0, 1]), noise, erasing.
    Outputs keep spatial size ``(size, size)`` and dtype float32. Seed with
    ``Compose(transforms).set_random_state(seed)`` or each transform's
    ``set_random_state``.

    Notes:
        ``resized_crop_scale`` samples each side's fraction independently in
        ``[sqrt(min), sqrt(max)]`` (MONAI ``RandScaleCropd``), so the crop area lies in
        ``[min, max]`` and the aspect ratio varies, close to torchvision's
        RandomResizedCrop. Rotation pads with 0 (the window's lower bound).

    Args:
        keys: Image keys to augment.
        cfg: Switches, see :data:`AUGMENT_KEYS`.
        size: Side length of the images the list receives and returns.
        label_keys: Masks that follow every spatial step (crop, flips, rotation) with nearest
            interpolation, so they stay binary and aligned; intensity steps leave them alone.

    Returns:
        List of MONAI dictionary transforms.

    Raises:
        ValueError: Unknown cfg key (message lists the valid ones) or out-of-range value.

    Example:
        >>> [type(t).__name__ for t in build_augmentation(["image"], {"vflip": 0.5}, 32)]
        ['RandFlipd', 'CastToTyped']
    """
    unknown = sorted(set(cfg) - set(AUGMENT_KEYS))
    if unknown:
        raise ValueError(f"unknown augmentation key(s) {unknown}; valid keys: {sorted(AUGMENT_KEYS)}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    keys = list(keys)
    labels = list(label_keys)
    spatial = keys + labels
    modes = ["bilinear"] * len(keys) + ["nearest"] * len(labels)
    steps: list[Transform] = []

    if (scale := _crop_scale(cfg)) is not None and scale != (1.0, 1.0):
        side_lo, side_hi = math.sqrt(scale[0]), math.sqrt(scale[1])
        steps.append(RandScaleCropd(spatial, roi_scale=side_lo, max_roi_scale=side_hi, random_size=True))
        steps.append(Resized(spatial, spatial_size=(size, size), mode=["area"] * len(keys) + ["nearest"] * len(labels)))
    # Spatial axes of a (C, H, W) image: 0 = rows (vertical), 1 = columns (horizontal).
    if (p := _prob(cfg, "hflip")) > 0:
        steps.append(RandFlipd(spatial, prob=p, spatial_axis=1))
    if (p := _prob(cfg, "vflip")) > 0:
        steps.append(RandFlipd(spatial, prob=p, spatial_axis=0))
    if (deg := _magnitude(cfg, "rotate_deg")) > 0:
        p = _prob(cfg, "rotate_prob", 0.5)
        steps.append(
            RandRotated(spatial, range_x=math.radians(deg), prob=p, keep_size=True, padding_mode="zeros", mode=modes)
        )
    contrast, brightness = _magnitude(cfg, "contrast"), _magnitude(cfg, "brightness")
    if contrast > 0:
        # RandScaleIntensity multiplies by (1 + f), f ~ U[-c, c]: exactly the [1-c, 1+c] range.
        steps.append(RandScaleIntensityd(keys, factors=contrast, prob=1.0))
    if brightness > 0:
        steps.append(RandShiftIntensityd(keys, offsets=brightness, prob=1.0))
    if contrast > 0 or brightness > 0:
        # Keep the window semantics: values outside [0, 1] do not exist in a windowed image.
        steps.append(ScaleIntensityRanged(keys, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))
    if (std := _magnitude(cfg, "noise_std")) > 0:
        p = _prob(cfg, "noise_prob", 0.5)
        steps.append(RandGaussianNoised(keys, prob=p, mean=0.0, std=std, sample_std=False))
    if (p := _prob(cfg, "erasing_prob")) > 0:
        lo = max(1, round(_ERASE_SIDE[0] * size))
        hi = max(lo, round(_ERASE_SIDE[1] * size))
        steps.append(
            RandCoarseDropoutd(
                keys,
                holes=_ERASE_HOLES[0],
                max_holes=_ERASE_HOLES[1],
                spatial_size=lo,
                max_spatial_size=hi,
                fill_value=0.0,
                prob=p,
            )
        )
    if steps:
        # Some MONAI transforms keep the input dtype; pin float32 for the model.
        steps.append(CastToTyped(spatial, dtype=np.float32))
    logger.debug("augmentation: %s", [type(t).__name__ for t in steps])
    return steps
