"""Config schema of ``phe_segment`` (values: ``medtasks/configs/phe_segment.yaml`` and ``.demo.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from medtasks.config import ConfigError, checked
from medtasks.models.segmentation import smp_encoders
from medtasks.schema import AugmentConfig, RunConfig
from medtasks.tasks.kinds.segmentation_config import SegEvalConfig, SegLossConfig, SegTrainConfig
from medtasks.tasks.sources.phe_sich import PheSynthConfig


@dataclass
class SegModelConfig:
    name: Literal["smp_unet"] = "smp_unet"
    # any segmentation-models-pytorch encoder name
    encoder: str = checked("resnet34", options=smp_encoders, what="smp encoder")
    encoder_weights: Optional[Literal["imagenet"]] = None   # downloads the encoder's weights (needs network)
    weights: Optional[str] = None           # a saved whole-network state dict (e.g. a medtasks best.pt)


@dataclass
class SegInputConfig:
    source: Literal["jpg", "png", "nifti"] = "jpg"  # JPG slice + JPG mask (SubdatasetB, the notes'), PNG slice + PNG
                                             # mask (SubdatasetC label folder, when present), or NIfTI axial slices
    size: int = 256                          # square side the model sees; metrics are computed at native size
    channels: int = checked(3, ge=1)         # grey replicated (3 = what ImageNet encoders expect)
    normalize: Literal["dataset", "imagenet", "none"] = "dataset"
    norm_samples: int = checked(256, ge=1)
    window_level: float = 40.0               # NIfTI (HU) only: the brain window the PNGs were exported with
    window_width: float = checked(80.0, gt=0)

    def validate(self) -> None:
        if self.size < 32 or self.size % 32:
            raise ConfigError(f"size: a U-Net with 5 downsamplings needs a multiple of 32 (>= 32), got {self.size}")


@dataclass
class PheSegEvalConfig(SegEvalConfig):
    spacing_from_header: bool = True         # HD95/ASSD/NSD in mm from the row's NIfTI header (nifti_volume) when
                                             # it has one, whatever input.source (the slices share its grid)
    pixel_spacing_mm: Optional[float] = checked(None, gt=0)   # else this (PHE-SICH: ~0.5 mm); null and no
                                             # header = pixels


@dataclass
class PheSegmentConfig(RunConfig):
    task: str = "phe_segment"
    model: SegModelConfig = field(default_factory=SegModelConfig)
    input: SegInputConfig = field(default_factory=SegInputConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: SegLossConfig = field(default_factory=SegLossConfig)
    train: SegTrainConfig = field(default_factory=SegTrainConfig)
    eval: PheSegEvalConfig = field(default_factory=PheSegEvalConfig)
    synth: PheSynthConfig = field(default_factory=PheSynthConfig)
