"""Batch inference on MONAI's ``SupervisedEvaluator`` (same prepare_batch/AMP path as training)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from ignite.engine import Events
from ignite.handlers import ProgressBar
from monai.engines import SupervisedEvaluator
from monai.engines.utils import PrepareBatchDefault

from medtasks.engine.runtime import amp_enabled, engine_network


class _LabelFreePrepare:
    """Wrap a prepare_batch so inference works on batches without a label."""

    def __init__(self, inner: Any | None) -> None:
        self.inner = inner or PrepareBatchDefault()

    def __call__(self, batchdata: dict, device: Any = None, non_blocking: bool = False, **kwargs: Any) -> Any:
        if "label" not in batchdata:
            batchdata = dict(batchdata)
            batchdata["label"] = torch.zeros(len(batchdata["image"]))
        return self.inner(batchdata, device, non_blocking, **kwargs)


def run_inference(network: torch.nn.Module, loader: Any, device: torch.device, prepare_batch: Any = None,
                  amp: bool = True, progress: bool = False, desc: str = "predict",
                  on_batch: Callable[[np.ndarray, int], None] | None = None, cpu_bf16: bool = False,
                  channels_last: bool = False) -> np.ndarray:
    """Return the network's raw outputs (e.g. logits) for every sample of ``loader``, in loader order.

    The loader must not shuffle; row ``i`` of the result belongs to dataset item ``i``. With
    ``on_batch`` the outputs are streamed instead of kept: ``on_batch(outputs, first_row)`` is
    called per batch (``first_row`` = dataset index of its first item) and an empty array is
    returned, so memory stays bounded (segmentation maps of thousands of slices).

    Example:
        >>> logits = run_inference(net, DataLoader(ds, batch_size=32), torch.device("cpu"))
    """
    outputs: list[torch.Tensor] = []
    seen = [0]

    def collect(engine: Any) -> None:
        out = engine.state.output["pred"].detach().float().cpu()
        if on_batch is None:
            outputs.append(out)
        else:
            on_batch(out.numpy(), seen[0])
        seen[0] += len(out)

    net = engine_network(network.to(device), device, cpu_bf16, channels_last)
    evaluator = SupervisedEvaluator(device=device, val_data_loader=loader, network=net,
                                    prepare_batch=_LabelFreePrepare(prepare_batch), amp=amp_enabled(amp, device),
                                    decollate=False)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, collect)
    if progress:
        ProgressBar(persist=False, desc=desc, ncols=100).attach(evaluator)
    evaluator.run()
    if not outputs:
        return np.zeros((0,), dtype=np.float32)
    return torch.cat(outputs).numpy()
