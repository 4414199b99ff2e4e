#!/usr/bin/env python
"""Run every task's embedded default on its tiny profile and record (or compare) metrics.json.

A refactor that should not change behaviour is checked by running this before and after it, on
the same machine: ``--out before.json`` on the old code, then ``--against before.json`` on the new.
Timing fields (seconds, train_time_s, ultralytics speed_ms, ...) and run-directory paths differ between runs and
are left out; everything else must be equal, float for float.

Usage:
    python scripts/behaviour_check.py --out before.json            # record
    python scripts/behaviour_check.py --against before.json        # compare (exit 1 on a difference)
    python scripts/behaviour_check.py --tasks phe_classify ms_segment --out x.json

The tiny profiles are ``tests/tasks/tiny_profiles.yaml``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

PROFILES = Path(__file__).resolve().parents[1] / "tests" / "tasks" / "tiny_profiles.yaml"
TIMING_KEYS = {"train_time_s", "seconds", "seconds_per_patient", "seconds_per_image", "fps", "time_s", "speed_ms"}
PATH_KEYS = {"save_dir"}  # absolute paths inside the run directory


def strip_timing(obj: Any) -> Any:
    """``obj`` without timing fields (they differ between identical runs)."""
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items()
                if k not in TIMING_KEYS | PATH_KEYS and not k.endswith("_time_s")}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where ``a`` and ``b`` differ (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only in {'before' if k in a else 'after'}" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def run_all(tasks: list[str], workdir: Path) -> dict[str, Any]:
    import os

    from medtasks import api

    profiles = yaml.safe_load(PROFILES.read_text())
    os.environ.setdefault("MEDTASKS_CACHE", str(workdir / "cache"))
    out: dict[str, Any] = {}
    for name in tasks:
        t0 = time.perf_counter()
        _, metrics = api.run(name, overrides=profiles[name], runs_dir=workdir / "runs", progress=False)
        out[name] = strip_timing(json.loads(json.dumps(metrics, default=str)))
        print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="*", help="default: every task in the profiles file")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--out", type=Path, help="write the metrics here")
    g.add_argument("--against", type=Path, help="compare with metrics written earlier by --out")
    p.add_argument("--workdir", type=Path, help="runs and synthetic cache (default: a temporary folder)")
    args = p.parse_args()
    tasks = args.tasks or list(yaml.safe_load(PROFILES.read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        got = run_all(tasks, args.workdir or Path(tmp))
    if args.out:
        args.out.write_text(json.dumps(got, indent=1, sort_keys=True))
        return 0
    before = json.loads(args.against.read_text())
    bad = 0
    for name in tasks:
        diff = differences(before.get(name), got[name], name)
        print(f"{name}: {'identical' if not diff else f'{len(diff)} difference(s)'}")
        for d in diff[:20]:
            print("   ", d)
        bad += bool(diff)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
