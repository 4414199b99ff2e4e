"""Small Ignite handlers the engine needs that neither MONAI nor Ignite ship ready-made.

- :class:`FixedNameSaver` — ignite ``DiskSaver`` with a fixed file name (``best.pt``/``last.pt``)
  whose replacement is atomic: the new file is written to a temp name and renamed over the old
  one, so a crash never leaves the run without a checkpoint (ignite removes the old file first).
- :class:`EpochCollector` — gathers an evaluator's predictions over an epoch and scores them
  with a task-supplied function (metrics that need the whole epoch: AUC, F1, log loss); under torchrun
  with a sharded validation set it gathers every rank's shard first, back in the split's order.
- :class:`HistoryWriter` — one ``history.csv`` row per epoch, rewritten atomically.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver

from medtasks.engine import distributed
from medtasks.io.atomic import write_csv_atomic

log = logging.getLogger(__name__)


class FixedNameSaver(DiskSaver):
    """Save every checkpoint of one ignite ``Checkpoint`` under one fixed name, atomically."""

    def __init__(self, dirname: str | Path, filename: str) -> None:
        super().__init__(str(dirname), atomic=True, create_dir=True, require_empty=False)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename, metadata)

    def remove(self, filename: str) -> None:  # the atomic rename replaces the old file
        return None


class EpochCollector:
    """Collect ``(pred, label)`` batches of an evaluator and score them at epoch end.

    Args:
        score_fn: ``score_fn(logits, labels) -> dict[str, float]`` on the whole epoch (CPU tensors).
        prefix: prepended to every metric name written into ``engine.state.metrics``.
        sharded: each rank evaluated its strided shard (:func:`~medtasks.engine.distributed.shard_eval_loader`):
            score the gathered whole split, on every rank alike.
    """

    def __init__(self, score_fn: Callable[[torch.Tensor, torch.Tensor], Mapping[str, float]],
                 prefix: str = "val_", sharded: bool = False) -> None:
        self.score_fn = score_fn
        self.prefix = prefix
        self.sharded = sharded
        self.preds: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._score)

    def _reset(self, engine: Engine) -> None:
        self.preds, self.labels = [], []

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        self.preds.append(out["pred"].detach().float().cpu())
        self.labels.append(out["label"].detach().float().cpu())

    def _score(self, engine: Engine) -> None:
        logits = torch.cat(self.preds)
        labels = torch.cat(self.labels)
        if self.sharded:
            n_items = len(engine.state.dataloader.sampler)  # this rank's share of the split's items
            shards = distributed.all_gather_object((logits, labels, n_items))
            items = sum(s[2] for s in shards)
            logits = distributed.gather_rows([s[0] for s in shards], items)
            labels = distributed.gather_rows([s[1] for s in shards], items)
        for name, value in self.score_fn(logits, labels).items():
            engine.state.metrics[self.prefix + name] = float(value)


class StreamingCollector:
    """Score an evaluator batch by batch, for outputs too large (or too ragged) to keep: full 3-D volumes.

    ``batch_fn(pred, label) -> dict`` runs on each batch (CPU tensors) and returns whatever the epoch
    needs (e.g. per-class voxel counts, lesion counts, a loss sum); ``reduce_fn(list of those dicts)
    -> dict[str, float]`` turns them into the epoch's metrics at the end. ``sharded``: every rank's parts
    are gathered (in rank order) before the reduction, which must not depend on their order (sums, counts).
    """

    def __init__(self, batch_fn: Callable[[torch.Tensor, torch.Tensor], Mapping[str, Any]],
                 reduce_fn: Callable[[list], Mapping[str, float]], prefix: str = "val_", sharded: bool = False) -> None:
        self.batch_fn, self.reduce_fn, self.prefix = batch_fn, reduce_fn, prefix
        self.sharded = sharded
        self.parts: list = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.parts.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._score)

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        self.parts.append(self.batch_fn(out["pred"].detach().float().cpu(), out["label"].detach().float().cpu()))

    def _score(self, engine: Engine) -> None:
        parts = [p for shard in distributed.all_gather_object(self.parts) for p in shard] if self.sharded \
            else self.parts
        for name, value in self.reduce_fn(parts).items():
            engine.state.metrics[self.prefix + name] = float(value)


class HistoryWriter:
    """Write ``history.csv``: epoch, train_loss, val metrics, lr, time_s (one row per epoch)."""

    def __init__(self, path: str | Path, evaluator: Engine, optimizer: torch.optim.Optimizer,
                 rows: list[dict[str, Any]] | None = None) -> None:
        self.path = Path(path)
        self.evaluator = evaluator
        self.optimizer = optimizer
        self.rows: list[dict[str, Any]] = list(rows or [])
        self._losses: list[float] = []
        self._t0 = time.perf_counter()

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.EPOCH_STARTED, self._start)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._loss)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _start(self, engine: Engine) -> None:
        self._losses, self._t0 = [], time.perf_counter()

    def _loss(self, engine: Engine) -> None:
        self._losses.append(float(engine.state.output["loss"].detach()))

    def _write(self, engine: Engine) -> None:
        loss = distributed.mean_across_ranks(float(np.sum(self._losses)), len(self._losses))  # one rank: the mean
        row: dict[str, Any] = {"epoch": engine.state.epoch, "train_loss": float(loss)}
        row.update({k: v for k, v in self.evaluator.state.metrics.items() if isinstance(v, (int, float))})
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        row["time_s"] = round(time.perf_counter() - self._t0, 2)
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        write_csv_atomic(pd.DataFrame(self.rows), self.path)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("epoch",) and isinstance(v, float))
        log.info("epoch %d: %s", row["epoch"], shown)
