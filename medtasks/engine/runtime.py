"""Device, threads, seeding and AMP: decided in one place for every task."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu.")
    return torch.device(name)


def amp_enabled(requested: bool, device: torch.device) -> bool:
    """AMP only on CUDA: CPU autocast to bfloat16 is slower than float32 on most CPUs."""
    return bool(requested and device.type == "cuda")


def set_threads(n: int | None) -> None:
    """Set torch intra-op threads (default: all cores the process may use)."""
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, int(n)))


def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch and MONAI's random transforms (monai.utils.set_determinism)."""
    from monai.utils import set_determinism

    set_determinism(seed=seed)
