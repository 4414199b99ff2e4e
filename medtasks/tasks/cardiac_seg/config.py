"""Config schema of ``cardiac_seg`` (values: ``medtasks/configs/cardiac_seg.yaml`` and ``.demo.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from medtasks.config import ConfigError
from medtasks.schema import EvalConfig, RunConfig
from medtasks.tasks.kinds.segmentation_config import check_lesion_eval
from medtasks.transforms.postprocess import LesionPostprocessConfig

CLASSES = {1: "myocardium", 2: "aortic_valve", 3: "calcification"}   # label values of the AI CUP masks
STAGES = ("class12", "class3", "gate")


@dataclass
class SegStageConfig:
    """One SwinUNETR branch: its network, patches, loss, optimiser and stopping rule."""

    model: Literal["swinunetr", "basic_unet_3d"] = "swinunetr"   # the report's SwinUNETR; basic_unet_3d: CPU demos
    feature_size: int = 48
    patch: int = 96                          # cubic patch side (multiple of 32)
    num_samples: int = 2                     # patches drawn per volume per step (RandCropByLabelClassesd)
    ratios: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])   # patch centre odds per class
    loss: Literal["dice_ce", "tversky", "dice_focal"] = "dice_ce"
    tversky_alpha: float = 0.3               # tversky: weight of false positives
    tversky_beta: float = 0.7                # tversky: weight of false negatives (> alpha leans to recall)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"   # the report: AdamW
    lr: float = 1.0e-4
    weight_decay: float = 1.0e-5
    momentum: float = 0.9                    # sgd only
    scheduler: Literal["plateau", "cosine", "none"] = "none"   # the report: a constant learning rate
    epochs: int = 300
    patience: int = 20                       # epochs without a better validation score
    steps_per_epoch: Optional[int] = None
    batch_size: int = 1
    use_checkpoint: bool = False             # gradient checkpointing (GPU memory)
    negatives_per_positive: Optional[float] = None   # training volumes without the target class per one with it
                                                     # (null = all; class3: the report trained "mostly on positives")
    ignore_classes: list[int] = field(default_factory=list)   # class12 only: label values left out of the loss
                                                     # ([] = class 3 relabelled background; report: [0, 3])

    def validate(self) -> None:
        if self.model == "swinunetr":
            if self.patch < 64 or self.patch % 32:
                raise ConfigError(f"patch: SwinUNETR needs a multiple of 32 of at least 64 (it downsamples 5 times), "
                                  f"got {self.patch}")
            if self.feature_size % 12:
                raise ConfigError(f"feature_size: a multiple of 12 for SwinUNETR, got {self.feature_size}")
        elif self.patch < 32 or self.patch % 16:
            raise ConfigError(f"patch: {self.model} needs a multiple of 16 of at least 32 (it downsamples 4 times), "
                              f"got {self.patch}")
        bad = sorted(set(self.ignore_classes) - set(CLASSES) - {0})
        if bad or {1, 2} <= set(self.ignore_classes):
            raise ConfigError(f"ignore_classes: label values among 0 (background) and 3 (calcium), at most one of "
                              f"1 and 2, got {self.ignore_classes}")
        if self.ignore_classes and self.loss != "dice_ce":
            raise ConfigError(f"ignore_classes: only the dice_ce loss can ignore voxels (loss is {self.loss})")


@dataclass
class GateModelConfig:
    model: str = "resnet10_3d"               # registered 3-D classifier (the report's ResNet-10), 2 logits
    size: int = 128                          # the volume is resized to size^3 (the report: 128^3)
    negatives_per_positive: float = 2.0      # report: all 10 positives + 20 sampled negatives
    loss: str = "cross_entropy"              # registered loss on the 2 logits (the report: CE)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1.0e-4
    weight_decay: float = 1.0e-5
    momentum: float = 0.9                    # sgd only
    scheduler: Literal["plateau", "cosine", "none"] = "none"
    epochs: int = 50
    patience: int = 10
    steps_per_epoch: Optional[int] = None
    batch_size: int = 1
    enabled: bool = True                     # false: no classifier (gate modes always / seg_presence only)


@dataclass
class CardiacInputConfig:
    hu_min: float = -1000.0                  # ScaleIntensityRanged a_min .. a_max -> 0 .. 1
    hu_max: float = 2000.0
    clip: bool = True                        # clip to [0, 1] outside the window (MONAI's default, the report's: false)
    spacing: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])   # class-1/2 branch (class 3: native)


@dataclass
class CardiacInferConfig:
    overlap: float = 0.25                    # sliding-window overlap
    sw_batch_size: int = 1                   # windows per forward pass (memory)
    mode: Literal["constant", "gaussian"] = "gaussian"
    gate: Literal["always", "classifier", "seg_presence"] = "seg_presence"   # the report's final choice
    min_calcium_voxels: int = 3              # seg_presence: k
    classifier_threshold: float = 0.5


@dataclass
class CardiacEvalConfig(EvalConfig):
    tta_supported = False
    connectivity: int = 3                    # calcium lesions: 26-connected components in 3-D
    save_masks: bool = True                  # masks/<patient>_pred.nii.gz (the input's space)
    iou_threshold: float = 0.5               # lesions.csv: the IoU matching rule beside any-overlap
    lesion_table: bool = True                # lesions.csv: one row per true / predicted calcium lesion
    nsd_tolerance_mm: float = 2.0            # normalised surface Dice per class: boundary within 2 mm counts

    def validate(self) -> None:
        super().validate()
        check_lesion_eval(self.connectivity, self.iou_threshold)


@dataclass
class CardiacSynthConfig:
    n_patients: int = 20
    calcium_fraction: float = 0.2
    shape: list[int] = field(default_factory=lambda: [96, 96, 64])          # voxels (x, y, z)
    spacing: list[float] = field(default_factory=lambda: [0.8, 0.8, 1.5])   # mm
    seed: int = 0


@dataclass
class CardiacSegConfig(RunConfig):
    task: str = "cardiac_seg"
    input: CardiacInputConfig = field(default_factory=CardiacInputConfig)
    class12: SegStageConfig = field(default_factory=SegStageConfig)
    class3: SegStageConfig = field(default_factory=lambda: SegStageConfig(patch=64, ratios=[1.0, 8.0],
                                                                          loss="tversky"))
    gate_model: GateModelConfig = field(default_factory=GateModelConfig)
    infer: CardiacInferConfig = field(default_factory=CardiacInferConfig)
    eval: CardiacEvalConfig = field(default_factory=CardiacEvalConfig)
    postprocess: LesionPostprocessConfig = field(default_factory=lambda: LesionPostprocessConfig(
        candidates_mm3=[0.0, 0.5, 1.0, 2.0, 3.0, 5.0]))   # minimum calcium lesion size (class 3, before the gate)
    synth: CardiacSynthConfig = field(default_factory=CardiacSynthConfig)
    stages: list[str] = field(default_factory=lambda: ["class12", "class3", "gate"])   # what `run` trains

    def validate(self) -> None:
        super().validate()
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ConfigError(f"stages: choose from class12, class3, gate (got {self.stages})")
        if self.class3.ignore_classes:
            raise ConfigError("class3.ignore_classes: the calcium branch is binary (label == 3); leave it []")
