"""Config sections of the segmentation kind (:mod:`medtasks.tasks.kinds.segmentation`), shared by its tasks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from medtasks.config import ConfigError
from medtasks.schema import EvalConfig, TrainConfig


def check_lesion_eval(connectivity: int, iou_threshold: float) -> None:
    """The lesion-matching keys shared by the volumetric evaluations (ms_segment, cardiac calcium):
    ``connectivity`` of the 3-D components and the IoU rule's threshold (>= 0.5: one-to-one matching)."""
    if connectivity not in (1, 2, 3):
        raise ConfigError(f"connectivity: 1 (6-), 2 (18-) or 3 (26-connected), got {connectivity}")
    if not 0.5 <= iou_threshold < 1.0:
        raise ConfigError(f"iou_threshold: expected [0.5, 1) (one-to-one matching), got {iou_threshold}")


@dataclass
class SegLossConfig:
    name: Literal["bce_dice"] = "bce_dice"
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    batch_dice: bool = True                  # one Dice over the batch (empty slices add no 0/0 noise)
    pos_weight: Optional[float] = None       # up-weights lesion pixels in the BCE term


@dataclass
class SegEvalConfig(EvalConfig):
    """What the 2-D segmentation kind evaluates with (tasks add their own fields)."""

    tta_supported = False
    min_area: int = 20                       # seg -> classification: a slice is positive with >= this many predicted px
    save_masks: bool = True                  # masks/<case>.png of the evaluated split
    overlays: int = 8                        # slices per overlay grid (best / worst Dice, false positives)
    nsd_tolerance_mm: float = 2.0            # normalised surface Dice: boundary within this many mm counts as
                                             # correct (needs a pixel spacing; tasks set their own, see configs)

    def validate(self) -> None:
        super().validate()
        if self.min_area < 1:
            raise ConfigError(f"min_area: expected >= 1 pixel, got {self.min_area}")
        if not (math.isfinite(self.nsd_tolerance_mm) and self.nsd_tolerance_mm >= 0):
            raise ConfigError(f"nsd_tolerance_mm: expected a finite distance >= 0 mm, got {self.nsd_tolerance_mm}")


@dataclass
class SegTrainConfig(TrainConfig):
    monitor: str = "val_dice"
    monitor_mode: Literal["min", "max"] = "max"
