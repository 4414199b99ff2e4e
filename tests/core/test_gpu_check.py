"""scripts/gpu_check.py on a machine without a GPU: arguments, the dry run, and a real step on the CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_plans_every_task_at_its_paper_profile(gpu_check, capsys) -> None:
    assert gpu_check.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    for task in gpu_check.TASKS:
        assert task in out
    assert "ich_classify |  | resnet50 | 224 | 32" in out          # the report's ResNet50 at 224 px, batch 32
    assert "cardiac_seg | class12 | SwinUNETR" in out and "torchrun/NCCL" in out


def test_bad_arguments_are_refused(gpu_check, capsys) -> None:
    assert gpu_check.main(["--tasks", "nope"]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert gpu_check.main(["--steps", "0", "--dry-run"]) == 2
    if not torch.cuda.is_available():
        assert gpu_check.main(["--tasks", "phe_classify"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_cpu_steps_time_a_real_training_step(gpu_check, tmp_path) -> None:
    out = tmp_path / "rows.json"
    rc = gpu_check.main(["--device", "cpu", "--tasks", "phe_classify", "--steps", "2", "--warmup", "0", "--batch",
                         "2", "--cache", str(tmp_path / "cache"), "--out", str(out)])
    assert rc == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["task"] == "phe_classify" and row["timed_steps"] == 2 and row["step_s"] > 0
    assert row["items_per_s"] == pytest.approx(2 / row["step_s"], rel=0.01) and row["peak_gpu_gb"] is None
