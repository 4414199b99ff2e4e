#!/usr/bin/env python
"""Time and peak memory of cardiac_seg inference on one 512x512x300 volume, CPU.

    .venv/bin/python scripts/cardiac_infer_bench.py --run runs/cardiac_seg/<id> [--out runs/cardiac_bench]

Writes a SYNTHETIC 512x512x300 chest CT (0.4 x 0.4 x 0.5 mm, int16) with
:func:`medtasks.synth.cardiac_ct.render_cardiac` in a child process, then runs ``medtasks predict
cardiac_seg`` on it in another child under ``/usr/bin/time -v``: both branches' sliding windows
(class-1/2 at 1 mm, calcium at native spacing), the gate, the inverse transforms and the fused
NIfTI. Prints and writes ``bench.json`` with the wall time and peak RSS (goal: under 8 GB).
The run's networks are what they are (the demo's are BasicUNets; the README's figure is a SwinUNETR
feature_size 12 run with 64^3 windows); the paper profile (feature_size 48) costs more time per window, not
more output memory.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

MAKE = r"""
import sys, nibabel as nib, numpy as np
from medtasks.io.nifti import save_nifti_atomic
from medtasks.synth.cardiac_ct import plan_cardiac_dataset, render_cardiac
plan = plan_cardiac_dataset(1, seed=7, calcium_fraction=1.0)[0]
hu, labels, affine = render_cardiac(plan, (512, 512, 300), (0.4, 0.4, 0.5))
save_nifti_atomic(nib.Nifti1Image(hu.astype(np.int16), affine), sys.argv[1])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a trained cardiac_seg run directory")
    ap.add_argument("--out", default="runs/cardiac_bench")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    vol = out / "patient9999.nii.gz"
    if not vol.is_file():
        subprocess.run([sys.executable, "-c", MAKE, str(vol)], check=True)
    medtasks = Path(sys.executable).with_name("medtasks")
    proc = subprocess.run(["/usr/bin/time", "-v", str(medtasks), "predict", "cardiac_seg", "--run", a.run,
                           "--input", str(vol), "--out", str(out / "predict")], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"predict failed:\n{proc.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr).group(1)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    parts = [float(x) for x in wall.split(":")]
    seconds = parts[-1] + 60 * parts[-2] + (3600 * parts[-3] if len(parts) == 3 else 0)
    res = {"volume": "SYNTHETIC 512x512x300, 0.4x0.4x0.5 mm", "run": a.run, "wall_s": round(seconds, 1),
           "peak_rss_gb": round(peak_kb / 1024 ** 2, 2), "fits_8gb": peak_kb < 8 * 1024 ** 2}
    (out / "bench.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
