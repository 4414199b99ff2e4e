"""Config schema of ``phe_detect`` (values: ``medtasks/configs/phe_detect.yaml`` and ``.demo.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medtasks.config import ConfigError
from medtasks.schema import EvalConfig, RunConfig
from medtasks.tasks.sources.phe_sich import PheSynthConfig


@dataclass
class DetectModelConfig:
    # a yaml shipped in ultralytics (from scratch) or a local .pt (never downloaded)
    model: str = "yolov8n.yaml"
    imgsz: int = 512                        # ultralytics' letterboxed input side
    workers: int = 2                        # ultralytics' dataloader workers
    plots: bool = True                      # ultralytics' own training plots (results.png, label stats)
    extra: dict[str, Any] = field(default_factory=dict)   # any other ultralytics train argument (lr0, mosaic, ...)

    def validate(self) -> None:
        if self.imgsz < 32 or self.imgsz % 32:
            raise ConfigError(f"imgsz: expected a multiple of 32 (YOLO's stride), got {self.imgsz}")


@dataclass
class DetectEvalConfig(EvalConfig):
    tta_supported = False
    conf: float = 0.25                      # image-level call and predictions.csv: boxes with confidence >= conf
    iou: float = 0.7                        # NMS IoU
    val_conf: float = 0.001                 # confidence floor for mAP (ultralytics' validator default)
    overlays: int = 4                       # images per overlay grid (TP / FP / FN)

    def validate(self) -> None:
        super().validate()
        for name in ("conf", "iou", "val_conf"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name}: expected a value in [0, 1], got {v}")


@dataclass
class PheDetectConfig(RunConfig):
    task: str = "phe_detect"
    detect: DetectModelConfig = field(default_factory=DetectModelConfig)
    eval: DetectEvalConfig = field(default_factory=DetectEvalConfig)
    synth: PheSynthConfig = field(default_factory=PheSynthConfig)
