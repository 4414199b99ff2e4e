"""Opt-in TensorBoard and MLflow logging through MONAI's handlers, inside the run directory."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from medtasks.config import ConfigError, load_config
from medtasks.engine.tracking import Tracking
from medtasks.engine.trainer import Schedule, TrainingSpec, fit
from medtasks.schema import RunConfig, parse_track


def _spec(tmp_path, trackers, epochs=3):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    data = [{"image": x[i], "label": (x[i, :1] > 0).float()} for i in range(48)]
    net = torch.nn.Linear(4, 1)
    return TrainingSpec(network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                        loss_fn=torch.nn.BCEWithLogitsLoss(), train_loader=DataLoader(data, batch_size=16),
                        val_loader=DataLoader(data, batch_size=16),
                        score_fn=lambda p, y: {"acc": float(((p > 0).float() == y).float().mean())},
                        run_dir=tmp_path, device=torch.device("cpu"), schedule=Schedule(epochs=epochs, patience=0),
                        progress=False, tracking=Tracking(trackers=trackers, experiment="toy", run_name="r1"))


def test_tensorboard_gets_the_training_loss_and_every_epoch_of_validation(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(_spec(tmp_path, ("tensorboard",)))
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train_loss", "val_loss", "val_acc"} <= tags
    assert len(acc.Scalars("train_loss")) == 3 * 3                      # 48 rows / 16 = 3 iterations x 3 epochs
    assert [e.step for e in acc.Scalars("val_acc")] == [1, 2, 3]         # at the trainer's epoch


def test_mlflow_writes_a_local_store_in_the_run_directory(tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlflow.tracking import MlflowClient

    fit(_spec(tmp_path, ("mlflow",)))
    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("toy")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == "r1" and runs[0].info.status == "FINISHED"
    val = client.get_metric_history(runs[0].info.run_id, "val_acc")
    assert [m.step for m in val] == [1, 2, 3]
    assert len(client.get_metric_history(runs[0].info.run_id, "train_loss")) == 9


def test_track_is_validated_by_the_config_layer(monkeypatch) -> None:
    assert parse_track("tensorboard, mlflow") == ("tensorboard", "mlflow") and parse_track(None) == ()
    with pytest.raises(ConfigError, match=r"track: unknown tracker\(s\) \['wandb'\]"):
        load_config(None, RunConfig, ["track=wandb"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a))
    with pytest.raises(ConfigError, match=r"track=mlflow needs the mlflow package: pip install 'medtasks\[track\]'"):
        load_config(None, RunConfig, ["track=mlflow"])
