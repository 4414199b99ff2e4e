"""Exact resume in one process: a phe_classify run SIGKILLed during epoch 2 and continued with ``--resume`` ends
where the uninterrupted run ends (history.csv and metrics.json equal, apart from the seconds columns).

What makes it exact (:mod:`medtasks.engine.rng`): ``last.pt`` holds, beside network / optimizer / scheduler /
engine state, every random stream of the training (torch's global generator, which draws the shuffle order of
the next epoch, numpy's and Python's, each random transform's own generator), so epoch 2 restarts from the
state the uninterrupted run had when it began epoch 2. The killed run is paced by ``paced_worker.py`` (it
sleeps after each iteration of epoch 2), so that the SIGKILL lands between two iterations of that epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

WORKER = Path(__file__).with_name("paced_worker.py")
EPOCHS = 3
# tests/tasks/tiny_profiles.yaml's phe_classify, three epochs of 4 iterations (batch 8 of ~30 training slices)
TINY = ["synth.n_patients=8", "synth.matrix=64", "synth.slices=[6,6]", "input.size=64", "input.norm_samples=16",
        f"train.epochs={EPOCHS}", "train.batch_size=8", "train.threads=1", "eval.n_boot=20", "eval.batch_size=32"]
TIMEOUT = 240
SECONDS = {"time_s", "train_time_s"}        # wall-clock columns / keys: the only ones allowed to differ


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    env.update(MEDTASKS_CACHE=str(cache), OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1", **extra)
    return env


def _medtasks(args: list[str], cache: Path, log: Path) -> None:
    with open(log, "w") as fh:
        rc = subprocess.call([sys.executable, "-m", "medtasks", *args], env=_env(cache), stdout=fh,
                             stderr=subprocess.STDOUT, timeout=TIMEOUT)
    assert rc == 0, log.read_text()[-4000:]


def _one_run(runs: Path) -> Path:
    found = sorted((runs / "phe_classify").iterdir())
    assert len(found) == 1, found
    return found[0]


def _kill_in_epoch_2(base: Path, cache: Path) -> tuple[Path, list[int]]:
    """Start the run paced, SIGKILL it once it has finished an iteration of epoch 2 that is not the last; the
    run directory and the marker ``[epoch, iteration, epoch_length]`` at the kill."""
    marker = base / "marker"
    log = open(base / "killed.log", "w")  # a file, not a pipe nobody reads while it runs
    proc = subprocess.Popen([sys.executable, str(WORKER), "run", "phe_classify", "--runs-dir", str(base / "runs"),
                             *TINY], env=_env(cache, PACED_MARKER=str(marker), PACED_FROM_EPOCH="2",
                                                  PACED_SLEEP_S="60"),
                            stdout=log, stderr=subprocess.STDOUT)
    at: list[int] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            at = [int(v) for v in marker.read_text().split()] if marker.is_file() else []
            if at and at[0] == 2:  # epoch 2 has begun: epoch 1's last.pt and history row are written
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        log.close()
    assert proc.returncode == -signal.SIGKILL, (base / "killed.log").read_text()[-4000:]
    return _one_run(base / "runs"), at


def _without_seconds(obj):
    if isinstance(obj, dict):
        return {k: _without_seconds(v) for k, v in obj.items() if k not in SECONDS}
    if isinstance(obj, list):
        return [_without_seconds(v) for v in obj]
    return obj


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path) -> None:
    cache = tmp_path / "cache"
    whole = tmp_path / "whole"
    whole.mkdir()
    _medtasks(["run", "phe_classify", "--runs-dir", str(whole / "runs"), *TINY], cache, whole / "log")

    cut = tmp_path / "cut"
    cut.mkdir()
    rd, at = _kill_in_epoch_2(cut, cache)
    epoch, iteration, epoch_length = at
    assert epoch == 2 and epoch_length <= iteration < 2 * epoch_length    # killed inside epoch 2, not at its end
    assert epoch_length >= 3 and iteration - epoch_length < epoch_length - 1   # and before its last iteration
    assert len(pd.read_csv(rd / "history.csv")) == 1                       # what was saved: epoch 1
    assert not (rd / "metrics.json").exists()

    _medtasks(["run", "phe_classify", "--resume", str(rd)], cache, cut / "resume.log")
    assert "resumed from" in (rd / "run.log").read_text()                  # continued from last.pt, not retrained

    a, b = pd.read_csv(_one_run(whole / "runs") / "history.csv"), pd.read_csv(rd / "history.csv")
    assert list(a.epoch) == list(range(1, EPOCHS + 1))
    cols = [c for c in a.columns if c not in SECONDS]
    assert list(b.columns) == list(a.columns)
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (_one_run(whole / "runs"), rd))
    assert _without_seconds(ma) == _without_seconds(mb)
    assert ma["epochs_run"] == EPOCHS and mb["epochs_run"] == EPOCHS
