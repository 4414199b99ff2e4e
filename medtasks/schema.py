"""Config sections shared by every task (each task's schema extends :class:`RunConfig`).

Field defaults here are neutral engineering defaults; the source reports' numbers live in
``medtasks/configs/<task>.yaml``. Every field is documented by its comment; each run writes the resolved tree to
``config.resolved.yaml`` in its run directory. A field's admissible values are declared with
:func:`~medtasks.config.checked` (ranges, counts, fractions summing to 1) and checked when the config is loaded,
before any data are read or a run directory exists; a section's ``validate()`` holds the rules between fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, Optional

from medtasks.config import ConfigError, checked

# The source report: horizontal flip, vertical flip, +-10 degree rotations, plus the original image.
DEFAULT_TTA: tuple[str, ...] = ("hflip", "vflip", "rotate:10", "rotate:-10")


def parse_view(name: str) -> tuple[str, float]:
    """``"hflip"`` -> ("hflip", 0); ``"rotate:10"`` -> ("rotate", 10.0); ValueError otherwise."""
    if name in ("identity", "hflip", "vflip"):
        return name, 0.0
    if name.startswith("rotate:"):
        try:
            return "rotate", float(name.split(":", 1)[1])
        except ValueError:
            pass
    raise ValueError(f"unknown TTA view {name!r}: use identity, hflip, vflip or rotate:<degrees>")



TRACKERS = ("tensorboard", "mlflow")   # medtasks.engine.tracking


def parse_track(value: str | None) -> tuple[str, ...]:
    """``"tensorboard,mlflow"`` -> ``("tensorboard", "mlflow")``; ValueError names an unknown tracker."""
    names = tuple(t.strip() for t in (value or "").split(",") if t.strip())
    bad = [t for t in names if t not in TRACKERS]
    if bad:
        raise ValueError(f"unknown tracker(s) {bad}: use {' or '.join(TRACKERS)} (comma-separated for both)")
    return names


def check_trackers(names: tuple[str, ...]) -> None:
    """ValueError with the fix when a tracker's package is not installed."""
    import importlib.util

    for t in names:
        if importlib.util.find_spec(t) is None:
            raise ValueError(f"track={t} needs the {t} package: pip install 'medtasks[track]' (or pip install {t})")


@dataclass
class DataConfig:
    manifest: Optional[str] = None          # CSV made by `medtasks prepare`; null -> embedded synthetic default
    # base of relative paths (default: the manifest's folder, or $MEDTASKS_DATA_ROOT)
    root: Optional[str] = None
    synthetic: bool = False                 # set by the API when the embedded default is used
    split: list[float] = checked(factory=lambda: [0.7, 0.15, 0.15], length=3, each=True, ge=0, le=1, total=1,
                                 note="train / val / test fractions")   # by patient
    split_level: Literal["patient", "slice"] = "patient"  # "slice" leaks patients across splits: flagged in the report
    stratify: Optional[str] = None          # manifest column to balance across splits (patient-level max)
    cache: Literal["none", "memory", "disk"] = "memory"   # MONAI CacheDataset / PersistentDataset / plain Dataset
    cache_dir: Optional[str] = None         # PersistentDataset folder (default: <run>/../.persistent_cache)
    num_workers: int = checked(0, ge=0)     # DataLoader workers (0 = main process)
    max_rows: Optional[int] = checked(None, ge=1)   # cap rows per split (quick experiments); null = all


@dataclass
class OptimConfig:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = checked(1e-4, gt=0)
    weight_decay: float = checked(5e-4, ge=0)
    momentum: float = checked(0.9, ge=0, lt=1)   # sgd only


@dataclass
class SchedulerConfig:
    name: Literal["plateau", "cosine", "none"] = "plateau"
    factor: float = checked(0.5, gt=0, lt=1)   # ReduceLROnPlateau factor
    patience: int = checked(3, ge=0)        # ReduceLROnPlateau patience (epochs)
    min_lr: float = checked(1e-7, ge=0)


