"""Subgroup tables of an evaluation (``medtasks evaluate ... --by <column>``): every metric of the run's kind
within each value of a manifest column, with its patient-bootstrap CI, and the difference to the rest.

The values come from the evaluated manifest (any column: sex, age, scanner manufacturer, site, ...), joined to
``predictions.csv`` through each row's case id (:meth:`~medtasks.tasks.contract.Task.case_ids`); a case whose
rows disagree on the value is an error naming the column. A numeric column with more than
:data:`MAX_LEVELS` distinct values (age, say) is cut into :data:`BANDS` quantile bands, each named by the
lowest and highest value in it (``20-30``); an empty cell is its own ``(missing)`` group, so nothing is dropped
silently.

The metrics are those ``medtasks compare`` computes for the kind (:data:`~medtasks.compare_metrics.COMPARE_METRICS`:
classification per label P/R/F1/ROC-AUC, F1 averages, ECE, Brier, RSNA log loss; segmentation pooled /
per-image / per-patient Dice and IoU; per-class Dice and gate accuracy for cardiac_seg), recomputed on the
subgroup's rows, so a table can be checked against the run's own numbers. For each subgroup:

* ``value [ci_low, ci_high]``: 95% percentile CI resampling the subgroup's patients
  (:func:`~medtasks.metrics.bootstrap.bootstrap_ci`);
* ``diff [diff_ci_low, diff_ci_high]``: subgroup minus the rest of the evaluated cases, with the unpaired
  two-sample patient bootstrap (:func:`~medtasks.metrics.bootstrap.unpaired_bootstrap_diff`: the two sides
  hold different patients); ``significant`` when that CI excludes 0. A patient in both sides (a value that
  varies within a patient, e.g. per-series manufacturer) breaks the independence the interval assumes: the
  table counts such patients in ``shared_patients``.

No correction for multiple comparisons (many subgroups x many metrics): the page says so. Written as
``subgroups.csv`` in the evaluation folder and summarised under ``subgroups`` in its ``metrics.json``.

Example:
    >>> values = subgroup_values(task, manifest_df, ["sex"])            # doctest: +SKIP
    >>> table = subgroup_analysis(eval_dir, values, n_boot=1000, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from medtasks.compare import _evaluated_rows, _has_pid, _load, _metric_set, _reference_weights
from medtasks.compare_metrics import OVERALL, AlignedRun, MetricSet
from medtasks.io.atomic import write_csv_atomic
from medtasks.metrics.bootstrap import bootstrap_ci, unpaired_bootstrap_diff

__all__ = ["MAX_LEVELS", "BANDS", "MISSING", "SUBGROUP_COLUMNS", "SubgroupError", "subgroup_values",
           "subgroup_analysis"]

log = logging.getLogger(__name__)

MAX_LEVELS = 8        # a numeric column with more distinct values is banded
BANDS = 4             # quantile bands of a banded column
MISSING = "(missing)"
SUBGROUP_COLUMNS = ("by", "group", "banded", "n_cases", "n_patients", "shared_patients", "metric", "label", "value",
                    "ci_low", "ci_high", "rest_value", "diff", "diff_ci_low", "diff_ci_high", "significant", "note")


class SubgroupError(ValueError):
    """A ``--by`` column that cannot define subgroups (absent, or not constant within a case)."""


def _band(values: pd.Series) -> tuple[pd.Series, bool]:
    """Numeric values with many levels -> quantile bands named ``[low, high]``; others as text."""
    num = pd.to_numeric(values.astype(str).str.strip().str.rstrip("+"), errors="coerce")   # "90+": DICOM ages
    present = values.notna() & (values.astype(str).str.strip() != "")
    if present.any() and num[present].notna().all() and num[present].nunique() > MAX_LEVELS:
        codes = pd.qcut(num[present], BANDS, labels=False, duplicates="drop")
        names = {c: f"{v.min():g}-{v.max():g}" for c, v in num[present].groupby(codes)}   # the values' own range
        text = pd.Series(MISSING, index=values.index, dtype=object)
        text[present] = codes.map(names)
        return text, True
    text = values.astype(object).where(present, MISSING)
    return text.map(lambda v: v if v == MISSING else (f"{v:g}" if isinstance(v, float) else str(v))), False


def subgroup_values(task: Any, df: pd.DataFrame, columns: list[str]) -> dict[str, tuple[pd.Series, bool]]:
    """``{column: (group name per case_id, banded)}`` from the evaluated manifest rows ``df``."""
    out = {}
    ids = task.case_ids(df).astype(str)
    for col in columns:
        if col not in df.columns:
            raise SubgroupError(f"--by {col}: the manifest has no column {col!r}; its columns: {list(df.columns)}")
        groups, banded = _band(df[col])
        per_case = pd.DataFrame({"case_id": ids.to_numpy(), "group": groups.to_numpy()}).drop_duplicates()
        dup = per_case["case_id"][per_case["case_id"].duplicated()]
        if len(dup):
            raise SubgroupError(f"--by {col}: case {dup.iloc[0]!r} has rows with different {col!r} values "
                                f"({sorted(per_case[per_case.case_id == dup.iloc[0]].group)}); a subgroup column must "
                                f"be constant within a case")
        out[col] = (per_case.set_index("case_id")["group"], banded)
    return out


def _aligned(template: dict[str, Any], frame: pd.DataFrame) -> AlignedRun:
    group_column = "patient_id" if _has_pid(frame) else "case_id"
    return AlignedRun(**template, case_ids=frame["case_id"].to_numpy(dtype=str),
                      groups=frame[group_column].to_numpy(dtype=str), frame=frame.reset_index(drop=True),
                      group_column=group_column)


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def subgroup_analysis(folder: str | Path, values: dict[str, tuple[pd.Series, bool]], n_boot: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """Subgroup tables of the evaluation in ``folder`` (its ``predictions.csv`` and ``metrics.json``) for each
    column of ``values`` (:func:`subgroup_values`); writes ``subgroups.csv`` and returns the ``metrics.json``
    block ``{column: {group: {n_cases, n_patients, metrics: {"metric[/label]": {value, ci_low, ci_high,
    diff, diff_ci_low, diff_ci_high, significant}}}}}``."""
    folder = Path(folder)
    run = _load(folder)
    mset: type[MetricSet] = _metric_set(run.kind, run.metrics)
    frame = _evaluated_rows(run, mset).reset_index(drop=True)
    template = dict(name=folder.name, run_dir=folder, task=run.task, kind=run.kind, labels=list(run.labels),
                    synthetic=run.synthetic, class_weights=_reference_weights(run),
                    n_bins=int((run.metrics.get("calibration") or {}).get("n_bins") or 15), metrics=run.metrics)
    rows, block = [], {}
    for col, (by_case, banded) in values.items():
        groups = frame["case_id"].astype(str).map(by_case)
        unmatched = groups.isna()
        if unmatched.any():
            raise SubgroupError(f"--by {col}: {int(unmatched.sum())} evaluated case(s) have no manifest row "
                                f"(e.g. {frame.case_id[unmatched].iloc[0]!r})")
        block[col] = {}
        for name in sorted(groups.unique(), key=str):
            inside = (groups == name).to_numpy()
            sub = _aligned(template, frame[inside])
            rest = _aligned(template, frame[~inside]) if (~inside).any() else None
            shared = len(set(sub.groups) & set(rest.groups)) if rest is not None and sub.group_column == \
                rest.group_column == "patient_id" else 0
            fns_sub = mset.build(sub)
            fns_rest = mset.build(rest) if rest is not None else {}
            entry = {"n_cases": int(inside.sum()), "n_patients": int(len(set(sub.groups))), "metrics": {}}
            for key, fn in fns_sub.items():
                ci = bootstrap_ci(fn, sub.groups, n_boot=n_boot, seed=seed)
                d = (unpaired_bootstrap_diff(fn, fns_rest[key], sub.groups, rest.groups, n_boot=n_boot, seed=seed)
                     if rest is not None else None)
                rest_value = d["value_b"] if d is not None else None
                sig = bool(d is not None and d["excludes_zero"])
                note = ci.get("reason") or (d.get("reason") if d else "no other cases to compare with")
                rows.append({"by": col, "group": name, "banded": banded, "n_cases": entry["n_cases"],
                             "n_patients": entry["n_patients"], "shared_patients": shared, "metric": key[0],
                             "label": key[1], "value": _num(ci["value"]), "ci_low": _num(ci["ci_low"]),
                             "ci_high": _num(ci["ci_high"]), "rest_value": _num(rest_value),
                             "diff": _num(d["diff"] if d else None), "diff_ci_low": _num(d["ci_low"] if d else None),
                             "diff_ci_high": _num(d["ci_high"] if d else None), "significant": sig,
                             "note": note or ""})
                label = key[0] if key[1] == OVERALL else f"{key[0]}/{key[1]}"
                entry["metrics"][label] = {k: rows[-1][k] for k in ("value", "ci_low", "ci_high", "diff",
                                                                     "diff_ci_low", "diff_ci_high", "significant")}
            block[col][str(name)] = entry
            if shared:
                log.warning("--by %s: %d patient(s) are both in %r and in the rest: the difference's CI assumes "
                            "independent samples", col, shared, name)
    write_csv_atomic(pd.DataFrame(rows, columns=list(SUBGROUP_COLUMNS)), folder / "subgroups.csv")
    return block
