"""The memory pre-flight of ``data.cache=memory``: an estimate from a few records, a refusal that names the fix."""

from __future__ import annotations

import numpy as np
import pytest
from monai.transforms import Compose, Lambdad

from medtasks.data.datasets import CacheTooLargeError, build_dataset, check_memory_cache, estimate_cache_bytes


def _records(n: int) -> list[dict]:
    return [{"image": f"img{i}", "size": 8 + (i % 2) * 8} for i in range(n)]


LOAD = Compose([Lambdad("image", lambda _: np.zeros((3, 8, 8), np.float32))])   # 768 bytes an item


def test_estimate_is_the_mean_item_size_times_the_count() -> None:
    assert estimate_cache_bytes(_records(100), LOAD) == 100 * 3 * 8 * 8 * 4
    sized = Compose([Lambdad("image", lambda _: None),
                     lambda d: {**d, "image": np.zeros((d["size"], d["size"]), np.float64)}])
    # picks 0, 33, 66, 99 of 100: sizes 8, 16, 8, 16 -> mean (512 + 2048) / 2 bytes
    assert estimate_cache_bytes(_records(100), sized) == 100 * (8 * 8 * 8 + 16 * 16 * 8) // 2


def test_a_cache_that_would_not_fit_is_refused_with_the_fix() -> None:
    need = 1000 * 768
    assert check_memory_cache(_records(1000), LOAD, available=10 * need) == need
    with pytest.raises(CacheTooLargeError, match="data.cache=disk data.cache_dir=<folder>") as err:
        check_memory_cache(_records(1000), LOAD, available=need)
    assert "1000 items" in str(err.value) and isinstance(err.value, MemoryError)
    assert check_memory_cache(_records(3), LOAD, available=1) == 0            # too few to estimate: not checked


def test_build_dataset_checks_before_filling(monkeypatch) -> None:
    import psutil

    class Tiny:
        available = 1000

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    with pytest.raises(CacheTooLargeError):
        build_dataset(_records(50), LOAD, cache="memory", progress=False)
    assert len(build_dataset(_records(50), LOAD, cache="none")) == 50          # streaming is never refused
