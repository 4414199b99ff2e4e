"""``medtasks bench <task>``: input-pipeline throughput against a bare decode loop, in one run.

For ``ich_classify`` the pipeline is the task's own deterministic transform chain (DICOM -> HU
with the wrapped-pixel fix -> 3 windows -> resize -> channel normalisation -> tensor) and the
baseline is ``pydicom.dcmread(path).pixel_array`` over the same files. Both run alternately,
``repeats`` times, after one warm-up pass (page cache), and the best time of each is kept.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)


def _rate(fn: Callable[[str], Any], paths: Sequence[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        fn(p)
    return len(paths) / (time.perf_counter() - t0)


def compare_rates(pipeline: Callable[[str], Any], baseline: Callable[[str], Any], paths: Sequence[str],
                  repeats: int = 3) -> dict[str, Any]:
    """Best-of-``repeats`` items/s of ``pipeline`` and ``baseline`` over ``paths`` and their ratio."""
    for p in paths[: min(20, len(paths))]:  # warm-up: file cache, lazy imports
        baseline(p)
        pipeline(p)
    pipe, base = 0.0, 0.0
    for _ in range(repeats):
        base = max(base, _rate(baseline, paths))
        pipe = max(pipe, _rate(pipeline, paths))
    return {"files": len(paths), "baseline_per_s": round(base, 1), "pipeline_per_s": round(pipe, 1),
            "ratio": round(pipe / base, 3)}


def bench(task_name: str, input_path: str | Path | None = None, n: int = 200, repeats: int = 3) -> dict[str, Any]:
    """Run the benchmark of ``task_name`` (``ich_classify`` for now)."""
    if task_name != "ich_classify":
        raise ValueError(f"no benchmark for {task_name!r} yet; available: ich_classify")
    import numpy as np
    import pydicom
    import torch

    from medtasks.api import get_task_class
    from medtasks.config import load_config
    from medtasks.data.dicom_index import find_dicoms

    torch.set_num_threads(1)  # both sides single-threaded: the comparison is per core
    cls = get_task_class(task_name)
    task = cls(load_config(None, cls.Config))
    with tempfile.TemporaryDirectory() as tmp:
        if input_path is None:
            from medtasks.synth.head_ct import generate_head_ct

            n_patients = max(1, int(np.ceil(n / 24)))
            generate_head_ct(Path(tmp) / "synth", n_patients=n_patients, matrix=512, seed=0, progress=False)
            input_path = Path(tmp) / "synth"
        paths = find_dicoms(Path(input_path))[:n]
        if not paths:
            raise FileNotFoundError(f"{input_path}: no .dcm files")
        task.state = {"norm_mean": [0.5] * 3, "norm_std": [0.25] * 3}
        transform = task.build_transforms("test")
        result = compare_rates(lambda p: transform({"image": p, "label": np.zeros(6, np.float32)}),
                               lambda p: pydicom.dcmread(p).pixel_array, paths, repeats)
    result.update(task=task_name, size=task.cfg.input.size, pipeline="DICOM->HU->3 windows->resize->normalise->tensor",
                  baseline="pydicom.dcmread(path).pixel_array")
    log.info("bench %s: %s", task_name, result)
    return result
