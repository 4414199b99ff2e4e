"""Config schema of ``phe_classify`` (values: ``medtasks/configs/phe_classify.yaml`` and ``.demo.yaml``).

Neutral defaults only; the source notes' numbers live in the YAML files, with their citations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medtasks.tasks.kinds.grey_config import BinaryLossConfig, GreyClassifierConfig
from medtasks.tasks.sources.phe_sich import PheSynthConfig


@dataclass
class PheClassifyConfig(GreyClassifierConfig):
    task: str = "phe_classify"
    loss: BinaryLossConfig = field(default_factory=BinaryLossConfig)
    synth: PheSynthConfig = field(default_factory=PheSynthConfig)
