"""Config schema of ``xray_classify`` (values: ``medtasks/configs/xray_classify.yaml`` and ``.demo.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from medtasks.config import ConfigError
from medtasks.tasks.kinds.grey_config import GradCamConfig, GreyClassifierConfig, GreyInputConfig, GreyModelConfig


@dataclass
class XrayModelConfig(GreyModelConfig):
    backbone: str = "resnet18"              # resnet18 | vgg16 (the report's two) or any registered backbone
    transfer: Literal["linear_probe", "partial", "finetune"] = "finetune"
    # partial: modules / Sequential ranges, e.g. backbone.features.1-30
    freeze: list[str] = field(default_factory=list)

    def validate(self) -> None:
        super().validate()
        if self.transfer == "partial" and not self.freeze:
            raise ConfigError("freeze: transfer=partial needs the modules to freeze, e.g. ['backbone.features.1-30']")
        if self.transfer != "partial" and self.freeze:
            raise ConfigError(f"freeze: only used with transfer=partial (transfer is {self.transfer})")


@dataclass
class XrayInputConfig(GreyInputConfig):
    voi: bool = False                       # DICOM: apply the file's VOI LUT / window instead of the stored bit range


@dataclass
class XrayLossConfig:
    name: Literal["ce", "weighted_ce", "focal"] = "ce"
    class_weights: Optional[list[float]] = None   # weighted_ce: [w_normal, w_pneumonia]; null = balanced from train
    gamma: float = 2.0                      # focal
    alpha: Optional[float] = None           # focal: weight of the pneumonia class (1 - alpha for normal); null = none

    def validate(self) -> None:
        if self.class_weights is not None and (len(self.class_weights) != 2 or min(self.class_weights) <= 0):
            raise ConfigError(f"class_weights: expected [w_normal, w_pneumonia] > 0, got {self.class_weights}")
        if self.gamma < 0:
            raise ConfigError(f"gamma: expected >= 0, got {self.gamma}")
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise ConfigError(f"alpha: expected a value in (0, 1) or null, got {self.alpha}")


@dataclass
class ResplitConfig:
    """How the release's folders become splits. ``grouped``: pool every image and split by child
    (data.split fractions); ``official_test``: keep the release's test folder as the test split
    (comparable with published numbers), split the rest by child into train / val, and drop
    training images of children who also appear in the test folder (the release leaks some); ``release``:
    the release's train / val / test folders as they are (the report's protocol: 16 validation images, and
    children shared between the folders)."""

    mode: Literal["grouped", "official_test", "release"] = "grouped"


@dataclass
class XraySynthConfig:
    """Embedded default: :func:`medtasks.synth.chest_xray.generate_chest_xray` parameters."""

    n_children: int = 150
    images_per_child: tuple[int, int] = (1, 3)
    pneumonia_fraction: float = 0.6
    size: int = 256
    dicom: int = 4
    seed: int = 0


@dataclass
class XrayClassifyConfig(GreyClassifierConfig):
    task: str = "xray_classify"
    model: XrayModelConfig = field(default_factory=XrayModelConfig)
    input: XrayInputConfig = field(default_factory=XrayInputConfig)
    loss: XrayLossConfig = field(default_factory=XrayLossConfig)
    gradcam: GradCamConfig = field(default_factory=lambda: GradCamConfig(target_layer="auto"))
    resplit: ResplitConfig = field(default_factory=ResplitConfig)
    synth: XraySynthConfig = field(default_factory=XraySynthConfig)
