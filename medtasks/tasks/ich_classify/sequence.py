"""The series sequence head of ``ich_classify`` (stage 2), trained on out-of-fold first-stage outputs.

After the cross-validation, every training slice has a first-stage logit vector from a model that
never trained on its patient (``oof_predictions.csv``). Series are rebuilt in z order and a
:class:`~medtasks.models.sequence.SeriesRefiner` learns to refine each slice's logits from its
neighbours. The head is itself cross-validated on the same folds: head ``k`` trains on the series of
the other folds and predicts fold ``k``, which gives out-of-fold stage-2 logits for fitting the
stage-2 temperature and thresholds; at test time the ``k`` heads are averaged. Training runs on the
shared engine (``medtasks.engine.trainer.fit``), one series per batch.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.engines.utils import PrepareBatch
from torch.utils.data import DataLoader, Dataset

from medtasks.engine import distributed
from medtasks.engine.runtime import select_device
from medtasks.engine.trainer import Precision, Schedule, TrainingSpec, build_optimizer, fit
from medtasks.metrics.tuning import sigmoid
from medtasks.models.ensemble import EnsembleModel
from medtasks.models.sequence import SeriesRefiner
from medtasks.rundir import RunDir

log = logging.getLogger(__name__)

__all__ = ["series_groups", "train_sequence_head", "load_sequence_head", "refine"]


def series_groups(df: pd.DataFrame) -> list[np.ndarray]:
    """Row positions of ``df`` per series, each in z order."""
    order = df.reset_index(drop=True).assign(_pos=np.arange(len(df)))
    return [g.sort_values("Z", kind="stable")["_pos"].to_numpy()
            for _, g in order.groupby("series_instance_uid", sort=True)]


class _Series(Dataset):
    def __init__(self, logits: np.ndarray, labels: np.ndarray, groups: list[np.ndarray]) -> None:
        self.items = [(torch.as_tensor(logits[g].T, dtype=torch.float32),
                       torch.as_tensor(labels[g], dtype=torch.float32))
                      for g in groups]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, y = self.items[i]
        return {"image": x, "label": y}


class _SeriesBatch(PrepareBatch):
    """One series per batch: image (1, L, S), label (S, L) to match the head's (S, L) output."""

    def __call__(self, batchdata: dict[str, Any], device: Any = None, non_blocking: bool = False, **kwargs: Any) -> Any:
        return (batchdata["image"].to(device, non_blocking=non_blocking),
                batchdata["label"][0].to(device, non_blocking=non_blocking))


def _head(cfg: Any, n_labels: int) -> SeriesRefiner:
    return SeriesRefiner(n_labels=n_labels, kind=cfg.kind, hidden=cfg.hidden, kernel=cfg.kernel, dropout=cfg.dropout)


def _apply(head: torch.nn.Module, logits: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    out = np.array(logits, dtype=np.float64, copy=True)
    head.eval()
    with torch.no_grad():
        for g in groups:
            x = torch.as_tensor(logits[g].T[None], dtype=torch.float32)
            out[g] = head(x).double().numpy()
    return out


def train_sequence_head(task: Any, run: RunDir, df: pd.DataFrame, progress: bool = False) -> dict[str, Any]:
    """Train the k fold heads on ``oof_predictions.csv``; fit stage-2 calibration on their OOF outputs."""
    cfg, labels = task.cfg.sequence, list(task.labels)
    distributed.barrier()  # under torchrun rank 0 has just written the file the other ranks read
    oof = pd.read_csv(run / "oof_predictions.csv", dtype={"case_id": str})
    pool = df[df.fold >= 0].reset_index(drop=True)
    by_case = oof.set_index("case_id")
    keys = pool[task.case_column].astype(str)
    logits = by_case.loc[keys, [f"logit_{lab}" for lab in labels]].to_numpy(np.float64)
    y = pool[labels].astype(int).to_numpy()
    groups = series_groups(pool)
    fold_of = np.array([int(pool.fold.iloc[g[0]]) for g in groups])
    device = select_device(task.cfg.train.device)
    weights = task.class_weights()
    stage2 = np.array(logits, copy=True)
    for k in range(task.cfg.cv.folds):
        train_g = [g for g, f in zip(groups, fold_of) if f != k]
        val_g = [g for g, f in zip(groups, fold_of) if f == k]
        head = _head(cfg, len(labels))
        loss = task.build_loss()
        fit(TrainingSpec(network=head, optimizer=build_optimizer(head.parameters(), "adamw", cfg.lr, cfg.weight_decay),
                         loss_fn=loss, train_loader=DataLoader(_Series(logits, y, train_g), batch_size=1, shuffle=True),
                         val_loader=DataLoader(_Series(logits, y, val_g), batch_size=1),
                         run_dir=run / "sequence" / f"fold_{k}", device=device,
                         schedule=Schedule(epochs=cfg.epochs, patience=cfg.patience, scheduler="none"),
                         precision=Precision(amp=False), prepare_batch=_SeriesBatch(), progress=progress,
                         seed=task.cfg.seed))
        best = task.restore(_head(cfg, len(labels)), run / "sequence" / f"fold_{k}" / "checkpoints" / "best.pt")
        for g in val_g:
            stage2[g] = _apply(best, logits, [g])[g]
    stage1_state = {k: task.state.get(k) for k in ("temperature", "thresholds") if k in task.state}
    task.fit_calibration(stage2, y)
    task.state["sequence"] = {"kind": cfg.kind, "folds": task.cfg.cv.folds, "stage1": stage1_state}
    task.save_state(run)
    before = _weighted_f1(y, logits, stage1_state, labels, task)
    after = _weighted_f1(y, stage2, task.state, labels, task)
    log.info("sequence head (%s): out-of-fold weighted F1 %.4f -> %.4f", cfg.kind, before, after)
    return {"oof_weighted_f1_stage1": before, "oof_weighted_f1_stage2": after, "weights": weights}


def _weighted_f1(y: np.ndarray, logits: np.ndarray, state: dict[str, Any], labels: list[str], task: Any) -> float:
    from sklearn.metrics import f1_score

    t = float(state.get("temperature", 1.0))
    thr = np.array([float((state.get("thresholds") or {}).get(lab, task.cfg.eval.threshold)) for lab in labels])
    return float(f1_score(y, sigmoid(logits / t) >= thr, average="weighted", zero_division=0))


def load_sequence_head(task: Any, run: RunDir) -> torch.nn.Module | None:
    """The averaged fold heads of a run trained with ``sequence.enabled``, else None."""
    if "sequence" not in task.state:
        return None
    heads = [task.restore(_head(task.cfg.sequence, len(task.labels)),
                          run / "sequence" / f"fold_{k}" / "checkpoints" / "best.pt")
             for k in range(int(task.state["sequence"]["folds"]))]
    return EnsembleModel(heads).eval()


def refine(head: torch.nn.Module, df: pd.DataFrame, logits: np.ndarray) -> np.ndarray:
    """Stage-2 logits of ``df``'s rows (any order; series rebuilt by Z) from their stage-1 logits."""
    return _apply(head, np.asarray(logits, np.float64), series_groups(df))
