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


def test_disk_cache_is_read_back_on_later_epochs(tmp_path) -> None:
    """Records with numpy scalars (ich_classify's z): the second pass reads the cache, it does not recompute."""
    import warnings

    import numpy as np
    import torch
    from monai.transforms import Compose, Lambdad

    from medtasks.data.datasets import build_dataset

    calls = []

    def load(x):
        calls.append(x)
        return torch.full((2, 2), float(x))

    records = [{"image": i, "z": np.float32(i / 10), "label": np.zeros(3, np.float32)} for i in range(6)]
    ds = build_dataset(records, Compose([Lambdad("image", load)]), cache="disk", cache_dir=tmp_path / "c")
    first = [ds[i] for i in range(6)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # MONAI warns "Corrupt cache file" when it cannot load one
        second = [ds[i] for i in range(6)]
    assert len(calls) == 6 and len(list((tmp_path / "c").glob("*.pt"))) == 6
    for a, b in zip(first, second):
        assert torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(b["image"]))
        assert float(a["z"]) == float(b["z"]) and np.asarray(b["z"]).dtype == np.float32
    batch = torch.utils.data.default_collate([second[0], second[1]])
    assert batch["z"].dtype == torch.float32 and batch["z"].shape == (2,)
