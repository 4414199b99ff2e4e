"""The engine on a tiny learnable problem: checkpoints, history, early stopping, resume."""

from __future__ import annotations

import csv

import pytest
import torch
from monai.data import DataLoader

from medtasks.engine.trainer import Schedule, TrainingSpec, fit, load_checkpoint


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, :1] > 0).float()
    return [{"image": x[i], "label": y[i]} for i in range(n)]


def _fit(tmp_path, epochs, patience=0, resume=False, lr=0.05, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    return net, fit(TrainingSpec(network=net, optimizer=opt, loss_fn=torch.nn.BCEWithLogitsLoss(),
                                 train_loader=DataLoader(_data(), batch_size=16, shuffle=True),
                                 val_loader=DataLoader(_data(32, seed=1), batch_size=16),
                                 score_fn=lambda p, y: {"acc": float(((p > 0).float() == y).float().mean())},
                                 run_dir=tmp_path, device=torch.device("cpu"),
                                 schedule=Schedule(epochs=epochs, patience=patience), resume=resume, progress=False))


def _history(tmp_path):
    with open(tmp_path / "history.csv") as fh:
        return list(csv.DictReader(fh))


def test_fit_writes_checkpoints_and_history(tmp_path):
    net, res = _fit(tmp_path, epochs=4)
    rows = _history(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"train_loss", "val_loss", "val_acc", "lr", "time_s"} <= set(rows[0])
    assert (tmp_path / "checkpoints" / "best.pt").is_file() and (tmp_path / "checkpoints" / "last.pt").is_file()
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    losses = [float(r["val_loss"]) for r in rows]
    assert res.best_epoch == 1 + losses.index(min(losses))
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])   # it learns
    # best.pt holds the weights of the best epoch: re-evaluating gives that epoch's val loss
    probe = torch.nn.Linear(4, 1)
    load_checkpoint(tmp_path / "checkpoints" / "best.pt", {"network": probe})
    xs = torch.stack([d["image"] for d in _data(32, seed=1)])
    ys = torch.stack([d["label"] for d in _data(32, seed=1)])
    with torch.no_grad():
        got = torch.nn.functional.binary_cross_entropy_with_logits(probe(xs), ys).item()
    assert got == pytest.approx(min(losses), rel=1e-5)


def test_early_stopping_stops(tmp_path):
    # lr=0 -> the validation loss never improves after epoch 1: stop after 1 + patience epochs
    _, res = _fit(tmp_path, epochs=20, patience=2, lr=0.0)
    assert res.epochs_run == 3
    assert len(_history(tmp_path)) == 3


def test_resume_continues_from_last(tmp_path):
    _fit(tmp_path, epochs=2)
    net, res = _fit(tmp_path, epochs=4, resume=True)
    rows = _history(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert res.epochs_run == 4


def test_resume_without_checkpoint_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        _fit(tmp_path, epochs=2, resume=True)


def test_streaming_validation_with_an_inferer(tmp_path):
    """stream_score scores batch by batch (ragged volumes could not be concatenated) and val_inferer runs the
    validation pass: here a sliding window over inputs of two different sizes, which the collector never joins."""
    from monai.inferers import SlidingWindowInferer

    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    mk = lambda h, w: {"image": torch.randn(1, h, w), "label": (torch.rand(1, h, w) > 0.5).float()}  # noqa: E731
    train = [mk(8, 8) for _ in range(8)]
    val = [mk(16, 12), mk(12, 20)]
    seen = []

    def batch_fn(p, y):
        seen.append(tuple(p.shape))
        return {"hits": float(((p > 0).float() == y).sum()), "n": float(y.numel())}

    res = fit(TrainingSpec(
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_fn=torch.nn.BCEWithLogitsLoss(),
        train_loader=DataLoader(train, batch_size=4), val_loader=DataLoader(val, batch_size=1), run_dir=tmp_path,
        device=torch.device("cpu"), schedule=Schedule(epochs=2), progress=False,
        val_inferer=SlidingWindowInferer(roi_size=(8, 8), sw_batch_size=2),
        stream_score=(batch_fn, lambda parts: {"acc": sum(q["hits"] for q in parts) / sum(q["n"] for q in parts)})))
    rows = _history(tmp_path)
    assert {"val_loss", "val_acc"} <= set(rows[0]) and 0 <= float(rows[-1]["val_acc"]) <= 1
    assert (1, 1, 16, 12) in seen and (1, 1, 12, 20) in seen and res.epochs_run == 2
