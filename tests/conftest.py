"""Shared test setup: small thread count (2 cores shared), non-interactive plotting."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(2)
