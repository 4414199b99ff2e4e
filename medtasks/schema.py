"""Config sections shared by every task (each task's schema extends :class:`RunConfig`).

Field defaults here are neutral engineering defaults; the source reports' numbers live in
``configs/<task>.yaml``. Every field is documented by its comment; ``medtasks run --help-config``
prints the resolved tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from medtasks.config import ConfigError


@dataclass
class DataConfig:
    manifest: Optional[str] = None          # CSV made by `medtasks prepare`; null -> embedded synthetic default
    root: Optional[str] = None              # base of relative paths (default: the manifest's folder, or $MEDTASKS_DATA_ROOT)
    synthetic: bool = False                 # set by the API when the embedded default is used
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])   # train/val/test fractions (by patient)
    split_level: Literal["patient", "slice"] = "patient"  # "slice" leaks patients across splits: flagged in the report
    stratify: Optional[str] = None          # manifest column to balance across splits (patient-level max)
    cache: Literal["none", "memory", "disk"] = "memory"   # MONAI CacheDataset / PersistentDataset / plain Dataset
    cache_dir: Optional[str] = None         # PersistentDataset folder (default: <run>/../.persistent_cache)
    num_workers: int = 0                    # DataLoader workers (0 = main process)
    max_rows: Optional[int] = None          # cap rows per split (quick experiments); null = all

    def validate(self) -> None:
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(f"split: expected three non-negative fractions summing to 1, got {self.split}")


@dataclass
class OptimConfig:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9


@dataclass
class SchedulerConfig:
    name: Literal["plateau", "cosine", "none"] = "plateau"
    factor: float = 0.5                     # ReduceLROnPlateau factor
    patience: int = 3                       # ReduceLROnPlateau patience (epochs)
    min_lr: float = 1e-7


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 32
    early_stopping_patience: int = 10       # epochs without improvement of `monitor`; 0 = off
    monitor: str = "val_loss"               # picks best.pt, early stopping and LR plateau
    monitor_mode: Literal["min", "max"] = "min"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True                        # mixed precision, CUDA only
    threads: Optional[int] = None           # torch CPU threads (null = all available cores)
    steps_per_epoch: Optional[int] = None   # iterations per epoch (null = one pass over the training split)


@dataclass
class EvalConfig:
    split: str = "test"                     # split evaluated after training
    batch_size: int = 64
    threshold: float = 0.5                  # default decision threshold for every label
    n_boot: int = 1000                      # bootstrap replicates for the 95% CIs (resampled by patient)
    ci: float = 0.95
    calibration_bins: int = 15


@dataclass
class RunConfig:
    task: str = ""
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
