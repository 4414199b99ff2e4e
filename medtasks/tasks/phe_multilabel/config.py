"""Config schema of ``phe_multilabel`` (values: ``medtasks/configs/phe_multilabel.yaml`` and ``.demo.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from medtasks.config import ConfigError
from medtasks.data.phe_sich import MULTILABELS
from medtasks.tasks.kinds.grey_config import GreyClassifierConfig
from medtasks.tasks.sources.phe_sich import PheSynthConfig


@dataclass
class MultiLossConfig:
    name: str = "weighted_bce"
    pos_weight: Optional[list[float]] = None   # one per label (notes: [1.0, 1.0, 2.0] when SAH is weak)
    label_smoothing: float = 0.0

    def validate(self) -> None:
        if self.pos_weight is not None and (len(self.pos_weight) != len(MULTILABELS)
                                            or not all(w > 0 for w in self.pos_weight)):
            raise ConfigError(f"pos_weight: expected {len(MULTILABELS)} positive numbers ({', '.join(MULTILABELS)}) "
                              f"or null, got {self.pos_weight}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing: expected a value in [0, 1), got {self.label_smoothing}")


@dataclass
class PheMultilabelConfig(GreyClassifierConfig):
    task: str = "phe_multilabel"
    loss: MultiLossConfig = field(default_factory=MultiLossConfig)
    synth: PheSynthConfig = field(default_factory=PheSynthConfig)