@dataclass
class TrainConfig:
    epochs: int = checked(60, ge=1)
    batch_size: int = checked(32, ge=1)
    early_stopping_patience: int = checked(10, ge=0, note="0 = off")   # epochs without improvement of `monitor`
    # picks best.pt, early stopping and LR plateau: a validation metric (val_loss, val_dice, val_auc, ...)
    monitor: str = checked("val_loss", pattern=r"val_\S+", note="a validation metric such as val_loss")
    monitor_mode: Literal["min", "max"] = "min"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True                        # mixed precision on CUDA (float16 autocast + GradScaler)
    # bfloat16 autocast on CPU: ~2x faster on CPUs with AMX / AVX512-BF16, refused (float32) on others
    cpu_bf16: bool = False
    channels_last: bool = False             # channels-last layout for 2-D convolutions (faster on CPU with cpu_bf16)
    threads: Optional[int] = checked(None, ge=1)   # torch CPU threads (null = all available cores)
    steps_per_epoch: Optional[int] = checked(None, ge=1)   # iterations per epoch (null = one pass over train)


@dataclass
class EvalConfig:
    split: str = "test"                     # split evaluated after training
    batch_size: int = checked(64, ge=1)
    threshold: float = checked(0.5, ge=0, le=1)   # default decision threshold for every label
    n_boot: int = checked(1000, ge=1)       # bootstrap replicates for the 95% CIs (resampled by patient)
    ci: float = checked(0.95, gt=0, lt=1)
    calibration_bins: int = checked(15, ge=1)
    # test-time augmentation at evaluate/calibrate/predict: the mean over the original + tta_views
    tta: bool = False
    tta_views: list[str] = field(default_factory=lambda: ["hflip", "vflip", "rotate:10", "rotate:-10"])
    # prob: the mean of the views' probabilities (the ich report, l.29/l.533); logit: the mean logit
    tta_average: Literal["prob", "logit"] = "prob"

    tta_supported: ClassVar[bool] = True    # kinds whose outputs cannot be averaged over flipped views set False

    def validate(self) -> None:
        if self.tta and not self.tta_supported:
            raise ConfigError("tta: not supported for this task (outputs of flipped views would need un-flipping); "
                              "set eval.tta=false")
        for v in self.tta_views:
            try:
                parse_view(v)
            except ValueError as exc:
                raise ConfigError(f"tta_views: {exc}") from None


@dataclass
class AugmentConfig:
    """Training-time augmentation (:func:`medtasks.transforms.augment.build_augmentation`); 0 / null = off.

    Every switch defaults to off; the source reports' values live in ``medtasks/configs/<task>.yaml``.
    """

    hflip: float = checked(0.0, ge=0, le=1)   # probability
    vflip: float = checked(0.0, ge=0, le=1)
    rotate_deg: float = checked(0.0, ge=0, le=180)   # uniform +-deg
    rotate_prob: float = checked(0.5, ge=0, le=1)
    brightness: float = checked(0.0, ge=0, le=1)     # additive shift range ([0, 1] image units)
    contrast: float = checked(0.0, ge=0, lt=1)       # multiplicative range 1 +- contrast
    noise_std: float = checked(0.0, ge=0)            # Gaussian noise std
    noise_prob: float = checked(0.5, ge=0, le=1)
    # [min, max] area fraction of a random crop, resized back
    resized_crop_scale: Optional[list[float]] = checked(None, length=2, each=True, gt=0, le=1, ascending=True)
    erasing_prob: float = checked(0.0, ge=0, le=1)   # random erasing (coarse dropout)


