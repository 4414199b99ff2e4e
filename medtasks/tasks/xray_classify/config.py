"""Config schema of ``xray_classify`` (values: ``medtasks/configs/xray_classify.yaml`` and ``.demo.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from medtasks.config import ConfigError, checked
from medtasks.tasks.kinds.grey_config import GradCamConfig, GreyClassifierConfig, GreyInputConfig, GreyModelConfig


@dataclass
class XrayModelConfig(GreyModelConfig):
    backbone: str = "resnet18"              # resnet18 | vgg16 (the report's two) or any registered backbone
    transfer: Literal["linear_probe", "partial", "finetune"] = "finetune"
    # partial: modules / Sequential ranges, e.g. backbone.features.1-30
    freeze: list[str] = field(default_factory=list)

    def validate(self) -> None:
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
    # weighted_ce: [w_normal, w_pneumonia]; null = balanced from train
    class_weights: Optional[list[float]] = checked(None, length=2, each=True, gt=0, note="[w_normal, w_pneumonia]")
    gamma: float = checked(2.0, ge=0)       # focal
    # focal: weight of the pneumonia class (1 - alpha for normal); null = none
    alpha: Optional[float] = checked(None, gt=0, lt=1)


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

    n_children: int = checked(150, ge=2)
    images_per_child: tuple[int, int] = checked((1, 3), each=True, ge=1, ascending=True)   # [min, max]
    pneumonia_fraction: float = checked(0.6, ge=0, le=1)
    size: int = checked(256, ge=32)         # pixels
    dicom: int = checked(4, ge=0)           # images also written as DICOM
    seed: int = checked(0, ge=0)


@dataclass
class XrayClassifyConfig(GreyClassifierConfig):
    task: str = "xray_classify"
    model: XrayModelConfig = field(default_factory=XrayModelConfig)
    input: XrayInputConfig = field(default_factory=XrayInputConfig)
    loss: XrayLossConfig = field(default_factory=XrayLossConfig)
    gradcam: GradCamConfig = field(default_factory=lambda: GradCamConfig(target_layer="auto"))
    resplit: ResplitConfig = field(default_factory=ResplitConfig)
    synth: XraySynthConfig = field(default_factory=XraySynthConfig)
