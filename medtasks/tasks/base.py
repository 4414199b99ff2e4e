"""The task contract (design §3): a task is a small class of hooks; the kind-level base runs them.

A concrete task sets ``name``, ``kind``, ``labels``, ``Config`` and overrides the builders
(``records``, ``build_transforms``, ``build_model``, ``build_loss``) plus its data hooks
(``prepare``, ``synthesize``, ``predict_records``). :class:`Task` holds what every kind shares:
loading the manifest and making the patient-grouped split, the task state saved beside the
checkpoints, and building a task back from a run directory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import pandas as pd
import torch
from monai.transforms import Compose

from medtasks.data.manifest import Rejected, read_manifest, write_csv_atomic
from medtasks.data.splits import LEAKY_WARNING, assign_splits, patients_overlap
from medtasks.rundir import RunDir, write_json_atomic
from medtasks.schema import RunConfig

log = logging.getLogger(__name__)


@dataclass
class PrepareResult:
    """What ``prepare`` wrote."""

    manifest: Path
    rejected: Path
    n_rows: int
    n_rejected: int


class Task:
    """Base of every task; see the module docstring."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""                       # multilabel | binary | segmentation | detection
    labels: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = RunConfig
    source_report: ClassVar[str] = ""              # file in ../shared/seeds/
    summary: ClassVar[str] = ""
    required_columns: ClassVar[tuple[str, ...]] = ("patient_id", "path")
    group_column: ClassVar[str] = "patient_id"

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.state: dict[str, Any] = {}            # fitted at train time, saved with the model

    # ---- hooks a task overrides -------------------------------------------------------------
    def prepare(self, source: Path, out: Path, **options: Any) -> PrepareResult:
        raise NotImplementedError(f"{self.name} has no prepare step")

    def synthesize(self, cache_dir: Path) -> PrepareResult:
        """Generate the embedded synthetic default (real on-disk format) and prepare it."""
        raise NotImplementedError(f"{self.name} has no synthetic default")

    def records(self, df: pd.DataFrame) -> list[dict[str, Any]]:
        raise NotImplementedError

    def build_transforms(self, split: str) -> Compose:
        raise NotImplementedError

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def build_loss(self) -> torch.nn.Module:
        raise NotImplementedError

    def prepare_batch(self) -> Any:
        """MONAI prepare_batch for the engine (None = image/label only)."""
        return None

    def predict_inputs(self, source: Path) -> tuple[pd.DataFrame, Rejected]:
        """Rows for ``predict`` from a file or folder, plus the inputs that cannot be used."""
        raise NotImplementedError(f"{self.name} has no predict input reader")

    def write_predict_outputs(self, frame: pd.DataFrame, out_dir: Path) -> None:
        """Task-specific prediction files beside ``predictions.csv`` (default: none)."""

    # ---- shared behaviour -------------------------------------------------------------------
    def loader(self, df: pd.DataFrame, split: str, shuffle: bool, batch_size: int) -> Any:
        """A MONAI DataLoader over ``records(df)`` with the split's transforms and the configured cache."""
        return self.make_loader(self.records(df), self.build_transforms(split), shuffle, batch_size)

    def make_loader(self, records: list[dict[str, Any]], transform: Compose, shuffle: bool, batch_size: int) -> Any:
        """MONAI dataset (``data.cache``: memory / disk / none) + DataLoader over ``records``."""
        from monai.data import DataLoader

        from medtasks.data.datasets import build_dataset

        ds = build_dataset(records, transform, cache=self.cfg.data.cache,
                           cache_dir=self.cfg.data.cache_dir, num_workers=self.cfg.data.num_workers,
                           progress=False)
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=self.cfg.data.num_workers,
                          drop_last=shuffle and len(ds) > batch_size)

    def load_manifest(self, path: str | Path) -> pd.DataFrame:
        return read_manifest(path, self.required_columns, root=self.cfg.data.root)

    def make_splits(self, df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """Add/keep the ``split`` column (patient-grouped); return the frame and report warnings."""
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
        cv = getattr(self.cfg, "cv", None)
        if cv is not None and cv.folds >= 2 and "fold" not in df.columns:
            from medtasks.tasks.cv import assign_folds

            test = df.split == self.cfg.eval.split
            df.loc[~test, "split"] = "train"  # the folds take the validation role
            df["fold"] = -1
            df.loc[~test, "fold"] = assign_folds(df[~test], self.fold_labels(), cv.folds, self.group_column,
                                                 self.cfg.seed).to_numpy()
        return df, warnings

    def fold_labels(self) -> list[str]:
        """Label columns the CV folds are stratified on (all labels by default)."""
        return [lab for lab in self.labels]

    def save_state(self, run: RunDir) -> None:
        write_json_atomic(run / "checkpoints" / "task_state.json", self.state)

    def load_state(self, run: RunDir) -> None:
        path = run / "checkpoints" / "task_state.json"
        self.state = json.loads(path.read_text()) if path.is_file() else {}

    def write_manifest(self, run: RunDir, df: pd.DataFrame) -> None:
        write_csv_atomic(df, run / "manifest.csv")


def write_rejected(path: Path, *parts: Rejected | Sequence[dict]) -> Rejected:
    """Merge rejected lists and write them (always written, header only when empty)."""
    merged = Rejected()
    for p in parts:
        merged.extend(p)
    merged.write(path)
    return merged
