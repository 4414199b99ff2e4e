"""MONAI dataset selection: in-memory cache, on-disk persistent cache, or plain streaming, with a memory
pre-flight before an in-memory cache is filled."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose

__all__ = ["build_dataset", "estimate_cache_bytes", "check_memory_cache", "CacheTooLargeError"]

log = logging.getLogger(__name__)

# what an in-memory cache may take of the memory available when it is built: the rest is for the network,
# the optimiser, the other splits' caches and the DataLoader's batches
CACHE_SHARE = 0.7


class CacheTooLargeError(MemoryError):
    """``data.cache=memory`` would not fit: raised before the cache is filled, with the fix."""


def _nbytes(item: Any) -> int:
    if hasattr(item, "nbytes"):          # numpy arrays, MetaTensors / torch tensors (torch >= 2.1)
        return int(item.nbytes)
    if hasattr(item, "element_size") and hasattr(item, "nelement"):
        return int(item.element_size() * item.nelement())
    if isinstance(item, dict):
        return sum(_nbytes(v) for v in item.values())
    if isinstance(item, (list, tuple)):
        return sum(_nbytes(v) for v in item)
    return 0


def estimate_cache_bytes(records: Sequence[dict[str, Any]], transform: Compose, k: int = 4) -> int:
    """Bytes an in-memory cache of ``records`` will hold: the mean size of ``k`` evenly spaced records after
    ``transform`` (arrays and tensors counted; the random tail of ``transform`` keeps sizes in this package's
    pipelines), times ``len(records)``. MONAI's ``CacheDataset`` reports no size before it is filled, which is
    when an oversized cache kills the run."""
    n = len(records)
    if n == 0:
        return 0
    picks = np.unique(np.linspace(0, n - 1, num=min(k, n)).round().astype(int))
    sizes = [_nbytes(transform(dict(records[int(i)]))) for i in picks]
    return int(np.mean(sizes) * n)


def check_memory_cache(records: Sequence[dict[str, Any]], transform: Compose, available: int | None = None,
                       k: int = 4) -> int:
    """Refuse (``CacheTooLargeError`` naming the fix) a ``data.cache=memory`` dataset whose estimate exceeds
    ``CACHE_SHARE`` of the available memory (``psutil``), instead of an out-of-memory kill mid-run; return the
    estimate. Lists of at most ``k`` records are not checked (the estimate would load all of them)."""
    if len(records) <= k:
        return 0
    import psutil

    need = estimate_cache_bytes(records, transform, k)
    free = int(psutil.virtual_memory().available if available is None else available)
    if need > CACHE_SHARE * free:
        raise CacheTooLargeError(
            f"data.cache=memory would hold ~{need / 2**30:.1f} GiB for {len(records)} items (estimated from {k}), "
            f"more than {CACHE_SHARE:.0%} of the {free / 2**30:.1f} GiB available; set data.cache=disk "
            f"data.cache_dir=<folder> (MONAI PersistentDataset: the first epoch writes, later ones read) or "
            f"data.cache=none")
    log.debug("memory cache estimate: %.2f GiB for %d items (%.2f GiB available)", need / 2**30, len(records),
              free / 2**30)
    return need


def _loadable(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with numpy scalars as 0-d arrays (same values, same collated batch).

    Measured reason: ``PersistentDataset`` reads its cache with ``torch.load(weights_only=True)``, which refuses
    numpy scalars (e.g. ich_classify's ``z``); MONAI then calls the file corrupt, deletes it and recomputes, so
    every epoch ran as slowly as the first (0.85x epoch 1 on 1,000 RSNA-like slices) while writing the cache anew.
    Tensors and 0-d arrays (stored as tensors) load.
    """
    return {k: np.asarray(v) if isinstance(v, np.generic) else v for k, v in record.items()}


def build_dataset(records: Sequence[dict[str, Any]], transform: Compose, cache: str = "memory",
                  cache_dir: str | Path | None = None, num_workers: int = 0, progress: bool = True) -> Dataset:
    """Dataset over ``records`` (dicts) with ``transform``.

    ``memory``: ``CacheDataset`` — the deterministic prefix of ``transform`` (everything before
    the first random transform) runs once; epochs after the first do not re-read files. Checked first
    by :func:`check_memory_cache`.
    ``disk``: ``PersistentDataset`` in ``cache_dir`` (large datasets that do not fit in RAM).
    ``none``: ``Dataset`` — every epoch re-reads (lowest memory).
    """
    if cache == "memory":
        check_memory_cache(records, transform)
        return CacheDataset(list(records), transform, num_workers=num_workers or None, progress=progress)
    if cache == "disk":
        if cache_dir is None:
            raise ValueError("data.cache=disk needs data.cache_dir")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return PersistentDataset([_loadable(r) for r in records], transform, cache_dir=cache_dir)
    if cache == "none":
        return Dataset(list(records), transform)
    raise ValueError(f"data.cache={cache!r}: use memory, disk or none")
