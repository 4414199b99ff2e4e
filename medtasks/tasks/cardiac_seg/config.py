"""Config schema of ``cardiac_seg`` (values: ``medtasks/configs/cardiac_seg.yaml`` and ``.demo.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import medtasks.losses  # noqa: F401  (registers the losses gate_model.loss is checked against)
import medtasks.models  # noqa: F401  (registers the networks gate_model.model is checked against)
from medtasks.config import ConfigError, checked
from medtasks.registry import LOSSES, MODELS
from medtasks.schema import EvalConfig, RunConfig
from medtasks.tasks.kinds.segmentation_config import check_lesion_eval
from medtasks.transforms.postprocess import LesionPostprocessConfig

CLASSES = {1: "myocardium", 2: "aortic_valve", 3: "calcification"}   # label values of the AI CUP masks
STAGES = ("class12", "class3", "gate")


@dataclass
class SegStageConfig:
    """One SwinUNETR branch: its network, patches, loss, optimiser and stopping rule."""

    model: Literal["swinunetr", "basic_unet_3d"] = "swinunetr"   # the report's SwinUNETR; basic_unet_3d: CPU demos
    feature_size: int = checked(48, ge=1)
    patch: int = 96                          # cubic patch side (multiple of 32)
    num_samples: int = checked(2, ge=1)      # patches drawn per volume per step (RandCropByLabelClassesd)
    # patch centre odds per class (class12: background, myocardium, valve; class3: background, calcium)
    ratios: list[float] = checked(factory=lambda: [1.0, 1.0, 1.0], each=True, ge=0)
    loss: Literal["dice_ce", "tversky", "dice_focal"] = "dice_ce"
    tversky_alpha: float = checked(0.3, ge=0)   # tversky: weight of false positives
    tversky_beta: float = checked(0.7, ge=0)    # tversky: weight of false negatives (> alpha leans to recall)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"   # the report: AdamW
    lr: float = checked(1.0e-4, gt=0)
    weight_decay: float = checked(1.0e-5, ge=0)
    momentum: float = checked(0.9, ge=0, lt=1)   # sgd only
    scheduler: Literal["plateau", "cosine", "none"] = "none"   # the report: a constant learning rate
    epochs: int = checked(300, ge=1)
    patience: int = checked(20, ge=0)        # epochs without a better validation score
    steps_per_epoch: Optional[int] = checked(None, ge=1)
    batch_size: int = checked(1, ge=1)
    use_checkpoint: bool = False             # gradient checkpointing (GPU memory)
    # training volumes without the target class per one with it
    negatives_per_positive: Optional[float] = checked(None, ge=0)
                                                     # (null = all; class3: the report trained "mostly on positives")
    ignore_classes: list[int] = field(default_factory=list)   # class12 only: label values left out of the loss
                                                     # ([] = class 3 relabelled background; report: [0, 3])

    def validate(self) -> None:
        if not any(r > 0 for r in self.ratios):
            raise ConfigError(f"ratios: expected at least one class with odds > 0, got {self.ratios}")
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
    # registered 3-D classifier (the report's ResNet-10), 2 logits
    model: str = checked("resnet10_3d", options=MODELS)
    size: int = checked(128, ge=8)           # the volume is resized to size^3 (the report: 128^3)
    negatives_per_positive: float = checked(2.0, ge=0)   # report: all 10 positives + 20 sampled negatives
    loss: str = checked("cross_entropy", options=LOSSES)   # registered loss on the 2 logits (the report: CE)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = checked(1.0e-4, gt=0)
    weight_decay: float = checked(1.0e-5, ge=0)
    momentum: float = checked(0.9, ge=0, lt=1)   # sgd only
    scheduler: Literal["plateau", "cosine", "none"] = "none"
    epochs: int = checked(50, ge=1)
    patience: int = checked(10, ge=0)
    steps_per_epoch: Optional[int] = checked(None, ge=1)
    batch_size: int = checked(1, ge=1)
    enabled: bool = True                     # false: no classifier (gate modes always / seg_presence only)


@dataclass
class CardiacInputConfig:
    hu_min: float = -1000.0                  # ScaleIntensityRanged a_min .. a_max -> 0 .. 1
    hu_max: float = 2000.0
    clip: bool = True                        # clip to [0, 1] outside the window (MONAI's default, the report's: false)
    # mm, class-1/2 branch (class 3: native)
    spacing: list[float] = checked(factory=lambda: [1.0, 1.0, 1.0], length=3, each=True, gt=0)

    def validate(self) -> None:
        if not self.hu_min < self.hu_max:
            raise ConfigError(f"hu_min: expected hu_min < hu_max, got {self.hu_min} / {self.hu_max}")


@dataclass
class CardiacInferConfig:
    overlap: float = checked(0.25, ge=0, lt=1)   # sliding-window overlap
    sw_batch_size: int = checked(1, ge=1)    # windows per forward pass (memory)
    mode: Literal["constant", "gaussian"] = "gaussian"
    gate: Literal["always", "classifier", "seg_presence"] = "seg_presence"   # the report's final choice
    min_calcium_voxels: int = checked(3, ge=0)   # seg_presence: k
    classifier_threshold: float = checked(0.5, ge=0, le=1)


@dataclass
class CardiacEvalConfig(EvalConfig):
    tta_supported = False
    connectivity: int = 3                    # calcium lesions: 26-connected components in 3-D
    save_masks: bool = True                  # masks/<patient>.nii.gz (the input's space)
    iou_threshold: float = 0.5               # lesions.csv: the IoU matching rule beside any-overlap
    lesion_table: bool = True                # lesions.csv: one row per true / predicted calcium lesion
    # normalised surface Dice per class: boundary within 2 mm counts
    nsd_tolerance_mm: float = checked(2.0, ge=0)

    def validate(self) -> None:
        super().validate()
        check_lesion_eval(self.connectivity, self.iou_threshold)


@dataclass
class CardiacSynthConfig:
    n_patients: int = checked(20, ge=1)
    calcium_fraction: float = checked(0.2, ge=0, le=1)
    shape: list[int] = checked(factory=lambda: [96, 96, 64], length=3, each=True, ge=16)   # voxels (x, y, z)
    spacing: list[float] = checked(factory=lambda: [0.8, 0.8, 1.5], length=3, each=True, gt=0)   # mm
    seed: int = checked(0, ge=0)


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
        for stage, n, names in (("class12", 3, "background, myocardium, valve"), ("class3", 2, "background, calcium")):
            ratios = getattr(self, stage).ratios
            if len(ratios) != n:
                raise ConfigError(f"{stage}.ratios: expected {n} patch-centre odds ({names}), got {ratios}")
