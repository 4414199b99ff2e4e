"""Ignite handlers of the engine: what neither MONAI nor Ignite ship ready-made, and one ignite metric adapted.

- :class:`FixedNameSaver` — ignite ``DiskSaver`` with a fixed file name (``best.pt``/``last.pt``)
  whose replacement is atomic: the new file is written to a temp name and renamed over the old
  one, so a crash never leaves the run without a checkpoint (ignite removes the old file first).
- :class:`EpochScores` — ignite's ``EpochMetric`` with a task-supplied function that returns several metrics
  that need the whole epoch (AUC, F1, log loss); under torchrun with a sharded validation set it gathers
  every rank's shard first (unequal shards), back in the split's order.
- :class:`StreamingCollector` — the same, batch by batch, for outputs too large to keep (whole volumes).
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
from ignite.exceptions import NotComputableError
from ignite.handlers import DiskSaver
from ignite.metrics import EpochMetric

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


class EpochScores(EpochMetric):
    """ignite's ``EpochMetric`` over an evaluator's ``(pred, label)`` batches, scored at epoch end by a function
    that returns several metrics at once; they land in ``engine.state.metrics`` as ``prefix + name``.

    ignite keeps the outputs, checks their types, resets each epoch and puts a dict result into
    ``state.metrics`` (``metrics_result_mode="flatten"``, so no nested dict reaches the trackers). Outputs of any
    shape are kept as ``(batch, -1)`` rows and handed back to ``score_fn`` in their own shape (EpochMetric takes
    1-D / 2-D outputs only, and squeezes a single column).

    ``compute`` is this class's own, for two measured reasons (ignite 0.5.5, torch 2.14, 2 Gloo processes):
    ignite's all-gathers with ``dist.all_gather``, which needs the same number of rows on every rank, while
    the unpadded validation shards (:func:`~medtasks.engine.distributed.shard_eval_loader`) differ by one case
    whenever the ranks do not divide the split (Gloo aborted the process: "Received data size doesn't match
    expected size"); and it scores on rank 0 and broadcasts the result with ``idist.broadcast``, which refuses a
    dict ("Unhandled input type <class 'dict'>"). Here each rank's rows, whatever their number, are gathered
    with torch's ``all_gather_object`` (ignite's ``all_gather_tensors_with_shapes`` does it too, but warns under
    torch 2.14 that its indexing will change meaning), put back into the split's order
    (:func:`~medtasks.engine.distributed.gather_rows`) and scored on every rank alike (same inputs, same numbers).

    Args:
        score_fn: ``score_fn(preds, labels) -> dict[str, float]`` on the whole epoch (CPU float32 tensors).
        prefix: prepended to every metric name.
        sharded: each rank evaluated its strided shard of the split: gather before scoring (else every rank
            scores what it evaluated, the whole split).

    Example:
        >>> from monai.engines import SupervisedEvaluator  # doctest: +SKIP
        >>> EpochScores(lambda p, y: {"mae": float((p - y).abs().mean())}).attach(evaluator, "val")  # doctest: +SKIP
    """

    def __init__(self, score_fn: Callable[[torch.Tensor, torch.Tensor], Mapping[str, float]], prefix: str = "val_",
                 sharded: bool = False) -> None:
        super().__init__(self._score, output_transform=self._rows, check_compute_fn=False)
        self._metrics_result_mode = "flatten"   # ignite's Metric option, which EpochMetric's __init__ does not pass on
        self.score_fn, self.prefix, self.sharded = score_fn, prefix, sharded
        self._shapes: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
        self._items = 0

    def _rows(self, output: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pred, label = output["pred"].detach(), output["label"].detach()
        self._shapes = (tuple(pred.shape[1:]), tuple(label.shape[1:]))
        return pred.float().reshape(len(pred), -1), label.float().reshape(len(label), -1)

    def _score(self, preds: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        (pred_shape, label_shape) = self._shapes
        scores = self.score_fn(preds.reshape(-1, *pred_shape), labels.reshape(-1, *label_shape))
        return {self.prefix + name: float(value) for name, value in scores.items()}

    def completed(self, engine: Engine, name: str) -> None:
        self._items = len(engine.state.dataloader.sampler) if self.sharded else 0  # this rank's items of the split
        super().completed(engine, name)

    def compute(self) -> dict[str, float]:
        if not self._predictions:
            raise NotComputableError("EpochScores: the evaluator ran no batch (empty validation split?)")
        preds, labels = torch.cat(self._predictions), torch.cat(self._targets)
        if self.sharded:
            shards = distributed.all_gather_object((preds, labels, self._items))
            items = sum(s[2] for s in shards)
            preds = distributed.gather_rows([s[0] for s in shards], items)
            labels = distributed.gather_rows([s[1] for s in shards], items)
        return self._score(preds, labels)


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
