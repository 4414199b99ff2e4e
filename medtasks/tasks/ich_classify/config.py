"""Config schema of ``ich_classify`` (values: ``medtasks/configs/ich_classify.yaml`` and ``.demo.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

import medtasks.models  # noqa: F401  (registers the backbones model.backbone is checked against)
from medtasks.config import ConfigError, checked
from medtasks.registry import BACKBONES
from medtasks.schema import AugmentConfig, RunConfig

LABELS = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")


@dataclass
class IchModelConfig:
    name: Literal["position_aware_classifier"] = "position_aware_classifier"
    backbone: str = checked("resnet50", options=BACKBONES)   # resnet50 | efficientnet_b4 | resnet18 | resnet10
    use_position: bool = True               # false = the report's image-only ablation
    position_dim: int = checked(64, ge=1)   # position MLP 1 -> 64
    fusion_dim: int = checked(256, ge=1)    # fusion MLP (features + 64) -> 256
    dropout: float = checked(0.3, ge=0, lt=1)
    pretrained: Optional[Literal["imagenet"]] = None   # downloads torchvision weights (needs network)
    weights: Optional[str] = None           # local state-dict file (torchvision layout)


@dataclass
class IchInputConfig:
    windows: list[tuple[float, float]] = field(default_factory=lambda: [(40.0, 80.0), (50.0, 130.0), (600.0, 2800.0)])
    size: int = checked(224, ge=16)         # 224 for ResNet50, 380 for EfficientNet-B4
    # channel mean/std: fitted on train, ImageNet's, or none
    normalize: Literal["dataset", "imagenet", "none"] = "dataset"
    norm_samples: int = checked(256, ge=1)  # training slices used to fit the dataset mean/std
    # 2.5-D: neighbours each side (1 = slices i-1, i, i+1 as channels per window)
    context: int = checked(0, ge=0, le=5, note="neighbours per side")

    @property
    def channels(self) -> int:
        return len(self.windows) * (2 * self.context + 1)

    def validate(self) -> None:
        if not self.windows:
            raise ConfigError("windows: expected at least one [level, width] CT window")
        for i, (level, width) in enumerate(self.windows):
            if not width > 0:
                raise ConfigError(f"windows[{i}]: the width must be > 0 HU, got [{level}, {width}]")


@dataclass
class IchLossConfig:
    name: Literal["weighted_bce"] = "weighted_bce"
    class_weights: list[float] = checked(factory=lambda: [1.0, 1.0, 1.0, 1.0, 1.0, 2.0],   # RSNA: any = 2
                                         each=True, ge=0)
    # per-class positive weights: a list, or "prevalence" = negatives / positives of each label in the
    # (balanced) training rows, the report's minority-class weighting (l.263-265); null = none
    pos_weight: Union[Literal["prevalence"], list[float], None] = checked(None, each=True, gt=0)
    label_smoothing: float = checked(0.0, ge=0, lt=1)   # report: 0.05 (targets 0/1 -> eps/2, 1 - eps/2; training)
    mixup_alpha: float = checked(0.0, ge=0, note="0 = off")   # report: 0.2 (MixUp of images, targets and z)

    def validate(self) -> None:
        pos = None if self.pos_weight == "prevalence" else self.pos_weight
        for name, v in (("class_weights", self.class_weights), ("pos_weight", pos)):
            if v is not None and len(v) != len(LABELS):
                raise ConfigError(f"{name}: expected {len(LABELS)} values (order {', '.join(LABELS)}), got {len(v)}")


@dataclass
class IchSynthConfig:
    n_patients: int = checked(40, ge=1)
    matrix: int = checked(256, ge=32)
    slices_per_series: tuple[int, int] = checked((24, 32), each=True, ge=1, ascending=True)   # [min, max]
    slice_thickness: float = checked(5.0, gt=0)   # mm
    p_hemorrhage: float = checked(0.6, ge=0, le=1)
    p_wrapped: float = checked(0.1, ge=0, le=1)
    # label visibility floor: blood area below this in a slice is not labelled
    min_lesion_mm2: float = checked(12.0, ge=0)
    seed: int = checked(0, ge=0)


@dataclass
class SequenceConfig:
    """Stage 2: refine each slice from its series (needs cv.folds >= 2: it trains on out-of-fold outputs)."""

    enabled: bool = False
    kind: Literal["gru", "conv"] = "gru"    # bidirectional GRU or 1-D convolutions along z
    hidden: int = checked(32, ge=1)
    kernel: int = checked(5, ge=1)          # conv width (odd)
    dropout: float = checked(0.1, ge=0, lt=1)
    epochs: int = checked(30, ge=1)
    patience: int = checked(5, ge=0)
    lr: float = checked(3.0e-3, gt=0)
    weight_decay: float = checked(1.0e-4, ge=0)

    def validate(self) -> None:
        if self.kernel % 2 == 0:
            raise ConfigError(f"kernel: expected an odd width (the output keeps the series length), got {self.kernel}")


@dataclass
class IchConfig(RunConfig):
    task: str = "ich_classify"
    model: IchModelConfig = field(default_factory=IchModelConfig)
    input: IchInputConfig = field(default_factory=IchInputConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: IchLossConfig = field(default_factory=IchLossConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    synth: IchSynthConfig = field(default_factory=IchSynthConfig)

    def validate(self) -> None:
        super().validate()
        if self.sequence.enabled and self.cv.folds < 2:
            raise ConfigError("sequence.enabled: the sequence head trains on out-of-fold outputs; set cv.folds >= 2")
