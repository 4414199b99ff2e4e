"""CPU bfloat16 autocast and channels-last: what runs, what is saved, and the refusal on CPUs without bf16."""

from __future__ import annotations

import logging

import pytest
import torch
from monai.data import DataLoader

from medtasks.engine import runtime
from medtasks.engine.inference import run_inference
from medtasks.engine.runtime import PrecisionWrapper, engine_network
from medtasks.engine.trainer import Precision, Schedule, TrainingSpec, fit, load_checkpoint

CPU = torch.device("cpu")


def _conv_net(n_out: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, n_out))


def test_plain_network_is_returned_unwrapped():
    net = _conv_net()
    assert engine_network(net, CPU) is net
    assert engine_network(net, torch.device("meta"), cpu_bf16=True) is net   # bf16 autocast is a CPU switch


def test_bf16_refused_with_a_warning_on_a_cpu_without_it(monkeypatch, caplog):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    net = _conv_net()
    with caplog.at_level(logging.WARNING, logger="medtasks.engine.runtime"):
        assert engine_network(net, CPU, cpu_bf16=True) is net
    assert "no native bfloat16" in caplog.text


def test_bf16_outputs_float32_close_to_float32_run(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)  # autocast runs on any CPU (emulated when slow)
    net = _conv_net().eval()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x)
        wrapped = engine_network(net, CPU, cpu_bf16=True, channels_last=True)
        assert isinstance(wrapped, PrecisionWrapper)
        out = wrapped(x)
    assert out.dtype == torch.float32
    assert not torch.equal(out, ref)                       # it did compute in bfloat16 ...
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.02)   # ... to bfloat16's ~3 significant digits
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert net[0].weight.dtype == torch.float32            # weights stay float32


def test_channels_last_alone_gives_the_same_numbers():
    net = _conv_net().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = net(x)
        out = engine_network(net, CPU, channels_last=True)(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_fit_in_bf16_saves_a_checkpoint_an_unwrapped_network_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(32, 3, 8, 8, generator=g)
    ys = (xs.mean(dim=(1, 2, 3), keepdim=True)[:, :, 0, 0] > 0).float()
    data = [{"image": xs[i], "label": ys[i]} for i in range(32)]
    net = _conv_net(1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    res = fit(TrainingSpec(network=net, optimizer=opt, loss_fn=torch.nn.BCEWithLogitsLoss(),
                           train_loader=DataLoader(data, batch_size=8), val_loader=DataLoader(data, batch_size=8),
                           run_dir=tmp_path, device=CPU, schedule=Schedule(epochs=2, patience=0), progress=False,
                           precision=Precision(cpu_bf16=True, channels_last=True)))
    assert res.epochs_run == 2
    state = torch.load(res.best_path, weights_only=True)
    assert set(state) == set(_conv_net(1).state_dict())    # no wrapper prefix in the keys
    probe = _conv_net(1)
    load_checkpoint(res.best_path, {"network": probe})
    logits = run_inference(probe, DataLoader(data, batch_size=8), CPU, cpu_bf16=True, channels_last=True)
    assert logits.shape == (32, 1) and logits.dtype == "float32"


@pytest.mark.skipif(not runtime.cpu_has_bf16(), reason="this CPU has no native bfloat16")
def test_this_cpu_detects_bf16():
    assert isinstance(engine_network(_conv_net(), CPU, cpu_bf16=True), PrecisionWrapper)
