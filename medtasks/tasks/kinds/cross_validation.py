"""K-fold cross-validation for classification tasks (the source report's 5-fold MultilabelStratifiedKFold).

``cv.folds = k >= 2``: the held-out test split stays as it is; the remaining patients are cut
into ``k`` folds by ``MultilabelStratifiedKFold`` (iterative-stratification) on each patient's
label vector, so no patient is in two folds and every label is spread evenly. Fold ``i`` trains
on the other folds and validates on fold ``i``; its best model predicts fold ``i`` (out-of-fold,
``oof_predictions.csv``: one row per training slice). Temperature and thresholds are then fitted
on all out-of-fold outputs. ``cv.select``: ``best`` keeps the fold with the best validation score
(the report's choice), ``ensemble`` averages the logits of every fold model at test time.

Run directory: ``fold_<i>/`` per fold (checkpoints, history.csv), ``cv.json`` (per-fold metrics,
mean and sd), ``oof_predictions.csv``; the top-level ``checkpoints/best.pt`` is the selected fold's.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medtasks.engine import distributed
from medtasks.engine.trainer import FitResult
from medtasks.io.atomic import copy_file_atomic, write_csv_atomic, write_json_atomic
from medtasks.metrics.tuning import sigmoid
from medtasks.rundir import RunDir

if TYPE_CHECKING:
    from medtasks.tasks.kinds.classification import ClassificationTask

log = logging.getLogger(__name__)

__all__ = ["train_cv", "fold_dirs"]


def fold_dirs(run: RunDir, k: int) -> list[RunDir]:
    out = []
    for i in range(k):
        if distributed.is_main():  # under torchrun rank 0 alone writes the run directory
            (run / f"fold_{i}" / "checkpoints").mkdir(parents=True, exist_ok=True)
        out.append(RunDir(run / f"fold_{i}"))
    return out


def _fold_frame(df: pd.DataFrame, fold: int) -> pd.DataFrame:
    pool = df[df.fold >= 0]
    return pool.assign(split=np.where(pool.fold == fold, "val", "train"))


def train_cv(task: ClassificationTask, run: RunDir, df: pd.DataFrame, resume: bool = False,
             progress: bool = True) -> FitResult:
    """Train every fold, write the out-of-fold predictions and cv.json, select/ensemble, calibrate."""
    cfg = task.cfg
    k = cfg.cv.folds
    if "fold" not in df.columns:
        raise ValueError("cv.folds is set but the manifest has no fold column; start a new run")
    pool = df[df.fold >= 0]
    if cfg.sampling.scope == "train_val":  # balanced once over all non-test rows, then split into folds
        pool = task.balance_training(run, pool).reset_index(drop=True)
        df = pool
    if not resume or "norm_mean" not in task.state:
        # One normalisation for all folds (fitted on every non-test row), so that fold models share
        # their input pipeline and can be ensembled.
        task.fit_state(task.records(pool))
    shared_state = dict(task.state)
    results: list[FitResult] = []
    oof = np.full((len(pool), len(task.labels)), np.nan, dtype=np.float64)
    oof_index = {idx: i for i, idx in enumerate(pool.index)}
    per_fold: list[dict[str, Any]] = []
    for i, fold_run in enumerate(fold_dirs(run, k)):
        done = fold_run / "fold_done.json"
        task.state = dict(shared_state)
        frame = _fold_frame(df, i)
        log.info("cv fold %d/%d: %d train / %d val rows", i + 1, k, (frame.split == "train").sum(),
                 (frame.split == "val").sum())
        if done.is_file():
            res = FitResult(**{**json.loads(done.read_text()), "best_path": fold_run / "checkpoints" / "best.pt",
                               "last_path": fold_run / "checkpoints" / "last.pt",
                               "history_path": fold_run / "history.csv"})
        else:
            fold_resume = resume and (fold_run / "checkpoints" / "last.pt").is_file()
            train_df, val_df = task.split_train_val(frame)
            if cfg.sampling.scope == "train":
                train_df = task.balance_training(fold_run, train_df)
            res = task.fit_split(fold_run, train_df, val_df, resume=fold_resume, progress=progress)
            write_json_atomic(done, {"best_epoch": res.best_epoch, "best_score": res.best_score,
                                     "epochs_run": res.epochs_run, "train_time_s": res.train_time_s})
        results.append(res)
        val = frame[frame.split == "val"]
        logits = task.infer_logits(task.load_model(fold_run, "best"), val.reset_index(drop=True), "val")
        for row, idx in enumerate(val.index):
            oof[oof_index[idx]] = logits[row]
        y = val[list(task.labels)].astype(int).to_numpy()
        per_fold.append({"fold": i, "n_val": int(len(val)), "best_epoch": res.best_epoch,
                         "best_" + cfg.train.monitor: res.best_score, "train_time_s": res.train_time_s,
                         **task.val_metrics(y, sigmoid(logits))})
    task.state = dict(shared_state)
    y_pool = pool[list(task.labels)].astype(int).to_numpy()
    task.fit_calibration(oof, y_pool)
    _write_oof(run, task, pool, oof)
    best = _select(cfg.train.monitor_mode, results)
    summary = _summary(per_fold)
    write_json_atomic(run / "cv.json", {"folds": k, "select": cfg.cv.select, "selected_fold": best,
                                        "per_fold": per_fold, **summary})
    copy_file_atomic(run / f"fold_{best}" / "checkpoints" / "best.pt", run / "checkpoints" / "best.pt")
    copy_file_atomic(run / f"fold_{best}" / "history.csv", run / "history.csv")
    task.save_state(run)
    sel = results[best]
    total_time = round(sum(r.train_time_s for r in results), 1)
    log.info("cv: selected fold %d (%s); mean +- sd %s", best, cfg.cv.select, summary["mean"])
    return FitResult(best_epoch=sel.best_epoch, best_score=sel.best_score, epochs_run=sel.epochs_run,
                     train_time_s=total_time, best_path=run / "checkpoints" / "best.pt",
                     last_path=sel.last_path, history_path=run / "history.csv")


def _select(mode: str, results: list[FitResult]) -> int:
    scores = np.array([r.best_score for r in results], dtype=np.float64)
    scores = np.where(np.isfinite(scores), scores, -np.inf if mode == "max" else np.inf)
    return int(np.argmax(scores) if mode == "max" else np.argmin(scores))


def _summary(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in per_fold[0].items() if k not in ("fold", "n_val") and isinstance(v, (int, float))]
    mean = {k: float(np.mean([f[k] for f in per_fold])) for k in keys}
    sd = {k: float(np.std([f[k] for f in per_fold], ddof=1)) if len(per_fold) > 1 else 0.0 for k in keys}
    return {"mean": mean, "sd": sd}


def _write_oof(run: RunDir, task: ClassificationTask, pool: pd.DataFrame, oof_logits: np.ndarray) -> None:
    probs = sigmoid(oof_logits / task.temperature())
    frame = task.prediction_frame(pool, probs)
    frame.insert(1, "fold", pool["fold"].to_numpy())
    for j, lab in enumerate(task.labels):  # raw first-stage logits: the sequence head's training input
        frame[f"logit_{lab}"] = oof_logits[:, j]
    write_csv_atomic(frame, run / "oof_predictions.csv")
