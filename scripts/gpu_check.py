#!/usr/bin/env python
"""A few training steps of every task's paper profile on a GPU, with AMP, plus one DDP run over NCCL.

    scripts/gpu_check.sh                       # every task, 10 timed steps each, then DDP on the GPUs present
    scripts/gpu_check.sh --dry-run             # the plan only: task, network, input, batch (no data, no GPU)
    scripts/gpu_check.sh --tasks ich_classify cardiac_seg --steps 20 --out gpu_check.json

For each task the paper profile is the packaged real-data config (``<task>.yaml``: e.g. ResNet50 at 224 px,
batch 32; SwinUNETR feature size 48 on 96^3 patches), without downloaded weights (``model.pretrained=null``:
the step costs the same), fed by the task's own loader over a small SYNTHETIC set in the real file format
(the embedded default's generator, shrunk). After ``--warmup`` steps it times ``--steps`` training steps
(forward + loss + backward + optimizer, float16 autocast and a GradScaler; data loading excluded,
``torch.cuda.synchronize`` around each step) and prints, per task (cardiac_seg per stage), the median step
time, images (patches, volumes) per second and the peak GPU memory allocated. ``phe_detect`` is one
ultralytics epoch (its own trainer, AMP) over the synthetic set: seconds and images/s.

The DDP row runs ``medtasks run phe_classify`` (its demo) for one epoch under ``torchrun --standalone`` with
one process per GPU (NCCL), and reads the backend back from the run's env.json; it needs 2 or more GPUs.

``--device cpu`` runs the same on the CPU (float32, no AMP), for checking the script without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TASKS = ("ich_classify", "phe_classify", "phe_segment", "phe_multilabel", "phe_detect", "xray_classify",
         "ms_segment", "cardiac_seg")
# the paper profile without downloads; the synthetic set shrunk to what a few steps need
PAPER = {"ich_classify": ["model.pretrained=null"], "phe_classify": ["model.pretrained=null"],
         "xray_classify": ["model.pretrained=null"]}
SYNTH = {"ich_classify": ["synth.n_patients=6"], "phe_classify": ["synth.n_patients=6"],
         "phe_segment": ["synth.n_patients=6"], "phe_multilabel": ["synth.n_patients=6"],
         "phe_detect": ["synth.n_patients=6"], "xray_classify": ["synth.n_children=24"],
         "ms_segment": ["synth.n_subjects=3"], "cardiac_seg": ["synth.n_patients=4"]}
STAGES = ("class12", "class3", "gate")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), metavar="TASK", help=f"default: all of {TASKS}")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per task (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (cuDNN autotuning, allocator)")
    p.add_argument("--batch", type=int, default=None, help="batch size for every task (default: the paper's)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (float32: checks the script only)")
    p.add_argument("--no-ddp", action="store_true", help="skip the torchrun / NCCL run")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--out", help="also write the rows as JSON here")
    p.add_argument("--cache", default=None, help="synthetic data cache (default: a temporary folder)")
    return p


def _task(name: str, batch: int | None) -> Any:
    """The task with its paper config, fed by the demo's (shrunk) synthetic generator."""
    from medtasks import api
    from medtasks.config import load_config

    cls = api.get_task_class(name)
    cfg = load_config(api.default_config(name, demo=False), cls.Config, PAPER.get(name, []))
    demo = load_config(api.default_config(name, demo=True), cls.Config, SYNTH.get(name, []))
    cfg.synth, cfg.data.synthetic, cfg.data.manifest = demo.synth, True, None
    cfg.data.split = [0.5, 0.25, 0.25]
    if batch is not None:
        cfg.train.batch_size = batch
    return cls(cfg)


def plan(name: str, batch: int | None) -> list[dict[str, Any]]:
    """What will run for ``name``: one row per network (cardiac_seg: per stage)."""
    cfg = _task(name, batch).cfg
    if name == "cardiac_seg":
        return [{"task": name, "stage": s, "network": "resnet10" if s == "gate" else "SwinUNETR",
                 "input": cfg.gate_model.size if s == "gate" else getattr(cfg, s).patch,
                 "batch": getattr(cfg, "gate_model" if s == "gate" else s).batch_size} for s in STAGES]
    if name == "phe_detect":
        return [{"task": name, "stage": "", "network": cfg.detect.model, "input": cfg.detect.imgsz,
                 "batch": cfg.train.batch_size}]
    model = getattr(cfg, "model", None)
    net = getattr(model, "backbone", None) or getattr(model, "name", None) or type(model).__name__
    size = getattr(getattr(cfg, "input", None), "size", None)
    return [{"task": name, "stage": "", "network": str(net), "input": size, "batch": cfg.train.batch_size}]


def _batches(loader: Any):
    while True:
        yield from loader


