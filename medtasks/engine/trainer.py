"""The one training workflow: MONAI ``SupervisedTrainer``/``SupervisedEvaluator`` + Ignite handlers.

Tasks never write a training loop; they hand :func:`fit` a network, loss, optimizer, loaders and
an epoch-level score function. What the handlers do:

- validation every epoch (MONAI ``ValidationHandler``), scored over the whole epoch by ignite's
  ``EpochMetric`` (:class:`~medtasks.engine.handlers.EpochScores`), loss included as ``val_loss``;
- ``checkpoints/best.pt`` on the monitored metric and ``checkpoints/last.pt`` every epoch, both
  through ignite ``Checkpoint`` and written atomically; ``last.pt`` holds everything needed to
  resume (network, optimizer, scheduler, trainer state, early-stopping and best-score state);
- early stopping (ignite ``EarlyStopping``) and ReduceLROnPlateau (MONAI ``LrScheduleHandler``)
  on the monitored metric; a tqdm progress bar with loss and ETA (ignite ``ProgressBar``);
- ``history.csv`` (:class:`~medtasks.engine.handlers.HistoryWriter`);
- exact resume: ``last.pt`` also holds every random stream of the training
  (:class:`~medtasks.engine.rng.TrainingRng`), so a resumed run draws what the uninterrupted one would.

Under torchrun (:mod:`~medtasks.engine.distributed`) the same function trains data-parallel: the training
network in ``DistributedDataParallel``, each rank on its shard of the training set (per-process batch
size = ``train.batch_size``; per-rank seeds), validation sharded without padding and gathered back into
the split's order before scoring, so every rank takes the same best-checkpoint, early-stopping and LR
decisions; rank 0 alone writes checkpoints, history and tracking, and draws the progress bar.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from ignite.engine import Events
from ignite.handlers import Checkpoint, EarlyStopping, ProgressBar, global_step_from_engine
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import LrScheduleHandler, ValidationHandler

from medtasks.engine import distributed
from medtasks.engine.handlers import EpochScores, FixedNameSaver, HistoryWriter, StreamingCollector
from medtasks.engine.rng import TrainingRng
from medtasks.engine.runtime import amp_enabled, engine_network, seed_everything
from medtasks.engine.tracking import Tracking, attach_tracking

log = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor, torch.Tensor], Mapping[str, float]]


@dataclass
class FitResult:
    """What :func:`fit` leaves behind (paths inside the run directory)."""

    best_epoch: int
    best_score: float
    epochs_run: int
    train_time_s: float
    best_path: Path
    last_path: Path
    history_path: Path


def build_optimizer(params: Any, name: str, lr: float, weight_decay: float,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD by config name."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optim.name={name!r}: use adamw, adam or sgd")


def _read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        out.append({k: (int(v) if k == "epoch" else float(v)) for k, v in r.items() if v not in (None, "")})
    return out


def load_checkpoint(path: str | Path, objects: Mapping[str, Any], device: torch.device | str = "cpu") -> None:
    """Load a ``best.pt``/``last.pt`` into ``objects`` (only tensors/plain types: weights_only)."""
    state = torch.load(path, map_location=device, weights_only=True)
    if len(objects) == 1:
        # ignite stores a one-object checkpoint (best.pt) as that object's bare state dict
        (key, obj), = objects.items()
        obj.load_state_dict(state[key] if key in state and isinstance(state[key], dict) else state)
        return
    Checkpoint.load_objects(to_load={k: v for k, v in objects.items() if k in state}, checkpoint=state)


@dataclass
class Schedule:
    """How long and on what a network trains: epochs, the monitored metric, early stopping and the LR schedule.

    Example:
        >>> Schedule(epochs=3, monitor="val_dice", mode="max", scheduler="none").patience
        10
    """

    epochs: int
    monitor: str = "val_loss"               # picks best.pt, drives early stopping and ReduceLROnPlateau
    mode: str = "min"
    patience: int = 10                      # epochs without improvement before stopping; 0 disables
    scheduler: str = "plateau"              # plateau | cosine | none
    factor: float = 0.5                     # ReduceLROnPlateau factor
    sched_patience: int = 3                 # ReduceLROnPlateau patience
    min_lr: float = 1e-7
    steps_per_epoch: int | None = None      # iterations per epoch (None = one pass over the training loader)

    @classmethod
    def from_config(cls, train: Any, scheduler: Any) -> Schedule:
        """From a run config's ``train`` and ``scheduler`` sections."""
        return cls(epochs=train.epochs, monitor=train.monitor, mode=train.monitor_mode,
                   patience=train.early_stopping_patience, scheduler=scheduler.name, factor=scheduler.factor,
                   sched_patience=scheduler.patience, min_lr=scheduler.min_lr, steps_per_epoch=train.steps_per_epoch)


