"""Device, threads, seeding and mixed precision: decided in one place for every task."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error that says so."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu.")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        # under torchrun each process has its own GPU: cuda:LOCAL_RANK
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0") or 0)) if "LOCAL_RANK" in os.environ \
            else torch.device("cuda")
    return torch.device("cpu" if name == "auto" else name)


def amp_enabled(requested: bool, device: torch.device) -> bool:
    """MONAI's AMP (float16 autocast + GradScaler) only on CUDA; CPU has :func:`engine_network`."""
    return bool(requested and device.type == "cuda")


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AMX or AVX512-BF16: Sapphire Rapids, Zen 4 and later).

    Without it CPU autocast to bfloat16 is emulated and slower than float32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _as_float32(out: Any) -> Any:
    if torch.is_tensor(out):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_as_float32(o) for o in out)
    if isinstance(out, dict):
        return {k: _as_float32(v) for k, v in out.items()}
    return out


class PrecisionWrapper(nn.Module):
    """Run ``network`` under CPU bfloat16 autocast and/or with channels-last 2-D inputs.

    The weights stay float32 (autocast casts per op; gradients and optimiser state are float32,
    so no loss scaling is needed with bfloat16); floating outputs come back as float32. The
    wrapper holds no parameters of its own, so checkpoints are saved from the inner network
    and load into an unwrapped one.
    """

    def __init__(self, network: nn.Module, bf16: bool, channels_last: bool) -> None:
        super().__init__()
        self.network = network
        self.bf16 = bf16
        self.channels_last = channels_last
        if channels_last:
            for p in network.parameters():          # 2-D convolution weights only (a 3-D network is left as is)
                if p.dim() == 4:
                    p.data = p.data.contiguous(memory_format=torch.channels_last)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.channels_last:
            args = tuple(a.contiguous(memory_format=torch.channels_last) if torch.is_tensor(a) and a.dim() == 4 else a
                         for a in args)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.network(*args, **kwargs)
        return _as_float32(out) if self.bf16 else out


def engine_network(network: nn.Module, device: torch.device, cpu_bf16: bool = False,
                   channels_last: bool = False) -> nn.Module:
    """The module the engines run: ``network`` itself, or a :class:`PrecisionWrapper` around it.

    ``cpu_bf16`` applies on CPU only (CUDA has MONAI's AMP); on a CPU without native bfloat16 it
    is refused with a warning (it would be slower, not faster).

    Example:
        >>> net = engine_network(torch.nn.Linear(2, 1), torch.device("cpu"))
        >>> isinstance(net, torch.nn.Linear)
        True
    """
    bf16 = bool(cpu_bf16 and device.type == "cpu")
    if bf16 and not cpu_has_bf16():
        log.warning("train.cpu_bf16: this CPU has no native bfloat16 (AMX / AVX512-BF16); training in float32")
        bf16 = False
    if not bf16 and not channels_last:
        return network
    return PrecisionWrapper(network, bf16, channels_last)


def set_threads(n: int | None) -> None:
    """Set torch intra-op threads (default: the cores the process may use, shared among torchrun's processes
    on this machine, ``LOCAL_WORLD_SIZE``)."""
    if n is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        n = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    torch.set_num_threads(max(1, int(n)))


def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch and MONAI's random transforms (monai.utils.set_determinism)."""
    from monai.utils import set_determinism

    set_determinism(seed=seed)
