"""Config schema of ``ms_segment`` (values: ``medtasks/configs/ms_segment.yaml`` and ``.demo.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medtasks.config import ConfigError, checked
from medtasks.models.segmentation import smp_encoders
from medtasks.registry import did_you_mean
from medtasks.schema import AugmentConfig, RunConfig
from medtasks.tasks.kinds.segmentation_config import SegEvalConfig, SegLossConfig, SegTrainConfig, check_lesion_eval
from medtasks.transforms.postprocess import LesionPostprocessConfig


@dataclass
class MsModelConfig:
    name: Literal["ms_unet", "smp_unet"] = "ms_unet"
    activation: Literal["relu", "leaky_relu", "sigmoid", "tanh"] = "leaky_relu"
    order: Literal["bn_act", "act_bn"] = "bn_act"
    convs_per_block: int = checked(2, ge=1, le=4, note="the report tried 2, 3, 4")
    max_channels: int = checked(1024, ge=1)
    softmax_head: bool = False
    base_channels: int = checked(64, ge=1)  # first block's width (the report: 64); the CPU demo narrows it
    encoder: str = "resnet34"               # smp_unet only (the comparison network): an smp encoder name

    def validate(self) -> None:
        if self.name == "smp_unet" and self.encoder not in (names := smp_encoders()):
            raise ConfigError(f"encoder: unknown smp encoder {self.encoder!r}.{did_you_mean(self.encoder, names)}")
        if self.max_channels < self.base_channels:
            raise ConfigError(f"max_channels: {self.max_channels} is below base_channels {self.base_channels}")


@dataclass
class MsInputConfig:
    size: int = 256                         # square side the network sees; metrics at the volume's own grid
    channels: Literal["replicate", "context"] = "replicate"   # grey x3 (the report) or 2.5-D neighbours
    # neighbours per side when channels=context (3 channels for 1)
    context: int = checked(1, ge=0)
    normalize: Literal["zscore", "percentile", "none"] = "zscore"   # per volume, over the non-zero (brain) voxels
    # share of lesion-free slices kept for training (1 = all)
    empty_slice_fraction: float = checked(1.0, ge=0, le=1)
    # slices with less brain than this (of the slice) are skipped
    min_brain_fraction: float = checked(0.02, ge=0, le=1)

    def validate(self) -> None:
        if self.size < 32 or self.size % 16:
            raise ConfigError(f"size: expected a multiple of 16 (>= 32), got {self.size}")

    @property
    def n_channels(self) -> int:
        return 3 if self.channels == "replicate" else 2 * self.context + 1


@dataclass
class MsEvalConfig(SegEvalConfig):
    tta_supported = False
    connectivity: int = 2                   # lesions: 3-D connected components, 2 = 18-connectivity (ISBI 2015)
    min_area: int = 1                       # slice call for the per-slice classification check
    save_masks: bool = True                 # masks/<subject>_<timepoint>.nii.gz of the evaluated volumes
    overlays: int = checked(8, ge=0)
    raters: bool = True                     # mask2 vs mask1 agreement when the manifest has mask2
    iou_threshold: float = 0.5              # the report's lesion rule: a match needs IoU > this (beside ISBI overlap)
    lesion_table: bool = True               # lesions.csv: one row per true / predicted lesion of the evaluated split

    def validate(self) -> None:
        super().validate()
        check_lesion_eval(self.connectivity, self.iou_threshold)


@dataclass
class MsSynthConfig:
    n_subjects: int = checked(12, ge=1)
    timepoints: int = checked(2, ge=1)
    seed: int = checked(0, ge=0)


@dataclass
class MsSegmentConfig(RunConfig):
    task: str = "ms_segment"
    model: MsModelConfig = field(default_factory=MsModelConfig)
    input: MsInputConfig = field(default_factory=MsInputConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: SegLossConfig = field(default_factory=SegLossConfig)
    train: SegTrainConfig = field(default_factory=SegTrainConfig)
    eval: MsEvalConfig = field(default_factory=MsEvalConfig)
    postprocess: LesionPostprocessConfig = field(default_factory=LesionPostprocessConfig)   # minimum lesion size
    synth: MsSynthConfig = field(default_factory=MsSynthConfig)
