"""``medtasks reproduce R``: re-run a finished run from its own record and compare the metrics.

The record is what every run directory holds: ``config.resolved.yaml`` (every key, the seed), ``manifest.csv``
(absolute paths, the ``split`` and ``fold`` columns the run used) and ``env.json`` (package versions, device,
threads, CPU). The new run goes into a new run directory beside the original and trains on exactly those rows
and splits with exactly that config; then every number of the two ``metrics.json`` is compared.

Tolerance: a CPU run is deterministic, so on the same machine and software (no difference in ``env.json``'s
packages, Python, device, thread count, CPU bfloat16 support or world size) the metrics must be equal
(tolerance 0). Anywhere else the default is :data:`OTHER_TOLERANCE` (absolute, per metric): float reductions in
another order, another BLAS, cuDNN's non-deterministic kernels or other library versions move a metric by a
few thousandths on these small test sets. ``--tolerance`` sets it explicitly.

Example:
    >>> compare_metrics({"auc": 0.9, "n": 10, "train_time_s": 3.0}, {"auc": 0.9004, "n": 10, "train_time_s": 5.0},
    ...                 tolerance=1e-3)["ok"]
    True
"""

from __future__ import annotations

import math
from typing import Any, Mapping

OTHER_TOLERANCE = 0.01
# what differs between two runs by nature: wall times and speeds, the start time, the command line
TIMING_WORDS = ("time", "seconds", "fps", "per_s", "started", "duration")
ENV_KEYS = ("python", "platform", "device", "torch_threads", "cpu_native_bf16")


def _is_timing(path: str) -> bool:
    leaf = path.rsplit(".", 1)[-1].lower()
    return any(w in leaf for w in TIMING_WORDS) or leaf.endswith("_s")


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of nested dicts / lists as ``{"a.b[2].c": value}``."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
        if not obj:
            out[prefix] = []
    else:
        out[prefix] = obj
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compare_metrics(original: Mapping[str, Any], new: Mapping[str, Any], tolerance: float) -> dict[str, Any]:
    """Every leaf of two ``metrics.json``: numbers within ``tolerance`` (absolute; NaN equals NaN), anything
    else equal; timing leaves (:data:`TIMING_WORDS`, ``*_s``) are left out. Returns ``ok``, the number of
    leaves compared, the largest numeric difference and the rows that differ."""
    a, b = flatten(original), flatten(new)
    rows, compared, largest = [], 0, 0.0
    for key in sorted(set(a) | set(b)):
        if _is_timing(key):
            continue
        compared += 1
        if key not in a or key not in b:
            rows.append({"metric": key, "original": a.get(key, "(missing)"), "reproduced": b.get(key, "(missing)"),
                         "diff": None})
            continue
        x, y = a[key], b[key]
        if _number(x) and _number(y):
            if math.isnan(x) and math.isnan(y):
                continue
            d = abs(float(x) - float(y))
            if math.isnan(d):
                d = math.inf
            largest = max(largest, d)
            if d > tolerance:
                rows.append({"metric": key, "original": x, "reproduced": y, "diff": d})
        elif x != y:
            rows.append({"metric": key, "original": x, "reproduced": y, "diff": None})
    return {"ok": not rows, "tolerance": tolerance, "compared": compared, "max_abs_diff": largest,
            "differences": rows}


def environment_differences(original: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between the original run's ``env.json`` and this machine (``"torch: 2.4.1 -> 2.14.1"``);
    a key the original did not record (runs made by older versions) is named as unknown."""
    out = []
    for key in ENV_KEYS:
        if key not in original:
            out.append(f"{key}: not recorded -> {current.get(key)}")
        elif original[key] != current.get(key):
            out.append(f"{key}: {original[key]} -> {current.get(key)}")
    pa, pb = original.get("packages") or {}, current.get("packages") or {}
    if not pa:
        out.append("package versions: not recorded")
    for name in sorted(set(pa) | set(pb)):
        if name != "medtasks" and pa and pa.get(name) != pb.get(name):
            out.append(f"{name}: {pa.get(name)} -> {pb.get(name)}")
    wa = (original.get("distributed") or {}).get("world_size", 1)
    wb = (current.get("distributed") or {}).get("world_size", 1)
    if wa != wb:
        out.append(f"processes: {wa} -> {wb}")
    return out


def default_tolerance(differences: list[str], device: str) -> float:
    """0 for a CPU run on the same machine and software; :data:`OTHER_TOLERANCE` otherwise."""
    return 0.0 if not differences and str(device).startswith("cpu") else OTHER_TOLERANCE


def format_result(result: Mapping[str, Any], limit: int = 20) -> str:
    """A few lines for the terminal: verdict, tolerance, then the metrics that differ."""
    verdict = "reproduced" if result["ok"] else "NOT reproduced"
    lines = [f"{verdict}: {result['compared']} metrics compared, tolerance {result['tolerance']:g}, "
             f"largest difference {result['max_abs_diff']:.3g}"]
    for r in result["differences"][:limit]:
        lines.append(f"  {r['metric']}: {r['original']} -> {r['reproduced']}"
                     + (f" (|diff| {r['diff']:.3g})" if r["diff"] is not None else ""))
    if len(result["differences"]) > limit:
        lines.append(f"  ... {len(result['differences']) - limit} more (reproduce.json)")
    return "\n".join(lines)
