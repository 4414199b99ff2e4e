#!/usr/bin/env python
"""Time medtasks' phe_detect training against calling ultralytics directly on the same converted data.

    .venv/bin/python scripts/phe_detect_bench.py [--epochs 2] [--repeats 2] [--imgsz 256] [--out runs/detect_bench]

Data: the phe_detect demo's SYNTHETIC release. medtasks side: ``PheDetect.train`` (VOC -> YOLO
conversion + ``data.yaml`` + ultralytics' trainer + checkpoint copy + history.csv). Direct side:
``YOLO("yolov8n.yaml").train(**args)`` with the same arguments on the ``data.yaml`` medtasks wrote,
offline as a user would run it (``YOLO_OFFLINE=1``, its own config dir). Each side runs in a fresh
process, alternating, ``--repeats`` times; the clock starts after imports in both. Prints a JSON
line per run and the ratio of the medians (goal <= 1.1), and writes ``bench.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

MEDTASKS = r"""
import json, sys, time
from medtasks import api
from medtasks.config import load_config
from medtasks.rundir import RunDir
cls = api.get_task_class("phe_detect")
cfg = load_config(sys.argv[1], cls.Config, json.loads(sys.argv[2]))
cfg.data.synthetic = True
task = cls(cfg)
prep = task.synthesize(api.cache_dir())
rd = RunDir.create(sys.argv[3], "phe_detect", "bench")
df, _ = task.make_splits(task.load_manifest(prep.manifest))
task.write_manifest(rd, df)
t0 = time.perf_counter()
task.train(rd, df, progress=False)
print(json.dumps({"side": "medtasks", "seconds": time.perf_counter() - t0, "run": str(rd.path)}))
"""

DIRECT = r"""
import json, os, sys, time
os.environ["YOLO_CONFIG_DIR"] = sys.argv[3]
os.environ["YOLO_OFFLINE"] = "1"
from ultralytics import YOLO
args = json.loads(sys.argv[2])
t0 = time.perf_counter()
YOLO("yolov8n.yaml").train(data=sys.argv[1], **args)
print(json.dumps({"side": "direct", "seconds": time.perf_counter() - t0}))
"""


def run(code: str, *args: str) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"benchmark child failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_seconds"] = time.perf_counter() - t0
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default="runs/detect_bench")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = str(Path(__file__).resolve().parents[1] / "medtasks" / "configs" / "phe_detect.demo.yaml")
    overrides = [f"train.epochs={a.epochs}", f"detect.imgsz={a.imgsz}", f"train.batch_size={a.batch}",
                 "train.early_stopping_patience=0", "train.device=cpu"]
    results = []
    for i in range(a.repeats):
        m = run(MEDTASKS, cfg, json.dumps(overrides), str(out / "medtasks"))
        data_yaml = str(Path(m["run"]) / "data.yaml")
        same = dict(epochs=a.epochs, patience=a.epochs, imgsz=a.imgsz, batch=a.batch, device="cpu", seed=42,
                    workers=0, amp=True, plots=True, project=str(out / "direct"), name=f"r{i}", exist_ok=True)
        d = run(DIRECT, data_yaml, json.dumps(same), str(out / "ul_config"))
        for r in (m, d):
            print(json.dumps(r))
        results += [m, d]
    med = {s: statistics.median(r["seconds"] for r in results if r["side"] == s) for s in ("medtasks", "direct")}
    summary = {"epochs": a.epochs, "imgsz": a.imgsz, "repeats": a.repeats, "median_s": med,
               "ratio": med["medtasks"] / med["direct"], "runs": results, "data": "SYNTHETIC phe_detect demo release"}
    (out / "bench.json").write_text(json.dumps(summary, indent=2))
    print(f"medtasks {med['medtasks']:.1f} s, direct ultralytics {med['direct']:.1f} s, ratio "
          f"{summary['ratio']:.3f} (goal <= 1.1)")


if __name__ == "__main__":
    main()
