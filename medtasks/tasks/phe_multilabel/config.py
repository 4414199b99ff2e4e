"""Config schema of ``phe_multilabel`` (values: ``medtasks/configs/phe_multilabel.yaml`` and ``.demo.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import medtasks.losses  # noqa: F401  (registers the losses loss.name is checked against)
from medtasks.config import ConfigError, checked
from medtasks.data.phe_sich import MULTILABELS
from medtasks.registry import LOSSES
from medtasks.tasks.kinds.grey_config import GreyClassifierConfig
from medtasks.tasks.sources.phe_sich import PheSynthConfig


@dataclass
class MultiLossConfig:
    name: str = checked("weighted_bce", options=LOSSES)   # a registered loss taking one weight per label
    pos_weight: Optional[list[float]] = None   # one per label (notes: [1.0, 1.0, 2.0] when SAH is weak)
    label_smoothing: float = checked(0.0, ge=0, lt=1)

    def validate(self) -> None:
        if self.pos_weight is not None and (len(self.pos_weight) != len(MULTILABELS)
                                            or not all(w > 0 for w in self.pos_weight)):
            raise ConfigError(f"pos_weight: expected {len(MULTILABELS)} positive numbers ({', '.join(MULTILABELS)}) "
                              f"or null, got {self.pos_weight}")


@dataclass
class PheMultilabelConfig(GreyClassifierConfig):
    task: str = "phe_multilabel"
    loss: MultiLossConfig = field(default_factory=MultiLossConfig)
    synth: PheSynthConfig = field(default_factory=PheSynthConfig)
