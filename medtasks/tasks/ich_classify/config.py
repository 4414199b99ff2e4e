"""Config schema of ``ich_classify`` (values: ``medtasks/configs/ich_classify.yaml`` and ``.demo.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from medtasks.config import ConfigError
from medtasks.schema import AugmentConfig, RunConfig

LABELS = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")


@dataclass
class IchModelConfig:
    name: Literal["position_aware_classifier"] = "position_aware_classifier"
    backbone: str = "resnet50"              # resnet50 | efficientnet_b4 | resnet18
    use_position: bool = True               # false = the report's image-only ablation
    position_dim: int = 64                  # position MLP 1 -> 64
    fusion_dim: int = 256                   # fusion MLP (features + 64) -> 256
    dropout: float = 0.3
    pretrained: Optional[Literal["imagenet"]] = None   # downloads torchvision weights (needs network)
    weights: Optional[str] = None           # local state-dict file (torchvision layout)

    def validate(self) -> None:
        from medtasks.models.backbones import check_backbone

        check_backbone(self.backbone)


@dataclass
class IchInputConfig:
    windows: list[tuple[float, float]] = field(default_factory=lambda: [(40.0, 80.0), (50.0, 130.0), (600.0, 2800.0)])
    size: int = 224                         # 224 for ResNet50, 380 for EfficientNet-B4
    # channel mean/std: fitted on train, ImageNet's, or none
    normalize: Literal["dataset", "imagenet", "none"] = "dataset"
    norm_samples: int = 256                 # training slices used to fit the dataset mean/std
    # 2.5-D: neighbours each side (1 = slices i-1, i, i+1 as channels per window)
    context: int = 0

    @property
    def channels(self) -> int:
        return len(self.windows) * (2 * self.context + 1)

    def validate(self) -> None:
        if not 0 <= self.context <= 5:
            raise ConfigError(f"context: neighbours per side in 0..5, got {self.context}")


@dataclass
class IchLossConfig:
    name: Literal["weighted_bce"] = "weighted_bce"
    class_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0, 1.0, 2.0])  # RSNA: any = 2
    # per-class positive weights: a list, or "prevalence" = negatives / positives of each label in the
    # (balanced) training rows, the report's minority-class weighting (l.263-265); null = none
    pos_weight: Union[Literal["prevalence"], list[float], None] = None
    label_smoothing: float = 0.0            # report: 0.05 (targets 0/1 -> eps/2, 1 - eps/2; training only)
    mixup_alpha: float = 0.0                # report: 0.2 (MixUp of images, targets and z per batch; 0 = off)

    def validate(self) -> None:
        pos = None if self.pos_weight == "prevalence" else self.pos_weight
        for name, v in (("class_weights", self.class_weights), ("pos_weight", pos)):
            if v is not None and len(v) != len(LABELS):
                raise ConfigError(f"{name}: expected {len(LABELS)} values (order {', '.join(LABELS)}), got {len(v)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing: expected a value in [0, 1), got {self.label_smoothing}")
        if self.mixup_alpha < 0:
            raise ConfigError(f"mixup_alpha: expected >= 0 (0 = off), got {self.mixup_alpha}")


@dataclass
class IchSynthConfig:
    n_patients: int = 40
    matrix: int = 256
    slices_per_series: tuple[int, int] = (24, 32)
    slice_thickness: float = 5.0
    p_hemorrhage: float = 0.6
    p_wrapped: float = 0.1
    min_lesion_mm2: float = 12.0  # label visibility floor: blood area below this in a slice is not labelled
    seed: int = 0


@dataclass
class SequenceConfig:
    """Stage 2: refine each slice from its series (needs cv.folds >= 2: it trains on out-of-fold outputs)."""

    enabled: bool = False
    kind: Literal["gru", "conv"] = "gru"    # bidirectional GRU or 1-D convolutions along z
    hidden: int = 32
    kernel: int = 5                         # conv width (odd)
    dropout: float = 0.1
    epochs: int = 30
    patience: int = 5
    lr: float = 3.0e-3
    weight_decay: float = 1.0e-4


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
