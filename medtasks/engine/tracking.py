"""Opt-in experiment tracking through MONAI's handlers: TensorBoard and MLflow, written inside the run.

``track: tensorboard`` (or ``mlflow``, or ``tensorboard,mlflow``) in a config or on the command line.
Every training (a run, each cross-validation fold, each cardiac stage) logs its per-iteration training
loss and its per-epoch validation metrics:

- TensorBoard (MONAI ``TensorBoardStatsHandler``): event files in ``<run_dir>/tensorboard/``
  (``tensorboard --logdir runs/`` shows every run);
- MLflow (MONAI ``MLFlowHandler``): by default a SQLite store ``<run_dir>/mlflow.db`` with artifacts in
  ``<run_dir>/mlruns/`` (``mlflow ui --backend-store-uri sqlite:///<run_dir>/mlflow.db``); ``track_uri``
  (or ``$MLFLOW_TRACKING_URI``) names a server instead. MLflow 3 and MONAI 1.6 refuse MLflow's old file
  store, and the SQLite store needs the full ``mlflow`` package (``mlflow-skinny`` has no database).
  MLflow's anonymous usage telemetry is switched off unless the user's environment already decides it:
  nothing leaves the machine unless configured.

Both need their package (``pip install medtasks[track]``); the config layer refuses ``track`` naming a
missing one (:func:`medtasks.schema.check_trackers`), before any work starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass
class Tracking:
    """Which trackers a training logs to, and under what names."""

    trackers: tuple[str, ...] = ()
    experiment: str = "medtasks"         # MLflow experiment (the task name)
    run_name: str = ""                   # MLflow run name (the run directory's name, plus the fold / stage)
    uri: str | None = None               # MLflow tracking URI; None = a SQLite file in the run directory


def attach_tracking(tracking: Tracking, trainer: Any, evaluator: Any, run_dir: Path,
                    loss_of: Callable[[Any], float]) -> Callable[[], None]:
    """Attach the requested trackers to ``trainer`` (loss per iteration) and ``evaluator`` (metrics per
    epoch, at the trainer's epoch); returns a function that closes them after training."""
    closers: list[Callable[[], None]] = []
    if "tensorboard" in tracking.trackers:
        from monai.handlers import TensorBoardStatsHandler
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        TensorBoardStatsHandler(summary_writer=writer, iteration_log=True, epoch_log=False,
                                output_transform=loss_of, tag_name="train_loss").attach(trainer)
        TensorBoardStatsHandler(summary_writer=writer, iteration_log=False, epoch_log=True,
                                output_transform=lambda _: None,
                                global_epoch_transform=lambda _: trainer.state.epoch).attach(evaluator)
        closers.append(writer.close)
    if "mlflow" in tracking.trackers:
        from monai.handlers import MLFlowHandler

        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("DO_NOT_TRACK", "true")
        local = tracking.uri is None and not os.environ.get("MLFLOW_TRACKING_URI")
        kw: dict[str, Any] = dict(experiment_name=tracking.experiment, run_name=tracking.run_name or run_dir.name)
        if local:  # a SQLite store in the run (MLflow 3 and MONAI refuse the old file store)
            kw.update(tracking_uri=f"sqlite:///{(run_dir / 'mlflow.db').resolve()}",
                      artifact_location=(run_dir / "mlruns").resolve().as_uri())
        elif tracking.uri is not None:
            kw.update(tracking_uri=tracking.uri)
        MLFlowHandler(iteration_log=True, epoch_log=False, output_transform=loss_of, tag_name="train_loss",
                      close_on_complete=True, **kw).attach(trainer)
        MLFlowHandler(iteration_log=False, epoch_log=True, output_transform=lambda _: None,
                      global_epoch_transform=lambda _: trainer.state.epoch, **kw).attach(evaluator)

    def close() -> None:
        for fn in closers:
            fn()

    return close
