"""MONAI dataset selection: in-memory cache, on-disk persistent cache, or plain streaming."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose


def build_dataset(records: Sequence[dict[str, Any]], transform: Compose, cache: str = "memory",
                  cache_dir: str | Path | None = None, num_workers: int = 0, progress: bool = True) -> Dataset:
    """Dataset over ``records`` (dicts) with ``transform``.

    ``memory``: ``CacheDataset`` — the deterministic prefix of ``transform`` (everything before
    the first random transform) runs once; epochs after the first do not re-read files.
    ``disk``: ``PersistentDataset`` in ``cache_dir`` (large datasets that do not fit in RAM).
    ``none``: ``Dataset`` — every epoch re-reads (lowest memory).
    """
    if cache == "memory":
        return CacheDataset(list(records), transform, num_workers=num_workers or None, progress=progress)
    if cache == "disk":
        if cache_dir is None:
            raise ValueError("data.cache=disk needs data.cache_dir")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return PersistentDataset(list(records), transform, cache_dir=cache_dir)
    if cache == "none":
        return Dataset(list(records), transform)
    raise ValueError(f"data.cache={cache!r}: use memory, disk or none")
