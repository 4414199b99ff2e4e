"""Distributed data-parallel training on CPU (Gloo, 2 processes under torchrun), and its pieces.

The torchrun tests start ``tests/engine/ddp_worker.py`` (``medtasks`` plus a pid file and, on rank 1,
an audit of every file write under the runs folder), each bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medtasks import api
from medtasks.cli import strip_launch_options
from medtasks.engine import distributed
from medtasks.engine.rng import TrainingRng
from medtasks.io.atomic import write_csv_atomic, write_json_atomic, writes_disabled, writes_enabled
from medtasks.rundir import RunDir

WORKER = Path(__file__).with_name("ddp_worker.py")
# 10 patients x 7 slices, split 5/3/2 patients: 21 validation slices, odd, so 2 ranks get 11 + 10
TINY = ["synth.n_patients=10", "synth.matrix=64", "synth.slices=[7,7]", "input.size=64", "input.norm_samples=16",
        "train.batch_size=8", "train.threads=1", "eval.n_boot=20", "eval.batch_size=16", "data.split=[0.5,0.3,0.2]"]
TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(base: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in distributed.TORCHRUN_ENV}
    env.update(MEDTASKS_CACHE=str(cache), DDP_TEST_DIR=str(base), DDP_TEST_WATCH=str(base / "runs"),
               OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return env


def _torchrun(launch: list[str], args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launch, str(WORKER), *args]


def _run_args(base: Path, epochs: int) -> list[str]:
    return ["run", "phe_classify", "--runs-dir", str(base / "runs"), f"train.epochs={epochs}", *TINY]


def _one_run(base: Path) -> Path:
    runs = sorted((base / "runs" / "phe_classify").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ddp-cache")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, cache) -> Path:
    """phe_classify, 2 epochs, 2 processes on this machine (torchrun --standalone)."""
    base = tmp_path_factory.mktemp("ddp")
    proc = subprocess.run(_torchrun(["--standalone", "--nproc_per_node=2"], _run_args(base, 2)),
                          env=_env(base, cache), capture_output=True, text=True, timeout=TIMEOUT)
    _check(proc)
    return base


# ---- pieces -------------------------------------------------------------------------------------
def test_gather_rows_restores_the_split_order() -> None:
    full = torch.arange(21.0).reshape(21, 1)
    shards = [full[r::2] for r in range(2)]          # MONAI's DistributedSampler(even_divisible=False)
    assert torch.equal(distributed.gather_rows(shards), full)
    with pytest.raises(ValueError, match="strided split"):
        distributed.gather_rows([full[0:11], full[11:]][::-1])


def test_one_process_helpers_are_identities() -> None:
    assert not distributed.is_distributed() and distributed.rank() == 0 and distributed.is_main()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1} and distributed.all_gather_object(3) == [3]
    assert distributed.mean_across_ranks(6.0, 4) == 1.5
    loader = torch.utils.data.DataLoader(list(range(5)), batch_size=2)
    assert distributed.shard_train_loader(loader, 0) is loader
    assert distributed.shard_eval_loader(loader) == (loader, False)
    assert not distributed.init_from_env("cpu")      # no torchrun environment: nothing started


def test_strip_launch_options() -> None:
    assert strip_launch_options(["run", "x", "--nproc=2", "--max-restarts", "1", "a=1"]) == ["run", "x", "a=1"]


def test_writes_disabled_leaves_nothing(tmp_path) -> None:
    with writes_disabled():
        assert not writes_enabled()
        write_json_atomic(tmp_path / "sub" / "a.json", {"x": 1})
        write_csv_atomic(pd.DataFrame({"a": [1]}), tmp_path / "b.csv")
    assert writes_enabled() and list(tmp_path.iterdir()) == []
    with writes_disabled(False):
        write_json_atomic(tmp_path / "c.json", {})
    assert (tmp_path / "c.json").is_file()


def test_training_rng_restores_every_stream() -> None:
    from monai.transforms import Compose, RandFlipd, RandGaussianNoised

    from medtasks.engine.mixup import MixUpBatch

    tf = Compose([RandFlipd(keys="image", prob=0.5), RandGaussianNoised(keys="image", prob=0.5)])
    tf.set_random_state(3)
    ds = type("DS", (), {"transform": tf})()
    mix = MixUpBatch(alpha=0.4, seed=1)
    rng = TrainingRng(ds, [mix])
    assert len(rng.transforms) == 4                  # the Compose, both transforms, the noise one's inner array one

    def draw() -> list:
        return [torch.rand(2).tolist(), np.random.rand(2).tolist(), [t.R.rand() for t in tf.transforms],
                mix.rng.random(), __import__("random").random()]

    state = rng.state_dict()
    saved = torch.load(_save(state), weights_only=True)   # what last.pt holds loads with weights_only
    first = draw()
    rng.load_state_dict(saved)
    assert draw() == first


def _save(obj) -> object:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


# ---- torchrun, 2 processes ------------------------------------------------------------------------
def test_ddp_run_writes_one_run_dir_from_rank_0(ddp_run) -> None:
    rd = _one_run(ddp_run)
    env = json.loads((rd / "env.json").read_text())
    assert env["distributed"]["world_size"] == 2 and env["distributed"]["backend"] == "gloo"
    assert json.loads((ddp_run / "writes-0-1.json").read_text()) == []   # rank 1 wrote nothing under runs/
    assert not list(rd.rglob("*.tmp")) and (rd / "report.html").is_file()
    hist = pd.read_csv(rd / "history.csv")
    assert list(hist.epoch) == [1, 2]


def test_ddp_test_metrics_equal_a_single_process_evaluation(ddp_run, tmp_path) -> None:
    rd = _one_run(ddp_run)
    copy = tmp_path / rd.name
    shutil.copytree(rd, copy)
    (copy / "metrics.json").unlink()
    task = api.task_from_run(RunDir(copy))
    df = task.load_manifest(copy / "manifest.csv")
    single = task.evaluate(RunDir(copy), df, None, [])
    ddp = json.loads((rd / "metrics.json").read_text())
    for key in ("best_epoch", "epochs_run", "train_time_s"):
        ddp.pop(key)
    assert json.loads(json.dumps(single)) == ddp
    pd.testing.assert_frame_equal(pd.read_csv(copy / "predictions.csv"), pd.read_csv(rd / "predictions.csv"))


def test_ddp_validation_scores_each_case_once(ddp_run) -> None:
    """The last epoch's val_loss (sharded over 2 ranks, gathered) equals one process's loss over the whole,
    odd-sized validation split with the same weights: a padded duplicate would shift the mean."""
    rd = RunDir(_one_run(ddp_run))
    task = api.task_from_run(rd)
    df = task.load_manifest(rd / "manifest.csv")
    val = df[df.split == "val"].reset_index(drop=True)
    assert len(val) % 2 == 1
    logits = torch.as_tensor(task.infer_logits(task.load_model(rd, "last"), val, "val"), dtype=torch.float32)
    labels = torch.as_tensor(val[list(task.labels)].to_numpy(np.float32))
    loss = float(task.build_loss().eval()(logits, labels).mean())
    assert pd.read_csv(rd / "history.csv").val_loss.iloc[-1] == pytest.approx(loss, abs=1e-6)


def test_two_nodes_c10d_rendezvous_on_localhost(tmp_path, cache) -> None:
    """``--nnodes 2 --nproc_per_node 1``: two torchrun agents meet through c10d on 127.0.0.1."""
    port = _free_port()
    launch = ["--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
              "--rdzv_id=medtasks-test", "--max-restarts=0"]
    env = _env(tmp_path, cache)
    logs = [open(tmp_path / f"agent{i}.log", "w") for i in range(2)]  # files: a full pipe would block the agent
    agents = [subprocess.Popen(_torchrun(launch, _run_args(tmp_path, 1)), env=env, stdout=fh,
                               stderr=subprocess.STDOUT, text=True) for fh in logs]
    try:
        for a in agents:
            a.wait(timeout=TIMEOUT)
    finally:
        for a, fh in zip(agents, logs):
            a.kill()
            fh.close()
    outs = [(tmp_path / f"agent{i}.log").read_text() for i in range(2)]
    assert [a.returncode for a in agents] == [0, 0], "\n".join(o[-3000:] for o in outs)
    rd = _one_run(tmp_path)
    assert json.loads((rd / "env.json").read_text())["distributed"]["world_size"] == 2
    assert json.loads((rd / "metrics.json").read_text())["n"] > 0


def _kill_rank1_in_epoch_2(base: Path, launch: list[str], cache: Path) -> tuple[int, str]:
    """Start a 3-epoch run under torchrun and SIGKILL rank 1 once epoch 1 is saved; (torchrun's rc, its log)."""
    base.mkdir()
    log_file = open(base / "torchrun.log", "w")  # a file, not a pipe nobody reads while it runs
    proc = subprocess.Popen(_torchrun(launch, _run_args(base, 3)), env=_env(base, cache), stdout=log_file,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        killed = False
        while time.monotonic() < deadline and proc.poll() is None:
            runs = list((base / "runs" / "phe_classify").glob("*/checkpoints/last.pt"))
            if runs and (base / "pid-0-1").is_file():
                hist = runs[0].parents[1] / "history.csv"
                if hist.is_file() and len(pd.read_csv(hist)) == 1:   # epoch 1 saved: epoch 2 is running
                    os.kill(int((base / "pid-0-1").read_text()), signal.SIGKILL)
                    killed = True
                    break
            time.sleep(0.01)
        proc.wait(timeout=TIMEOUT)
    finally:
        proc.kill()
        log_file.close()
    out = (base / "torchrun.log").read_text()
    assert killed, "the run ended before epoch 2 could be interrupted"
    return proc.returncode, out


def _assert_same_run(a_dir: Path, b_dir: Path) -> None:
    a, b = pd.read_csv(a_dir / "history.csv"), pd.read_csv(b_dir / "history.csv")
    cols = [c for c in a.columns if c != "time_s"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a_dir, b_dir))
    for m in (ma, mb):
        m.pop("train_time_s")
    assert ma == mb


def test_worker_killed_mid_epoch_resumes_and_matches_an_uninterrupted_run(tmp_path, cache) -> None:
    """SIGKILL rank 1 during epoch 2 of 3. Under ``--max-restarts=1`` torchrun restarts both workers and the run
    resumes from last.pt (with every random stream); without restarts the run fails and ``--resume <run>`` under
    torchrun continues it. Both end where an uninterrupted run ends, exactly."""
    launch = ["--standalone", "--nproc_per_node=2"]
    whole = tmp_path / "whole"
    whole.mkdir()
    _check(subprocess.run(_torchrun(launch, _run_args(whole, 3)), env=_env(whole, cache), capture_output=True,
                          text=True, timeout=TIMEOUT))
    rc, out = _kill_rank1_in_epoch_2(tmp_path / "cut", [*launch, "--max-restarts=1"], cache)
    assert rc == 0, out[-5000:]
    rd = _one_run(tmp_path / "cut")
    assert (tmp_path / "cut" / "pid-1-1").is_file()      # the workers were restarted once
    assert "resuming" in (rd / "run.log").read_text()
    _assert_same_run(_one_run(whole), rd)

    stop = tmp_path / "stop"
    rc, out = _kill_rank1_in_epoch_2(stop, launch, cache)
    assert rc != 0, out[-5000:]                          # no restarts: the launch fails
    rd = _one_run(stop)
    assert not (rd / "metrics.json").exists()
    (stop / "writes-0-1.json").unlink(missing_ok=True)
    with open(stop / "resume.log", "w") as log_file:
        rc = subprocess.call(_torchrun(launch, ["run", "phe_classify", "--resume", str(rd)]), env=_env(stop, cache),
                             stdout=log_file, stderr=subprocess.STDOUT, timeout=TIMEOUT)
    assert rc == 0, (stop / "resume.log").read_text()[-5000:]
    assert _one_run(stop) == rd and "resuming" in (rd / "run.log").read_text()
    assert json.loads((stop / "writes-0-1.json").read_text()) == []   # the resumed rank 1 wrote nothing
    _assert_same_run(_one_run(whole), rd)


def test_phe_detect_refuses_torchrun_and_names_ultralytics_ddp(tmp_path, cache) -> None:
    proc = subprocess.run(_torchrun(["--standalone", "--nproc_per_node=2"],
                                    ["run", "phe_detect", "--runs-dir", str(tmp_path / "runs")]),
                          env=_env(tmp_path, cache), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode != 0
    assert "detect.extra.device=0,1" in proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists()


def test_slurm_script_runs_torchrun_through_srun(tmp_path, cache) -> None:
    """``scripts/slurm_train.sh`` with stand-ins for ``srun`` (runs the command here) and ``scontrol``
    (names this machine): the job trains 2 processes through c10d and writes one run directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    script = Path(__file__).resolve().parents[2] / "scripts" / "slurm_train.sh"
    env = _env(tmp_path, cache)
    env.update(PATH=f"{bin_dir}:{env['PATH']}", SLURM_JOB_NODELIST="node[1]", SLURM_NNODES="1", SLURM_JOB_ID="42",
               GPUS_PER_NODE="2", RDZV_PORT=str(_free_port()), VENV=sys.prefix, RUNS_DIR=str(tmp_path / "runs"))
    dry = subprocess.run(["bash", str(script), "phe_classify", "train.epochs=1"], env={**env, "DRY_RUN": "1"},
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and "--rdzv_endpoint 127.0.0.1:" in dry.stdout and "--rdzv_id 42" in dry.stdout
    with open(tmp_path / "job.log", "w") as log_file:
        rc = subprocess.call(["bash", str(script), "phe_classify", "train.epochs=1", "train.device=cpu", *TINY],
                             env=env, stdout=log_file, stderr=subprocess.STDOUT, timeout=TIMEOUT)
    assert rc == 0, (tmp_path / "job.log").read_text()[-4000:]
    rd = _one_run(tmp_path)
    assert json.loads((rd / "env.json").read_text())["distributed"]["world_size"] == 2
    assert (rd / "report.html").is_file()
    usage = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert usage.returncode != 0 and "usage: slurm_train.sh <task>" in usage.stderr


PROFILES = __import__("yaml").safe_load((Path(__file__).parents[1] / "tasks" / "tiny_profiles.yaml").read_text())
# ich_classify with what must behave as in one process: 2-fold cross-validation, the sequence head, MixUp and
# the balanced sampler
DDP_EXTRA = {"ich_classify": ["cv.folds=2", "sequence.enabled=true", "sequence.epochs=2", "loss.mixup_alpha=0.4",
                              "sampling.per_class=8", "sampling.normal=16"]}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ich_classify", "phe_classify", "phe_segment", "phe_multilabel", "xray_classify",
                                  "ms_segment", "cardiac_seg"])
def test_every_engine_task_trains_under_torchrun(task, tmp_path, cache) -> None:
    """Each task the shared engine trains runs its tiny profile in 2 processes: one run directory with its report,
    nothing written by rank 1."""
    args = ["run", task, "--runs-dir", str(tmp_path / "runs"), *PROFILES[task], *DDP_EXTRA.get(task, [])]
    with open(tmp_path / "torchrun.log", "w") as log_file:
        rc = subprocess.call(_torchrun(["--standalone", "--nproc_per_node=2"], args), env=_env(tmp_path, cache),
                             stdout=log_file, stderr=subprocess.STDOUT, timeout=TIMEOUT)
    assert rc == 0, (tmp_path / "torchrun.log").read_text()[-5000:]
    rd = next((tmp_path / "runs" / task).iterdir())
    assert (rd / "report.html").is_file() and (rd / "metrics.json").is_file()
    assert json.loads((tmp_path / "writes-0-1.json").read_text()) == []
    if task == "ich_classify":
        assert (rd / "cv.json").is_file() and (rd / "sequence.json").is_file() and list(rd.rglob("sampling.json"))
    if task == "cardiac_seg":
        assert all((rd / s / "checkpoints" / "best.pt").is_file() for s in ("class12", "class3", "gate"))