@dataclass
class Precision:
    """Numeric switches of the engine (see :func:`~medtasks.engine.runtime.engine_network`; ``amp`` is CUDA's)."""

    amp: bool = True
    cpu_bf16: bool = False
    channels_last: bool = False

    @classmethod
    def from_config(cls, train: Any) -> Precision:
        return cls(amp=train.amp, cpu_bf16=train.cpu_bf16, channels_last=train.channels_last)


@dataclass
class TrainingSpec:
    """Everything :func:`fit` needs, as one typed object (the kind bases build it from the config).

    Attributes:
        score_fn: epoch-level validation metrics from ``(logits, labels)`` (CPU tensors); their
            names get the ``val_`` prefix; ``val_loss`` is added from ``loss_fn``.
        prepare_batch: batch -> model inputs for training and validation (MONAI's PrepareBatch).
        train_prepare_batch: a training-only replacement (e.g. :class:`~medtasks.engine.mixup.MixUpBatch`).
        iteration_update: a replacement for MONAI's iteration; default MONAI's.
        val_inferer: MONAI inferer of the validation pass (e.g. ``SlidingWindowInferer`` on whole volumes).
        stream_score: ``(batch_fn, reduce_fn)`` to score validation batch by batch instead of collecting every
            output (:class:`~medtasks.engine.handlers.StreamingCollector`; ``score_fn`` is then unused and
            ``val_loss`` is the mean of the per-batch losses).
        resume: continue from ``checkpoints/last.pt`` in ``run_dir``.
        tracking: TensorBoard / MLflow logging (:mod:`~medtasks.engine.tracking`); none by default.
        seed: the run's seed; under torchrun each rank reseeds with ``seed + 1000 * rank`` and the training
            sampler shuffles with it (None: 0).
        find_unused_parameters: DDP's option, for a network whose forward leaves some parameters unused.
    """

    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: torch.nn.Module
    train_loader: Any
    val_loader: Any
    run_dir: Path
    device: torch.device
    schedule: Schedule
    precision: Precision = field(default_factory=Precision)
    score_fn: ScoreFn | None = None
    prepare_batch: Any = None
    train_prepare_batch: Any = None
    iteration_update: Callable | None = None
    val_inferer: Any = None
    stream_score: tuple[Callable, Callable] | None = None
    resume: bool = False
    progress: bool = True
    tracking: Tracking = field(default_factory=Tracking)
    seed: int | None = None
    find_unused_parameters: bool = False