@dataclass
class CalibrationConfig:
    """Post-hoc fitting on the validation split after training (classification tasks)."""

    # fit one temperature T on validation NLL; probabilities = sigmoid(logit / T)
    temperature: bool = False
    method: Literal["grid", "lbfgs"] = "grid"   # grid search over temperature_range, or L-BFGS on log T
    temperature_range: list[float] = field(default_factory=lambda: [0.6, 3.0])
    thresholds: bool = False                # per-label threshold maximising validation F1 (else eval.threshold)
    threshold_range: list[float] = field(default_factory=lambda: [0.05, 0.95])
    threshold_step: float = 0.01

    def validate(self) -> None:
        lo, hi = self.temperature_range if len(self.temperature_range) == 2 else (0, -1)
        if not 0 < lo < hi:
            raise ConfigError("temperature_range: expected [low, high] with 0 < low < high, "
                              f"got {self.temperature_range}")
        lo, hi = self.threshold_range if len(self.threshold_range) == 2 else (0, -1)
        if not 0 < lo <= hi < 1 or not 0 < self.threshold_step < 1:
            raise ConfigError(f"threshold_range: expected 0 < low <= high < 1 and 0 < threshold_step < 1, "
                              f"got {self.threshold_range} / {self.threshold_step}")


@dataclass
class SamplingConfig:
    """Class-balanced training split (medtasks.data.sampling.balance_rows); every field null = off."""

    per_class: Optional[int] = checked(None, ge=1)   # positives drawn per label (report: ~3000 per subtype)
    normal: Optional[int] = checked(None, ge=0)      # normal slices kept (report: 10000)
    normal_ratio: Optional[float] = checked(None, ge=0)   # or normals = ratio x positives drawn
    replace: bool = False                   # oversample labels with fewer than per_class positives
    # train: balance the training split only (validation keeps the population prevalence the calibration
    # needs); train_val: balance training + validation together, as the ich report (l.121-123)
    scope: Literal["train", "train_val"] = "train"
    # the evaluated split drawn the same way (no replacement), e.g. the ich report's balanced test sample of
    # ~200 slices per subtype (l.123); null = every row of eval.split (the population's prevalence)
    eval_per_class: Optional[int] = checked(None, ge=1)
    eval_normal: Optional[int] = checked(None, ge=0)

    @property
    def enabled(self) -> bool:
        return self.per_class is not None or self.normal is not None or self.normal_ratio is not None

    def validate(self) -> None:
        if self.normal is not None and self.normal_ratio is not None:
            raise ConfigError("give normal or normal_ratio, not both")


@dataclass
class CVConfig:
    # k >= 2: k-fold CV (MultilabelStratifiedKFold by patient) on the non-test patients
    folds: int = checked(0, ge=2, also=(0,), note="0 = off")
    # test-time model: best fold by validation score, or the mean of all folds
    select: Literal["best", "ensemble"] = "best"


@dataclass
class ProtocolConfig:
    """Which evaluation protocol a run follows. ``medtasks``: patient-grouped, held-out evaluation (the
    default). ``report``: the source report's own protocol (``configs/<task>.report.yaml``), flaws included,
    so that a user can check that they get the published numbers; every ``departures`` line becomes a
    warning in metrics.json and on the report, as a leaky split does."""

    name: Literal["medtasks", "report"] = "medtasks"
    reproduces: str = ""                    # one line: what this profile reproduces (report section, l.)
    departures: list[str] = field(default_factory=list)  # how it departs from held-out, patient-grouped evaluation

    def validate(self) -> None:
        if self.name == "report" and not self.departures:
            raise ConfigError("protocol.name=report: list the protocol's departures from held-out, patient-grouped "
                              "evaluation in protocol.departures (they are shown on the report)")

    def warnings(self) -> list[str]:
        if self.name == "medtasks":
            return []
        head = f"report protocol ({self.reproduces})" if self.reproduces else "report protocol"
        return [f"{head}: {d}" for d in self.departures]


@dataclass
class RunConfig:
    task: str = ""
    seed: int = checked(42, ge=0, le=2**32 - 1)   # numpy's seed range
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    # experiment tracking, off by default: tensorboard | mlflow | tensorboard,mlflow (medtasks.engine.tracking)
    track: Optional[str] = None
    # MLflow tracking URI; null = a SQLite store inside the run directory (nothing is sent anywhere)
    track_uri: Optional[str] = None

    def validate(self) -> None:
        try:
            check_trackers(parse_track(self.track))
        except ValueError as exc:
            raise ConfigError(f"track: {exc}") from None
