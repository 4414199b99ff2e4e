"""``medtasks evaluate <task> --run R --manifest M``: a trained run on another labelled manifest (external
validation), into ``R/evaluate/<timestamp>/``.

The model, its fitted normalisation, temperature and thresholds come from ``R``; the rows from ``M`` (all of
them, or ``--split``). Before any inference the manifest is checked: the task's required columns (a missing
one is an error naming it), label columns holding only 0 / 1 (otherwise an error naming the row and the
column), and every file the rows name (a missing one becomes a ``rejected.csv`` row with the reason, and the
evaluation goes on without it). The task's own ``evaluate`` then writes ``predictions.csv``,
``metrics.json`` (with patient-resampled CIs) and the figures into the evaluation folder, and
``report.html`` is rendered there, marked as an external evaluation naming the manifest. ``--by <column>``
adds subgroup tables (:mod:`medtasks.subgroups`: ``subgroups.csv``, ``metrics.json`` ``subgroups``, a report
section with a forest plot).

The evaluation folder reads the trained model's files (checkpoints, folds, stage folders, the sequence head
and what training recorded) from ``R`` through :class:`EvaluationDir` and writes everything else to itself.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medtasks.data.manifest import ManifestError, Rejected
from medtasks.rundir import RunDir
from medtasks.subgroups import subgroup_analysis, subgroup_values

log = logging.getLogger(__name__)

# what an evaluation reads from the trained run rather than writing itself
MODEL_FILES = ("checkpoints", "sequence", "cv.json", "sampling.json", "sequence.json", "class12", "class3", "gate")


@dataclass
class EvaluationDir(RunDir):
    """An evaluation folder: the trained run's model files come from ``source``, every output goes to ``path``."""

    source: Path = Path(".")

    def __truediv__(self, name: str) -> Path:
        if name in MODEL_FILES or name.startswith("fold_"):
            return Path(self.source) / name
        return self.path / name


def _file_columns(df: pd.DataFrame) -> list[str]:
    """Columns that name files: every non-empty value an absolute path (``read_manifest`` made them so)."""
    cols = []
    for c in df.columns:
        if not (df[c].dtype == object or pd.api.types.is_string_dtype(df[c])):
            continue
        vals = [v for v in df[c] if isinstance(v, str) and v]
        if vals and all(os.path.isabs(v) for v in vals):
            cols.append(c)
    return cols


def check_rows(task: Any, df: pd.DataFrame, manifest: Path) -> tuple[pd.DataFrame, Rejected]:
    """Label values and files of ``df`` (see the module docstring): the usable rows and the rejected ones."""
    labels = [lab for lab in task.labels if lab in df.columns]
    for lab in labels:
        values = pd.to_numeric(df[lab], errors="coerce")
        bad = ~values.isin([0, 1])
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise ManifestError(f"manifest {manifest}: row {i + 2} (line {i + 2} of the CSV), column {lab!r} holds "
                                f"{df[lab].iloc[i]!r}; labels must be 0 or 1")
        df[lab] = values.astype(int)
    rejected = Rejected()
    keep = pd.Series(True, index=df.index)
    for col in _file_columns(df):
        for i, v in df[col].items():
            if isinstance(v, str) and v and not Path(v).exists():
                rejected.add(v, "missing_file", f"manifest {manifest.name}, column {col!r}: no such file")
                keep[i] = False
    return df[keep].reset_index(drop=True), rejected


def evaluate_run(task: Any, rd: RunDir, manifest: str | Path, split: str | None = None,
                 out: str | Path | None = None, by: list[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """External evaluation of ``rd``'s model on ``manifest``; returns the folder and its metrics. ``by``: manifest
    columns to tabulate subgroups by (:mod:`medtasks.subgroups`)."""
    from medtasks.engine.runtime import select_device
    from medtasks.io.atomic import copy_file_atomic, write_csv_atomic, write_json_atomic
    from medtasks.report import render_report
    from medtasks.rundir import RunLog

    manifest = Path(manifest)
    df = task.load_manifest(manifest)
    if split is not None:
        if "split" not in df.columns:
            raise ManifestError(f"manifest {manifest}: --split {split} needs a split column; it has {list(df.columns)}")
        df = df[df["split"] == split].reset_index(drop=True)
        if df.empty:
            raise ManifestError(f"manifest {manifest}: no rows with split == {split!r}")
    df, rejected = check_rows(task, df, manifest)
    if df.empty:
        raise ManifestError(f"manifest {manifest}: no usable rows ({len(rejected)} rejected: missing files)")
    values = subgroup_values(task, df, list(by)) if by else {}   # a bad --by column fails before any inference
    df = df.assign(split=task.cfg.eval.split)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path(out) if out else rd.path / "evaluate" / stamp
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty: choose another --out")
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    ev = EvaluationDir(folder, source=rd.path)
    task.save_state = lambda run: None   # the trained run's state is read here, never rewritten
    note = (f"EXTERNAL EVALUATION of run {rd.name} on manifest {manifest.resolve()} "
            f"({len(df)} rows{'' if split is None else f', split {split}'}; {len(rejected)} rejected)")
    with RunLog() as run_log:
        run_log.open(folder / "run.log")
        log.info("%s", note)
        copy_file_atomic(rd / "config.resolved.yaml", folder / "config.resolved.yaml")
        ev.write_env(task.cfg.seed, str(select_device(task.cfg.train.device)),
                     {"evaluation_of": str(rd.path.resolve()), "manifest": str(manifest.resolve())})
        write_csv_atomic(df, folder / "manifest.csv")
        rejected.extend(task.prepare_evaluation(ev, df))
        rejected.write(folder / "rejected.csv")
        metrics = task.evaluate(ev, df, None, [note])
        metrics["external_evaluation"] = {"run": str(rd.path.resolve()), "manifest": str(manifest.resolve()),
                                          "split": split, "n_rows": len(df), "n_rejected": len(rejected)}
        write_json_atomic(folder / "metrics.json", metrics)
        if values:
            metrics["subgroups"] = subgroup_analysis(folder, values, n_boot=int(task.cfg.eval.n_boot),
                                                     seed=int(task.cfg.seed))
            write_json_atomic(folder / "metrics.json", metrics)
        render_report(folder)
    return folder, metrics
