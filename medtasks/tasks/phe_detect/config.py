"""Config schema of ``phe_detect`` (values: ``medtasks/configs/phe_detect.yaml`` and ``.demo.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medtasks.config import ConfigError, checked
from medtasks.schema import EvalConfig, RunConfig
from medtasks.tasks.sources.phe_sich import PheSynthConfig


@dataclass
class DetectModelConfig:
    # a yaml shipped in ultralytics (from scratch) or a local .pt (never downloaded)
    model: str = "yolov8n.yaml"
    imgsz: int = 512                        # ultralytics' letterboxed input side
    workers: int = checked(2, ge=0)         # ultralytics' dataloader workers
    plots: bool = True                      # ultralytics' own training plots (results.png, label stats)
    extra: dict[str, Any] = field(default_factory=dict)   # any other ultralytics train argument (lr0, mosaic, ...)

    def validate(self) -> None:
        if self.imgsz < 32 or self.imgsz % 32:
            raise ConfigError(f"imgsz: expected a multiple of 32 (YOLO's stride), got {self.imgsz}")
        # the form only: whether a local .pt exists is checked when training starts (a run's recorded config
        # must stay readable after the file that started it has moved)
        if "://" in self.model:
            raise ConfigError(f"model: {self.model!r} is a URL; medtasks never downloads weights: give a model "
                              "yaml (yolov8n.yaml) or a local .pt")
        if not self.model.lower().endswith((".yaml", ".yml", ".pt")):
            raise ConfigError(f"model: expected a model .yaml (e.g. yolov8n.yaml) or a local .pt checkpoint, "
                              f"got {self.model!r}")


@dataclass
class DetectEvalConfig(EvalConfig):
    tta_supported = False
    # image-level call and predictions.csv: boxes with confidence >= conf
    conf: float = checked(0.25, ge=0, le=1)
    iou: float = checked(0.7, ge=0, le=1)   # NMS IoU
    val_conf: float = checked(0.001, ge=0, le=1)   # confidence floor for mAP (ultralytics' validator default)
    overlays: int = checked(4, ge=0)        # images per overlay grid (TP / FP / FN)


@dataclass
class PheDetectConfig(RunConfig):
    task: str = "phe_detect"
    detect: DetectModelConfig = field(default_factory=DetectModelConfig)
    eval: DetectEvalConfig = field(default_factory=DetectEvalConfig)
    synth: PheSynthConfig = field(default_factory=PheSynthConfig)