def fit(spec: TrainingSpec) -> FitResult:
    """Train ``spec.network`` with validation every epoch; see the module docstring for the handlers.

    Example:
        >>> spec = TrainingSpec(network=net, optimizer=opt, loss_fn=loss, train_loader=tl, val_loader=vl,
        ...                     run_dir=Path("runs/x"), device=torch.device("cpu"), schedule=Schedule(epochs=2))
        >>> res = fit(spec)  # doctest: +SKIP
    """
    s, p = spec.schedule, spec.precision
    network, optimizer, loss_fn, device = spec.network, spec.optimizer, spec.loss_fn, spec.device
    train_loader, val_loader, prepare_batch = spec.train_loader, spec.val_loader, spec.prepare_batch
    train_prepare_batch, resume, progress = spec.train_prepare_batch, spec.resume, spec.progress
    score_fn = spec.score_fn or (lambda logits, labels: {})
    epochs, monitor, mode, patience = s.epochs, s.monitor, s.mode, s.patience
    run_dir = Path(spec.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    main = distributed.is_main()
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    use_amp = amp_enabled(p.amp, device)
    network.to(device)
    engine_net = engine_network(network, device, p.cpu_bf16, p.channels_last)  # checkpoints keep `network`
    seed = int(spec.seed or 0)
    train_net, val_sharded = engine_net, False
    if distributed.is_distributed():
        seed_everything(seed + 1000 * distributed.rank())  # the rank's own augmentation / dropout streams
        train_loader = distributed.shard_train_loader(train_loader, seed)
        val_loader, val_sharded = distributed.shard_eval_loader(val_loader)
        train_net = distributed.wrap_ddp(engine_net, device, spec.find_unused_parameters)
    kwargs: dict[str, Any] = {} if prepare_batch is None else {"prepare_batch": prepare_batch}

    cpu_loss = copy.deepcopy(loss_fn).cpu().eval()  # eval mode: validation scores the plain targets
    train_kwargs = kwargs if train_prepare_batch is None else {"prepare_batch": train_prepare_batch}

    def epoch_score(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            out = {"loss": float(cpu_loss(logits, labels).mean())}
        out.update(score_fn(logits, labels))
        return out

    ev_kwargs = dict(kwargs, **({"inferer": spec.val_inferer} if spec.val_inferer is not None else {}))
    evaluator = SupervisedEvaluator(device=device, val_data_loader=val_loader, network=engine_net, amp=use_amp,
                                    decollate=False, **ev_kwargs)
    if spec.stream_score is None:
        EpochScores(epoch_score, sharded=val_sharded).attach(evaluator, "val_scores")
    else:
        batch_fn, reduce_fn = spec.stream_score

        def with_loss(logits: torch.Tensor, labels: torch.Tensor) -> dict:
            with torch.no_grad():
                return {"_loss": float(cpu_loss(logits, labels).mean()), **batch_fn(logits, labels)}

        def reduce_with_loss(parts: list) -> dict:
            return {"loss": float(np.mean([p["_loss"] for p in parts])) if parts else float("nan"),
                    **reduce_fn(parts)}

        StreamingCollector(with_loss, reduce_with_loss, sharded=val_sharded).attach(evaluator)
    trainer = SupervisedTrainer(device=device, max_epochs=epochs, train_data_loader=train_loader, network=train_net,
                                optimizer=optimizer, loss_function=loss_fn.to(device), amp=use_amp, decollate=False,
                                epoch_length=s.steps_per_epoch, iteration_update=spec.iteration_update, **train_kwargs)
    if monitor != "val_loss" and not monitor.startswith("val_"):
        raise ValueError(f"train.monitor={monitor!r}: name a validation metric such as val_loss")
    sign = 1.0 if mode == "max" else -1.0

    def priority(engine: Any) -> float:
        value = engine.state.metrics.get(monitor)
        if value is None:
            raise KeyError(f"train.monitor={monitor!r} is not a validation metric; have {sorted(engine.state.metrics)}")
        return sign * value if math.isfinite(value) else -math.inf

    sampler = getattr(train_loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):  # the distributed sampler's shuffle: seed + epoch, the same after a resume
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: sampler.set_epoch(e.state.epoch))
    if distributed.is_distributed():  # every rank validates (and rank 0 saves) the same network
        evaluator.add_event_handler(Events.STARTED, lambda e: distributed.broadcast_buffers(network))
    ValidationHandler(interval=1, validator=evaluator, epoch_level=True).attach(trainer)
    best_ckpt = Checkpoint({"network": network}, FixedNameSaver(ckpt_dir, "best.pt"), n_saved=1,
                           score_function=priority, score_name=monitor,
                           global_step_transform=global_step_from_engine(trainer))
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, best_ckpt)
    sched = None
    if s.scheduler == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=s.factor,
                                                           patience=s.sched_patience, min_lr=s.min_lr)
        LrScheduleHandler(sched, print_lr=False, epoch_level=True,
                          step_transform=lambda e: e.state.metrics[monitor]).attach(evaluator)
    elif s.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=s.min_lr)
        LrScheduleHandler(sched, print_lr=False, epoch_level=True).attach(trainer)
    elif s.scheduler != "none":
        raise ValueError(f"scheduler.name={s.scheduler!r}: use plateau, cosine or none")
    stopper = None
    if patience > 0:
        stopper = EarlyStopping(patience=patience, score_function=priority, trainer=trainer)
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, stopper)

    history_path = run_dir / "history.csv"
    history = HistoryWriter(history_path, evaluator, optimizer, rows=_read_history(history_path) if resume else None)
    history.attach(trainer)
    to_save: dict[str, Any] = {"network": network, "optimizer": optimizer, "trainer": trainer,
                               "best_checkpoint": best_ckpt,
                               "rng": TrainingRng(train_loader.dataset, [train_prepare_batch, spec.iteration_update])}
    if sched is not None:
        to_save["scheduler"] = sched
    if stopper is not None:
        to_save["early_stopping"] = stopper
    last_ckpt = Checkpoint(to_save, FixedNameSaver(ckpt_dir, "last.pt"), n_saved=1)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, last_ckpt)
    if progress and main:
        ProgressBar(persist=True, ncols=100).attach(trainer,
                                                    output_transform=lambda out: {"loss": float(out["loss"].detach())})

    last_path = ckpt_dir / "last.pt"
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"cannot resume: {last_path} does not exist (the run never finished an epoch)")
        load_checkpoint(last_path, to_save, device)
        log.info("resumed from %s at epoch %d", last_path, trainer.state.epoch)
        trainer.state.max_epochs = epochs

    close_tracking = (attach_tracking(spec.tracking, trainer, evaluator, run_dir,
                                      lambda out: float(out["loss"].detach())) if main else (lambda: None))
    t0 = time.perf_counter()
    try:
        if resume and trainer.state.epoch >= epochs:
            log.info("run already trained %d of %d epochs; nothing to resume", trainer.state.epoch, epochs)
        else:
            trainer.run()
    finally:
        close_tracking()
    distributed.barrier()  # every rank sees the final checkpoints before it goes on
    elapsed = time.perf_counter() - t0
    rows = history.rows
    scored = [r for r in rows if isinstance(r.get(monitor), float) and math.isfinite(r[monitor])]
    best = max(scored, key=lambda r: sign * r[monitor]) if scored else {"epoch": 0, monitor: float("nan")}
    return FitResult(best_epoch=int(best["epoch"]), best_score=float(best[monitor]), epochs_run=trainer.state.epoch,
                     train_time_s=round(elapsed, 1), best_path=ckpt_dir / "best.pt", last_path=last_path,
                     history_path=history_path)
