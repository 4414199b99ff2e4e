"""The task contract (design §3): what every task is and the hooks ``api`` calls.

A task is a small class registered with :func:`register_task` under its name (given once: the
decorator sets ``name``). It declares its ``kind`` (one of :data:`KINDS`, which picks its report
sections), its ``labels``, its typed ``Config`` (a :class:`~medtasks.schema.RunConfig` whose ``task``
default is the name), the source report, and implements the abstract hooks below; a kind base
(:mod:`medtasks.tasks.kinds`) implements ``train`` / ``evaluate`` / ``predict_frame`` once for every
task of its kind, and a dataset source (:mod:`medtasks.tasks.sources`) ``prepare`` / ``synthesize``
for every task on one public release. A class that still has an abstract hook, an unknown kind or
a config for another task fails at registration (import time), never after training.

What ``api`` calls, in order: ``synthesize`` (no manifest) or ``prepare`` (``medtasks prepare``);
``load_manifest`` -> ``make_splits`` -> ``write_manifest``; ``train`` -> ``evaluate``; and for
``medtasks predict``: ``load_state`` (via the run directory) -> ``predict_inputs`` ->
``predict_frame`` -> ``write_predict_outputs``. :class:`Task` also holds what every kind shares:
the manifest and the patient-grouped split, the task state saved beside the checkpoints, a
network restored from a checkpoint, the training spec built from the config, and the metrics
header every ``metrics.json`` starts with.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence, TypeVar

import pandas as pd
import torch

from medtasks.config import config_hash
from medtasks.data.manifest import Rejected, read_manifest
from medtasks.data.splits import LEAKY_WARNING, assign_folds, assign_splits, patients_overlap
from medtasks.engine.runtime import select_device
from medtasks.engine.tracking import Tracking
from medtasks.engine.trainer import FitResult, Precision, Schedule, TrainingSpec, build_optimizer, load_checkpoint
from medtasks.io.atomic import write_csv_atomic, write_json_atomic
from medtasks.registry import TASKS
from medtasks.rundir import RunDir
from medtasks.schema import RunConfig, parse_track

log = logging.getLogger(__name__)

KINDS = ("binary", "multilabel", "segmentation", "detection")   # each has its report sections (medtasks.report)
T = TypeVar("T", bound=type)


@dataclass
class PrepareResult:
    """What ``prepare`` wrote."""

    manifest: Path
    rejected: Path
    n_rows: int
    n_rejected: int


class Task(ABC):
    """Base of every task; see the module docstring."""

    name: ClassVar[str] = ""                       # set by @register_task
    kind: ClassVar[str] = ""                       # one of KINDS
    labels: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = RunConfig
    source_report: ClassVar[str] = ""              # file in ../shared/seeds/
    summary: ClassVar[str] = ""                    # one line for `medtasks list`
    required_columns: ClassVar[tuple[str, ...]] = ("patient_id", "path")
    group_column: ClassVar[str] = "patient_id"     # what splits, folds and bootstrap CIs resample by
    input_column: ClassVar[str] = "path"           # the manifest column holding the file `predict` reads
    case_column: ClassVar[str] = "path"            # the manifest column predictions.csv's case_id comes from
    distributed_training: ClassVar[bool] = True    # trains under torchrun (medtasks.engine.distributed)
    distributed_hint: ClassVar[str] = ""           # what to do instead, when it does not
    probability_maps: ClassVar[bool] = False       # predict --probabilities writes probability maps (segmentation)

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.state: dict[str, Any] = {}            # fitted at train time, saved with the model

    # ---- data hooks (a task or its dataset source) ------------------------------------------
    @abstractmethod
    def prepare(self, source: Path, out: Path, workers: int | None = None, labels: Path | None = None,
                progress: bool = True) -> PrepareResult:
        """The public dataset's own layout under ``source`` -> the manifest ``out`` + ``<stem>.rejected.csv``.

        ``labels``: a label file where the layout needs one (e.g. RSNA's ``stage_2_train.csv``);
        tasks whose labels come from the layout itself refuse it with a clear error.
        """

    @abstractmethod
    def synthesize(self, cache_dir: Path) -> PrepareResult:
        """Generate the embedded synthetic default (the real on-disk format) under ``cache_dir`` and
        prepare it; ``self.cfg.synth`` holds its parameters."""

    @abstractmethod
    def predict_inputs(self, source: Path) -> tuple[pd.DataFrame, Rejected]:
        """Rows for ``predict`` from a file or folder, plus the inputs that cannot be used (with the reason)."""

    # ---- flows (a kind base) ------------------------------------------------------------------
    @abstractmethod
    def train(self, run: RunDir, df: pd.DataFrame, resume: bool = False, progress: bool = True) -> FitResult:
        """Train on the ``train`` rows of ``df`` with validation on ``val``; checkpoints, ``history.csv`` and
        the task state go into ``run``. ``resume`` continues from ``checkpoints/last.pt``."""

    @abstractmethod
    def evaluate(self, run: RunDir, df: pd.DataFrame, fit_result: FitResult | None = None,
                 warnings: list[str] | None = None) -> dict[str, Any]:
        """Score the best checkpoint on ``eval.split``: ``predictions.csv``, ``metrics.json`` (returned; it
        starts with :meth:`metrics_header`) and the kind's figures. ``warnings`` go into the report."""

    def prepare_evaluation(self, run: RunDir, df: pd.DataFrame) -> Rejected:
        """``medtasks evaluate``: what :meth:`evaluate` needs of the evaluated rows ``df`` made in the evaluation
        folder ``run`` before it runs (detection: the YOLO dataset); returns inputs it had to leave out (default
        nothing)."""
        return Rejected()

    @abstractmethod
    def predict_frame(self, run: RunDir, df: pd.DataFrame, progress: bool = True,
                      out_dir: Path | None = None, probabilities: bool = False) -> pd.DataFrame:
        """One row per input of ``df`` (from :meth:`predict_inputs`) -> ``predictions.csv``; masks and other
        files go under ``out_dir`` (names: :mod:`medtasks.io.seg_outputs`). ``probabilities`` (segmentation
        tasks, :attr:`probability_maps`): write the probability maps too."""

    def write_predict_outputs(self, frame: pd.DataFrame, out_dir: Path) -> None:
        """Task-specific prediction files beside ``predictions.csv`` (default: none)."""

    def write_dicom_outputs(self, run: RunDir, df: pd.DataFrame, frame: pd.DataFrame, out_dir: Path) -> list[Path]:
        """The DICOM objects ``predict`` made of ``df``'s inputs (``frame``: its rows) for a viewer or a PACS
        (``predict --store`` sends them with STOW-RS). Default: the DICOM Segmentations ``predict_frame`` wrote
        (the ``dicom_seg`` column of ``frame``: this prediction's, never a file left in a reused ``--out``); a
        classifier writes one Comprehensive SR per study of DICOM input."""
        if "dicom_seg" not in frame.columns:
            return []
        return [Path(out_dir) / str(p) for p in frame["dicom_seg"].dropna() if str(p)]

    def export(self, run: RunDir, df: pd.DataFrame, fmt: str, out: Path, n_inputs: int) -> list[dict[str, Any]]:
        """``medtasks export``: the files and their sidecars (default: :meth:`export_networks` through
        :func:`medtasks.engine.export.export_run`; ``bundle``: :func:`medtasks.engine.bundle.export_bundle`)."""
        if fmt == "bundle":
            from medtasks.engine.bundle import export_bundle

            return export_bundle(self, run, df, Path(out), n_inputs)
        from medtasks.engine.export import export_run

        return export_run(self, run, df, fmt, out, n_inputs)

    def export_networks(self, run: RunDir, df: pd.DataFrame, n_inputs: int) -> list[Any]:
        """The trained networks for ``medtasks export`` (:class:`medtasks.engine.export.ExportedNetwork`: module,
        example inputs from ``n_inputs`` rows of the run's evaluation split, contract); a kind base implements it."""
        raise ValueError(f"medtasks export does not cover {self.name} yet (kind {self.kind})")

    def bundle_spec(self, run: RunDir, df: pd.DataFrame) -> Any:
        """``medtasks export --format bundle``: the task's parts of a MONAI bundle
        (:class:`medtasks.engine.bundle_spec.BundleSpec`: inputs, preprocessing, postprocessing, writers). Default: no
        bundle; ``ValueError`` with :meth:`bundle_refusal`."""
        raise ValueError(self.bundle_refusal())

    def bundle_refusal(self) -> str:
        """Why this task has no MONAI bundle and what to export instead (the kind's reason by default)."""
        if self.kind == "detection":
            why = ("its network is an ultralytics YOLO model whose letterboxing and non-maximum suppression run in "
                   "ultralytics, not in MONAI's bundle engine; export it with --format onnx (ultralytics' exporter, "
                   "checked in onnxruntime)")
        else:
            why = ("its outputs come from several networks combined after inference (stages, a gate, a fusion "
                   "rule), and a MONAI bundle runs one network; export every stage with --format torchscript or "
                   "--format onnx: each file's <stage>.json sidecar gives its preprocessing and the fusion rule")
        return f"--format bundle: {self.name} has no MONAI bundle: {why}"

    # ---- manifest and splits ------------------------------------------------------------------
    def load_manifest(self, path: str | Path) -> pd.DataFrame:
        """The manifest with ``required_columns`` checked (``ManifestError`` naming the file otherwise)."""
        return read_manifest(path, self.required_columns, root=self.cfg.data.root)

    def make_splits(self, df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """Add/keep the ``split`` column (patient-grouped; ``fold`` too with ``cv.folds >= 2``); return the
        frame and report warnings."""
        d = self.cfg.data
        warnings: list[str] = []
        if "split" not in df.columns or df["split"].isna().any():
            df = df.copy()
            df["split"] = assign_splits(df, self.group_column, d.split, seed=self.cfg.seed,
                                        stratify=d.stratify, level=d.split_level)
        leaks = patients_overlap(df, self.group_column)
        if leaks:
            if d.split_level != "slice":
                raise ValueError(f"the manifest's split column puts {len(leaks)} patient(s) in more than one split "
                                 f"(e.g. {leaks[:3]}); remove the column to let medtasks split by patient, or set "
                                 f"data.split_level=slice to accept a leaky split")
            warnings.append(LEAKY_WARNING)
        if d.max_rows:
            df = df.groupby("split", group_keys=False).apply(lambda g: g.head(d.max_rows))
        df = df.reset_index(drop=True)
        cv = self.cfg.cv
        if cv.folds >= 2 and "fold" not in df.columns:
            test = df.split == self.cfg.eval.split
            df.loc[~test, "split"] = "train"  # the folds take the validation role
            df["fold"] = -1
            group = self.group_column if d.split_level == "patient" else None  # slice level: rows fold alone
            df.loc[~test, "fold"] = assign_folds(df[~test], self.fold_labels(), cv.folds, group,
                                                 self.cfg.seed).to_numpy()
        return df, warnings

    def case_ids(self, df: pd.DataFrame) -> pd.Series:
        """The ``predictions.csv`` ``case_id`` of each manifest row of ``df`` (subgroup tables join on it);
        default the ``case_column``."""
        return df[self.case_column].astype(str)

    def fold_labels(self) -> list[str]:
        """Label columns the CV folds are stratified on (all labels by default)."""
        return list(self.labels)

    def write_manifest(self, run: RunDir, df: pd.DataFrame) -> None:
        write_csv_atomic(df, run / "manifest.csv")

    # ---- task state ---------------------------------------------------------------------------
    def save_state(self, run: RunDir) -> None:
        write_json_atomic(run / "checkpoints" / "task_state.json", self.state)

    def load_state(self, run: RunDir) -> None:
        path = run / "checkpoints" / "task_state.json"
        self.state = json.loads(path.read_text()) if path.is_file() else {}

    # ---- shared pieces of the kind bases ------------------------------------------------------
    def make_loader(self, records: list[dict[str, Any]], transform: Any, shuffle: bool, batch_size: int) -> Any:
        """MONAI dataset (``data.cache``: memory / disk / none) + DataLoader over ``records``."""
        from monai.data import DataLoader

        from medtasks.data.datasets import build_dataset

        ds = build_dataset(records, transform, cache=self.cfg.data.cache,
                           cache_dir=self.cfg.data.cache_dir, num_workers=self.cfg.data.num_workers,
                           progress=False)
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=self.cfg.data.num_workers,
                          drop_last=shuffle and len(ds) > batch_size)

    @staticmethod
    def restore(model: torch.nn.Module, path: Path, hint: str = "was the run trained to the end of one epoch?"
                ) -> torch.nn.Module:
        """``model`` with the weights of checkpoint ``path``, in eval mode (``FileNotFoundError`` + ``hint``)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found: {hint}")
        load_checkpoint(path, {"network": model})
        return model.eval()

    def device(self) -> torch.device:
        return select_device(self.cfg.train.device)

    def training_spec(self, run_dir: Path, model: torch.nn.Module, loss: torch.nn.Module, train_loader: Any,
                      val_loader: Any, resume: bool, progress: bool, **extra: Any) -> TrainingSpec:
        """The engine's spec from the config's ``optim``, ``train`` and ``scheduler`` sections (``extra``:
        any other :class:`~medtasks.engine.trainer.TrainingSpec` field)."""
        o = self.cfg.optim
        optim = build_optimizer([p for p in model.parameters() if p.requires_grad], o.name, o.lr, o.weight_decay,
                                o.momentum)
        return TrainingSpec(network=model, optimizer=optim, loss_fn=loss, train_loader=train_loader,
                            val_loader=val_loader, run_dir=Path(run_dir), device=self.device(),
                            schedule=Schedule.from_config(self.cfg.train, self.cfg.scheduler),
                            precision=Precision.from_config(self.cfg.train), resume=resume, progress=progress,
                            tracking=self.tracking(run_dir), seed=self.cfg.seed, **extra)

    def tracking(self, run_dir: Path) -> Tracking:
        """The ``track`` of the config for a training into ``run_dir`` (MLflow run: the run directory's name,
        plus the fold or stage folder below it)."""
        run_dir = Path(run_dir)
        top = next((p for p in (run_dir, *run_dir.parents) if (p / "config.resolved.yaml").is_file()), run_dir)
        name = top.name if top == run_dir else f"{top.name}/{run_dir.relative_to(top).as_posix()}"
        return Tracking(trackers=parse_track(self.cfg.track), experiment=self.name, run_name=name,
                        uri=self.cfg.track_uri)

    def eval_rows(self, df: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``eval.split`` (re-indexed); a clear error when there are none."""
        split = self.cfg.eval.split
        rows = df[df.split == split].reset_index(drop=True)
        if rows.empty:
            raise ValueError(f"eval.split={split!r} has no rows in the manifest")
        return rows

    def metrics_header(self, warnings: Sequence[str] | None = None, **extra: Any) -> dict[str, Any]:
        """What every ``metrics.json`` starts with: task, kind, synthetic, config hash, split, labels, warnings."""
        return {"task": self.name, "kind": self.kind, "synthetic": bool(self.cfg.data.synthetic),
                "config_hash": config_hash(self.cfg), "split": self.cfg.eval.split, "labels": list(self.labels),
                "protocol": self.cfg.protocol.name,
                **extra, "warnings": list(warnings or []) + self.cfg.protocol.warnings()}

    @staticmethod
    def add_fit_result(metrics: dict[str, Any], fit_result: FitResult | None) -> dict[str, Any]:
        """``best_epoch``, ``epochs_run`` and ``train_time_s`` of the training that made the checkpoint."""
        if fit_result is not None:
            metrics.update(best_epoch=fit_result.best_epoch, epochs_run=fit_result.epochs_run,
                           train_time_s=fit_result.train_time_s)
        return metrics


def register_task(name: str) -> Callable[[T], T]:
    """Class decorator: check the task class against the contract and register it as ``name``.

    Raises ``TypeError`` at import time for an abstract hook left unimplemented, an unknown kind,
    a config schema that is not a :class:`~medtasks.schema.RunConfig` dataclass for this task, or
    no labels / source report.

    Example:
        >>> @register_task("my_task")      # doctest: +SKIP
        ... class MyTask(ClassificationTask): ...
    """

    def deco(cls: T) -> T:
        problems = []
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            problems.append("is not a medtasks.tasks.contract.Task")
        else:
            if inspect.isabstract(cls):
                problems.append(f"does not implement {', '.join(sorted(cls.__abstractmethods__))}")
            if cls.kind not in KINDS:
                problems.append(f"kind {cls.kind!r} is not one of {', '.join(KINDS)}")
            if not cls.labels:
                problems.append("has no labels")
            if not cls.source_report:
                problems.append("names no source_report")
            cfg = cls.Config
            if not (dataclasses.is_dataclass(cfg) and issubclass(cfg, RunConfig)):
                problems.append(f"Config {cfg!r} is not a RunConfig dataclass")
            elif cfg().task != name:
                problems.append(f"Config {cfg.__name__}.task defaults to {cfg().task!r}, not {name!r}")
        if problems:
            raise TypeError(f"task {name!r} ({getattr(cls, '__qualname__', cls)}) " + "; ".join(problems))
        cls.name = name
        return TASKS.register(name)(cls)

    return deco


def write_rejected(path: Path, *parts: Rejected | Sequence[dict]) -> Rejected:
    """Merge rejected lists and write them (always written, header only when empty)."""
    merged = Rejected()
    for p in parts:
        merged.extend(p)
    merged.write(path)
    return merged
