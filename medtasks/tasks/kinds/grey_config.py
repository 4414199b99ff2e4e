"""Config sections of the grey-image classifier kind (:mod:`medtasks.tasks.kinds.grey_classifier`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import medtasks.models  # noqa: F401  (registers the backbones model.backbone is checked against)
from medtasks.config import checked
from medtasks.registry import BACKBONES
from medtasks.schema import AugmentConfig, RunConfig


@dataclass
class GreyModelConfig:
    """A registered backbone + dropout + linear head (:class:`~medtasks.models.classifier.ImageClassifier`)."""

    # any registered backbone (resnet18 | resnet50 | efficientnet_b4 | vgg16 | resnet10)
    backbone: str = checked("resnet18", options=BACKBONES)
    dropout: float = checked(0.0, ge=0, lt=1)   # before the one-logit linear head
    pretrained: Optional[Literal["imagenet"]] = None   # downloads torchvision weights (needs network)
    weights: Optional[str] = None           # local state-dict file (torchvision layout)


@dataclass
class GreyInputConfig:
    """The grey pipeline's input: side, replicated channels, channel normalisation."""

    size: int = checked(224, ge=16)         # square input side (pixels) after resizing the 512x512 PNG
    channels: int = checked(3, ge=1)        # the grey slice replicated (3 = what ImageNet ResNets expect)
    # channel mean/std: fitted on train, ImageNet's, or none
    normalize: Literal["dataset", "imagenet", "none"] = "dataset"
    norm_samples: int = checked(256, ge=1)  # training slices used to fit the dataset mean/std


@dataclass
class GradCamConfig:
    """Grad-CAM overlays of test-split TP / FP / FN slices, written after evaluation."""

    enabled: bool = True
    per_kind: int = checked(4, ge=1)        # slices shown per kind (most confident TPs / FPs, most missed FNs)
    target_layer: str = "backbone.layer4"   # module name in the network (ResNet: its last conv stage)
    alpha: float = checked(0.45, ge=0, le=1)   # heatmap opacity


@dataclass
class BinaryLossConfig:
    """The kind's default loss: BCE on one logit (``weighted_bce`` with one class)."""

    name: Literal["weighted_bce"] = "weighted_bce"   # one label: plain BCEWithLogits
    # up-weights PHE-positive slices (e.g. negatives/positives ~ 3.8); null = none
    pos_weight: Optional[float] = checked(None, gt=0)
    label_smoothing: float = checked(0.0, ge=0, lt=1)


@dataclass
class GreyClassifierConfig(RunConfig):
    """The sections every grey-image classifier reads; a task adds ``task``, ``loss`` and ``synth``."""

    model: GreyModelConfig = field(default_factory=GreyModelConfig)
    input: GreyInputConfig = field(default_factory=GreyInputConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    gradcam: GradCamConfig = field(default_factory=GradCamConfig)