def time_steps(model: Any, loss_fn: Any, loader: Any, prepare_batch: Any, device: Any, steps: int, warmup: int,
               lr: float = 1e-4) -> dict[str, Any]:
    """Median step time, items/s and peak GPU memory of ``steps`` AMP training steps after ``warmup``."""
    import torch
    from monai.engines.utils import default_prepare_batch

    cuda = device.type == "cuda"
    model.to(device).train()
    loss_fn = loss_fn.to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    prepare = prepare_batch or default_prepare_batch
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times, n_items = [], 0
    for i, batch in enumerate(_batches(loader)):
        if i >= warmup + steps:
            break
        out = prepare(batch, device, False)
        x, y = out[0], out[1]
        args, kwargs = (out[2], out[3]) if len(out) == 4 else ((), {})
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            loss = loss_fn(model(x, *args, **kwargs), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            n_items = int(x.shape[0])
    step = statistics.median(times)
    return {"step_s": round(step, 4), "items_per_s": float(f"{n_items / step:.3g}"), "timed_steps": len(times),
            "peak_gpu_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None}


def check_task(name: str, args: argparse.Namespace, cache: Path, device: Any) -> list[dict[str, Any]]:
    import pandas as pd  # noqa: F401  (the task frames)

    task = _task(name, args.batch)
    prep = task.synthesize(cache)
    df, _ = task.make_splits(task.load_manifest(prep.manifest))
    rows = []
    if name == "phe_detect":
        return [_check_detect(task, df, device)]
    if name == "cardiac_seg":
        for stage in STAGES:
            c = task.stage_config(stage)
            loader = task.stage_loader(stage, df, "train", c.batch_size if args.batch is None else args.batch)
            res = time_steps(task.build_stage_model(stage), task.build_stage_loss(stage), loader, None, device,
                             args.steps, args.warmup)
            rows.append({"task": name, "stage": stage, **res})
        return rows
    train = df[df.split == "train"]
    if hasattr(task, "fit_state"):
        task.fit_state(task.records(train))
    loader = task.loader(train, "train", True, task.cfg.train.batch_size)
    res = time_steps(task.build_model(), task.build_loss(), loader, task.prepare_batch(), device, args.steps,
                     args.warmup)
    return [{"task": name, "stage": "", **res}]


def _check_detect(task: Any, df: Any, device: Any) -> dict[str, Any]:
    import torch

    from medtasks.engine.yolo import train_yolo
    from medtasks.rundir import RunDir

    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(Path(tmp))
        data_yaml, _ = task.write_yolo_dataset(run, df)
        c, t = task.cfg.detect, task.cfg.train
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        res = train_yolo(data_yaml, Path(tmp) / "ul", model=c.model, epochs=1, patience=1, imgsz=c.imgsz,
                         batch=t.batch_size, device="cuda" if device.type == "cuda" else "cpu", seed=0, workers=2,
                         amp=device.type == "cuda", progress=False, extra={"plots": False, "val": False})
    n = int((df.split == "train").sum())
    return {"task": "phe_detect", "stage": "1 ultralytics epoch", "step_s": round(res.seconds, 2),
            "items_per_s": round(n / res.seconds, 1), "timed_steps": 1,
            "peak_gpu_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None}


def check_ddp(cache: Path) -> dict[str, Any]:
    """``medtasks run phe_classify`` (demo, 1 epoch) under torchrun, one process per GPU, NCCL."""
    import torch

    n = torch.cuda.device_count()
    if n < 2:
        return {"task": "ddp phe_classify", "stage": f"skipped: {n} GPU(s), the DDP check needs 2 or more"}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m",
               "medtasks", "run", "phe_classify", "--runs-dir", tmp, "train.epochs=1"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env={**os.environ, "MEDTASKS_CACHE": str(cache)}, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"task": "ddp phe_classify", "stage": f"FAILED (rc {proc.returncode})", "error": proc.stderr[-2000:]}
        env = json.loads(next(Path(tmp).glob("phe_classify/*/env.json")).read_text())
    d = env.get("distributed", {})
    return {"task": "ddp phe_classify", "stage": f"{d.get('world_size')} x {d.get('backend')}",
            "step_s": round(wall, 1), "items_per_s": None, "timed_steps": 1, "peak_gpu_gb": None}


def _print(rows: list[dict[str, Any]]) -> None:
    keys = [k for k in ("task", "stage", "network", "input", "batch", "step_s", "items_per_s", "peak_gpu_gb")
            if any(k in r for r in rows)]
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join("" if r.get(k) is None else str(r.get(k)) for k in keys))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown:
        print(f"gpu_check: error: unknown task(s) {unknown}; choose from {', '.join(TASKS)}", file=sys.stderr)
        return 2
    if args.steps < 1 or args.warmup < 0:
        print("gpu_check: error: --steps must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    if args.dry_run:
        rows = [r for t in args.tasks for r in plan(t, args.batch)]
        _print(rows)
        print(f"then {args.warmup} warm-up + {args.steps} timed AMP steps each"
              + ("" if args.no_ddp else "; one torchrun/NCCL run of phe_classify on the GPUs present"))
        return 0
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device visible (use --device cpu to check the script, or --dry-run)",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu_check on {name}; torch {torch.__version__}; SYNTHETIC inputs at the paper profiles' sizes")
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache or tmp)
        rows = []
        for t in args.tasks:
            t0 = time.perf_counter()
            rows += check_task(t, args, cache, device)
            print(f"  {t}: {time.perf_counter() - t0:.0f} s", flush=True)
        if not args.no_ddp and device.type == "cuda":
            rows.append(check_ddp(cache))
    _print(rows)
    print(f"total {time.perf_counter() - t_all:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
