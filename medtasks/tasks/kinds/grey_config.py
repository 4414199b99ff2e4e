"""Config sections of the grey-image classifier kind (:mod:`medtasks.tasks.kinds.grey_classifier`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from medtasks.config import ConfigError
from medtasks.schema import AugmentConfig, RunConfig


@dataclass
class GreyModelConfig:
    """A registered backbone + dropout + linear head (:class:`~medtasks.models.classifier.ImageClassifier`)."""

    backbone: str = "resnet18"              # any registered backbone (resnet18 | resnet50 | efficientnet_b4)
    dropout: float = 0.0                    # before the one-logit linear head
    pretrained: Optional[Literal["imagenet"]] = None   # downloads torchvision weights (needs network)
    weights: Optional[str] = None           # local state-dict file (torchvision layout)

    def validate(self) -> None:
        from medtasks.models.backbones import check_backbone

        check_backbone(self.backbone)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: expected a value in [0, 1), got {self.dropout}")


@dataclass
class GreyInputConfig:
    """The grey pipeline's input: side, replicated channels, channel normalisation."""

    size: int = 224                         # square input side after resizing the 512x512 PNG
    channels: int = 3                       # the grey slice replicated (3 = what ImageNet ResNets expect)
    # channel mean/std: fitted on train, ImageNet's, or none
    normalize: Literal["dataset", "imagenet", "none"] = "dataset"
    norm_samples: int = 256                 # training slices used to fit the dataset mean/std

    def validate(self) -> None:
        if self.size < 16:
            raise ConfigError(f"size: expected >= 16 pixels, got {self.size}")
        if self.channels < 1:
            raise ConfigError(f"channels: expected >= 1, got {self.channels}")


@dataclass
class GradCamConfig:
    """Grad-CAM overlays of test-split TP / FP / FN slices, written after evaluation."""

    enabled: bool = True
    per_kind: int = 4                       # slices shown per kind (most confident TPs / FPs, most missed FNs)
    target_layer: str = "backbone.layer4"   # module name in the network (ResNet: its last conv stage)
    alpha: float = 0.45                     # heatmap opacity

    def validate(self) -> None:
        if self.per_kind < 1:
            raise ConfigError(f"per_kind: expected >= 1, got {self.per_kind}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha: expected a value in [0, 1], got {self.alpha}")


@dataclass
class BinaryLossConfig:
    """The kind's default loss: BCE on one logit (``weighted_bce`` with one class)."""

    name: Literal["weighted_bce"] = "weighted_bce"   # one label: plain BCEWithLogits
    pos_weight: Optional[float] = None      # up-weights PHE-positive slices (e.g. negatives/positives ~ 3.8)
    label_smoothing: float = 0.0

    def validate(self) -> None:
        if self.pos_weight is not None and not self.pos_weight > 0:
            raise ConfigError(f"pos_weight: expected > 0 (or null), got {self.pos_weight}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing: expected a value in [0, 1), got {self.label_smoothing}")


@dataclass
class GreyClassifierConfig(RunConfig):
    """The sections every grey-image classifier reads; a task adds ``task``, ``loss`` and ``synth``."""

    model: GreyModelConfig = field(default_factory=GreyModelConfig)
    input: GreyInputConfig = field(default_factory=GreyInputConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    gradcam: GradCamConfig = field(default_factory=GradCamConfig)
