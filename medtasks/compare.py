"""``medtasks compare``: runs of one task side by side, with paired patient-bootstrap CIs.

Every number is recomputed from each run's ``predictions.csv`` (rows of the split its
``metrics.json`` says was evaluated), so all runs are measured by the same code on the same
cases. Runs must share the task, the kind, the labels, the evaluated ``case_id`` set and the
truth of every case; rows are aligned by ``case_id``.

Statistics (design §6): each metric of each run gets a 95 % percentile CI resampling whole
patients (:func:`~medtasks.metrics.bootstrap.bootstrap_ci`); each pair gets the difference
``run_a - run_b`` (``run_b`` = the run given earlier) with a paired CI
(:func:`~medtasks.metrics.bootstrap.paired_bootstrap_diff`: both runs scored on the same
resampled patients), ``significant`` when it excludes 0. One seed serves every metric and run,
so all intervals use the same replicates. No multiple-comparison correction; the page says so.

Thresholded metrics use each run's own ``pred_<L>`` column (its tuned thresholds), so a
comparison includes the effect of threshold choice. The metric set is chosen by kind from
:data:`COMPARE_METRICS`; a new kind registers a builder
``builder(run: AlignedRun) -> {(metric, label): metric_fn(indices) -> float}``.

Example:
    >>> from medtasks.compare import compare_runs
    >>> compare_runs(["runs/ich_classify/a", "runs/ich_classify/b"], "compare/ab")  # doctest: +SKIP
    PosixPath('compare/ab/compare.html')
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medtasks.io.atomic import write_csv_atomic
from medtasks.metrics.bootstrap import ResampledAUC, bootstrap_ci, paired_bootstrap_diff
from medtasks.metrics.calibration import brier_score, expected_calibration_error
from medtasks.metrics.classification import rsna_weighted_log_loss
from medtasks.metrics.summary import _class_weights, _prf_from_counts
from medtasks.registry import Registry, UnknownNameError, did_you_mean
from medtasks.report import RunData, load_run

__all__ = ["compare_runs", "align_runs", "compute_comparison", "AlignedRun", "CompareError",
           "RunFileMissing", "COMPARE_METRICS", "LOWER_IS_BETTER", "add_compare_parser", "run_compare"]

logger = logging.getLogger(__name__)

OVERALL = "overall"
LOWER_IS_BETTER = frozenset({"rsna_weighted_log_loss", "ece", "brier"})
DEFAULT_ECE_BINS = 15

MetricKey = tuple[str, str]
MetricFn = Callable[[np.ndarray], float]
COMPARE_METRICS = Registry("compare metric set (by kind)")


class CompareError(ValueError):
    """Runs that cannot be compared; the message names the run directory and the fix."""


class RunFileMissing(CompareError, FileNotFoundError):
    """A run directory or one of its files is missing (both a ValueError and a FileNotFoundError)."""


@dataclass
class AlignedRun:
    """One run's evaluated rows, aligned by ``case_id`` with the reference (first) run.

    ``y_true``/``prob``/``pred`` are (N, C) in ``labels`` order; ``groups`` are patient ids.
    ``class_weights`` and ``n_bins`` come from the reference run, so every run is scored alike.
    """

    name: str
    run_dir: Path
    task: str
    kind: str
    labels: list[str]
    synthetic: bool
    case_ids: np.ndarray
    groups: np.ndarray
    y_true: np.ndarray
    prob: np.ndarray
    pred: np.ndarray
    class_weights: list[float] | None
    n_bins: int
    group_column: str = "patient_id"
    metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- loading + checks


def _load(run_dir: Path) -> RunData:
    if not run_dir.is_dir():
        raise RunFileMissing(f"run directory {run_dir} does not exist; pass directories written by `medtasks run`.")
    for name in ("metrics.json", "predictions.csv"):
        if not (run_dir / name).is_file():
            raise RunFileMissing(
                f"{run_dir}: {name} not found. compare recomputes every metric from a finished run's "
                "predictions.csv and metrics.json; re-run evaluation (`medtasks run ...`) or pass another run.")
    run = load_run(run_dir)
    if run.predictions is None or run.predictions.empty:
        raise CompareError(f"{run_dir}: predictions.csv is empty; re-run evaluation for this run.")
    return run


def _evaluated_rows(run: RunData) -> pd.DataFrame:
    """Rows of the evaluated split, with every column compare needs checked."""
    df, path = run.predictions, run.run_dir / "predictions.csv"
    split = run.metrics.get("split")
    if split is not None and "split" in df.columns:
        df = df[df["split"] == str(split)]
        if df.empty:
            raise CompareError(f"{path}: no rows with split == {split!r} (the split metrics.json says was "
                               f"evaluated); splits present: {sorted(run.predictions['split'].unique())}.")
    cols = ["case_id"] + [f"{p}_{lab}" for lab in run.labels for p in ("true", "prob", "pred")]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise CompareError(f"{path} lacks column(s) {missing}; compare needs case_id and true_/prob_/pred_<label> "
                           f"for labels {run.labels} (as written by `medtasks run`).")
    dup = df["case_id"][df["case_id"].duplicated()]
    if len(dup):
        raise CompareError(f"{path}: case_id {dup.iloc[0]!r} appears {int((df['case_id'] == dup.iloc[0]).sum())} "
                           "times in the evaluated split; case ids must be unique to align runs.")
    for col in cols[1:]:
        v, is_prob = pd.to_numeric(df[col], errors="coerce"), col.startswith("prob_")
        if not (v.between(0.0, 1.0) if is_prob else v.isin((0, 1))).all():
            want = "probabilities in [0, 1]" if is_prob else "only 0/1"
            raise CompareError(f"{path}: column {col} must hold {want} for every evaluated case (no blanks).")
    return df.set_index("case_id", drop=False)


def _run_names(dirs: Sequence[Path]) -> list[str]:
    """Folder names; a repeated name gets its parent folder, then a counter."""
    names = [d.name for d in dirs]
    names = [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in dirs]
    return [n if names.count(n) == 1 else f"{n} ({names[:i].count(n) + 1})" for i, n in enumerate(names)]


def _examples(ids: Sequence[str] | set, k: int = 3) -> str:
    ids = sorted(ids)
    return ", ".join(repr(x) for x in ids[:k]) + (", ..." if len(ids) > k else "")


def _check_same(ref: RunData, run: RunData) -> None:
    fix = "compare puts runs of one task, evaluated on the same cases, side by side."
    for what, a, b in (("task", ref.task, run.task), ("kind", ref.kind, run.kind),
                       ("labels", sorted(ref.labels), sorted(run.labels))):
        if a != b:
            raise CompareError(f"{run.run_dir}: {what} {b!r} differs from {a!r} of the first run {ref.run_dir}; {fix}")


def _reference_weights(ref: RunData) -> list[float] | None:
    if not (ref.task == "ich_classify" or "any" in ref.labels):
        return None
    cw = ref.metrics.get("class_weights") or {lab: 2.0 if lab == "any" else 1.0 for lab in ref.labels}
    try:
        return _class_weights(cw, ref.labels)
    except ValueError as exc:
        raise CompareError(f"{ref.run_dir / 'metrics.json'}: class_weights: {exc}") from None


def align_runs(run_dirs: Sequence[str | Path]) -> list[AlignedRun]:
    """Load and check run directories and align their evaluated rows by ``case_id``.

    Raises:
        CompareError: fewer than two runs, a run given twice, a missing file (also a
            ``FileNotFoundError``), a different task/kind/labels, a different evaluated case
            set, a case whose truth or patient differs between runs, or malformed columns.
    """
    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 2:
        raise CompareError(f"compare needs at least 2 run directories, got {len(dirs)} ({[str(d) for d in dirs]}); "
                           "usage: medtasks compare RUN_A RUN_B [RUN ...]")
    resolved = [d.resolve() for d in dirs]
    for i, d in enumerate(resolved):
        if d in resolved[:i]:
            raise CompareError(f"{dirs[i]}: run directory given twice; pass each run once.")
    runs = [_load(d) for d in dirs]
    ref = runs[0]
    for run in runs[1:]:
        _check_same(ref, run)
    frames = [_evaluated_rows(r) for r in runs]
    ref_df, ref_ids = frames[0], frames[0]["case_id"].to_numpy(dtype=str)
    for run, df in zip(runs[1:], frames[1:]):
        only_here, only_ref = set(df.index) - set(ref_df.index), set(ref_df.index) - set(df.index)
        if only_here or only_ref:
            raise CompareError(
                f"{run.run_dir}: evaluated cases differ from the first run {ref.run_dir}: {len(only_here)} only in "
                f"this run ({_examples(only_here)}), {len(only_ref)} only in the first ({_examples(only_ref)}). "
                "Evaluate both runs on the same manifest and split (metrics.json 'split') before comparing.")
    has_pid = all("patient_id" in df.columns and df["patient_id"].notna().all() for df in frames)
    if not has_pid:
        logger.warning("predictions.csv lacks patient_id in some run: the bootstrap resamples cases instead")
    group_column = "patient_id" if has_pid else "case_id"
    groups = ref_df.loc[ref_ids, group_column].to_numpy(dtype=str)
    weights, n_bins = _reference_weights(ref), int((ref.metrics.get("calibration") or {}).get("n_bins")
                                                   or DEFAULT_ECE_BINS)
    labels, names = list(ref.labels), _run_names(dirs)
    truth = ref_df.loc[ref_ids, [f"true_{lab}" for lab in labels]].to_numpy(dtype=np.int64)
    out = []
    for name, run, df in zip(names, runs, frames):
        df = df.loc[ref_ids]
        y = df[[f"true_{lab}" for lab in labels]].to_numpy(dtype=np.int64)
        bad = np.nonzero((y != truth).any(axis=1))[0]
        if bad.size:
            raise CompareError(f"{run.run_dir}: truth differs from the first run {ref.run_dir} for {bad.size} case(s) "
                               f"({_examples(ref_ids[bad])}); the runs were evaluated on different labels. Rebuild "
                               "both from the same manifest.")
        if has_pid and (df["patient_id"].to_numpy(dtype=str) != groups).any():
            raise CompareError(f"{run.run_dir}: patient_id of some cases differs from the first run {ref.run_dir}; "
                               "evaluate both runs on the same manifest.")
        out.append(AlignedRun(
            name=name, run_dir=run.run_dir, task=run.task, kind=run.kind, labels=labels, synthetic=run.synthetic,
            case_ids=ref_ids, groups=groups, y_true=truth,
            prob=df[[f"prob_{lab}" for lab in labels]].to_numpy(dtype=np.float64),
            pred=df[[f"pred_{lab}" for lab in labels]].to_numpy(dtype=np.int64),
            class_weights=weights, n_bins=n_bins, group_column=group_column, metrics=run.metrics))
    return out


# --------------------------------------------------------------------------- metric registry


@COMPARE_METRICS.register("multilabel")
@COMPARE_METRICS.register("binary")
def classification_metrics(run: AlignedRun) -> dict[MetricKey, MetricFn]:
    """Per label precision / recall / F1 (at the run's ``pred_<L>``) and ROC-AUC; support-weighted
    and macro F1; RSNA weighted log loss (when ``run.class_weights``); pooled ECE and Brier."""
    yt, yp, n = run.y_true, run.prob, run.y_true.shape[0]
    tp_rows = ((yt == 1) & (run.pred == 1)).astype(np.float64)
    fp_rows = ((yt == 0) & (run.pred == 1)).astype(np.float64)
    fn_rows = ((yt == 1) & (run.pred == 0)).astype(np.float64)

    def counts(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w = np.bincount(idx, minlength=n).astype(np.float64)
        return w @ tp_rows, w @ fp_rows, w @ fn_rows

    def prf(k: int, j: int | None, average: str = "macro") -> MetricFn:
        cols = slice(None) if j is None else slice(j, j + 1)
        return lambda idx: _prf_from_counts(*(c[cols] for c in counts(idx)), average)[k]

    fns: dict[MetricKey, MetricFn] = {}
    for j, lab in enumerate(run.labels):
        for k, name in enumerate(("precision", "recall", "f1")):
            fns[(name, lab)] = prf(k, j)
        fns[("roc_auc", lab)] = ResampledAUC(yt[:, j], yp[:, j])
    if len(run.labels) > 1:
        fns[("weighted_f1", OVERALL)] = prf(2, None, "weighted")
        fns[("macro_f1", OVERALL)] = prf(2, None, "macro")
    if run.class_weights is not None:
        weights = run.class_weights
        fns[("rsna_weighted_log_loss", OVERALL)] = lambda idx: rsna_weighted_log_loss(yt[idx], yp[idx], weights)
    fns[("ece", OVERALL)] = lambda idx: expected_calibration_error(yt[idx], yp[idx], n_bins=run.n_bins)
    fns[("brier", OVERALL)] = lambda idx: brier_score(yt[idx], yp[idx])
    return fns


def _metric_builder(kind: str) -> Callable[[AlignedRun], dict[MetricKey, MetricFn]]:
    try:
        return COMPARE_METRICS.get(kind)
    except UnknownNameError:
        raise CompareError(f"compare has no metric set for kind {kind!r}.{did_you_mean(kind, COMPARE_METRICS.names())} "
                           "A new kind registers one with "
                           "`@medtasks.compare.COMPARE_METRICS.register(kind)`.") from None


def compute_comparison(runs: Sequence[AlignedRun], n_boot: int = 1000, seed: int = 0,
                       progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-run values with CIs and pairwise paired differences for aligned runs.

    Returns:
        ``(per_run, pairs)``: per_run has columns metric, label, run, value, ci_low, ci_high;
        pairs has metric, label, run_a, run_b, diff (= run_a - run_b; run_b is the run given
        earlier), ci_low, ci_high, significant. Undefined values are NaN.
    """
    builder = _metric_builder(runs[0].kind)
    fns = [builder(r) for r in runs]
    groups = runs[0].groups
    per_run, pairs = [], []
    for key in tqdm(list(fns[0]), desc="compare", unit="metric", disable=not progress):
        metric, label = key
        for run, f in zip(runs, fns):
            r = bootstrap_ci(f[key], groups, n_boot=n_boot, seed=seed)
            per_run.append({"metric": metric, "label": label, "run": run.name, "value": r["value"],
                            "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
        for i in range(len(runs)):
            for j in range(i + 1, len(runs)):
                d = paired_bootstrap_diff(fns[j][key], fns[i][key], groups, n_boot=n_boot, seed=seed)
                pairs.append({"metric": metric, "label": label, "run_a": runs[j].name, "run_b": runs[i].name,
                              "diff": d["diff"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                              "significant": bool(d["excludes_zero"])})
    as_float = dict.fromkeys(("value", "diff", "ci_low", "ci_high"), float)  # None -> NaN
    return (pd.DataFrame(per_run).astype({k: v for k, v in as_float.items() if k != "diff"}),
            pd.DataFrame(pairs).astype({k: v for k, v in as_float.items() if k != "value"}))


# --------------------------------------------------------------------------- public entry points


def _notes(runs: Sequence[AlignedRun], per_run: pd.DataFrame) -> list[str]:
    """Warnings for the page: stale metrics.json, differing class weights, no patient ids."""
    notes = []
    if runs[0].group_column != "patient_id":
        notes.append("predictions.csv has no patient_id: the bootstrap resampled cases, not patients, "
                     "so the CIs are too narrow if a patient has several cases.")
    for run in runs:
        cw = run.metrics.get("class_weights")
        if runs[0].class_weights is not None and isinstance(cw, dict) and \
                [float(cw.get(lab, np.nan)) for lab in run.labels] != runs[0].class_weights:
            notes.append(f"{run.name}: class_weights in metrics.json {cw} differ from the reference run's; "
                         "every run's RSNA weighted log loss here uses the reference run's weights.")
        stored = (run.metrics.get("weighted") or {}).get("f1")
        row = per_run[(per_run.metric == "weighted_f1") & (per_run.run == run.name)]
        if stored is not None and len(row) and abs(float(stored) - float(row.value.iloc[0])) > 1e-6:
            notes.append(f"{run.name}: weighted F1 in metrics.json ({float(stored):.4f}) differs from the value "
                         f"recomputed from predictions.csv ({float(row.value.iloc[0]):.4f}); "
                         "this page uses the latter.")
    return notes


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None, n_boot: int = 1000,
                 seed: int = 0, progress: bool = True) -> Path:
    """Compare runs of one task on the same cases; write CSVs, a forest plot and ``compare.html``.

    Args:
        run_dirs: Two or more run directories; the first is the reference.
        out_dir: Output folder (default ``./compare/<timestamp>``).
        n_boot: Bootstrap replicates per metric, run and pair.
        seed: Bootstrap seed (the same resampled patients for every metric and run).
        progress: Show a tqdm bar over metrics.

    Returns:
        Path of ``compare.html``; ``compare.csv``, ``compare_pairs.csv`` and
        ``compare_forest.png`` are written next to it, each atomically.

    Raises:
        CompareError: see :func:`align_runs` (a ``ValueError``).
    """
    from medtasks.report.compare_html import render_compare

    runs = align_runs(run_dirs)
    if out_dir is None:
        out_dir = Path("compare") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out_dir)
    per_run, pairs = compute_comparison(runs, n_boot=n_boot, seed=seed, progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(per_run, out_dir / "compare.csv")
    write_csv_atomic(pairs, out_dir / "compare_pairs.csv")
    notes = _notes(runs, per_run)
    info = {"task": runs[0].task, "kind": runs[0].kind, "split": runs[0].metrics.get("split"),
            "n_cases": int(runs[0].case_ids.shape[0]), "n_patients": int(np.unique(runs[0].groups).size),
            "n_boot": int(n_boot), "seed": int(seed), "class_weights": runs[0].class_weights,
            "labels": runs[0].labels,
            "runs": [{"name": r.name, "path": str(r.run_dir), "synthetic": r.synthetic,
                      "config_hash": r.metrics.get("config_hash"), "thresholds": r.metrics.get("thresholds")}
                     for r in runs]}
    path = render_compare(out_dir, info, per_run, pairs, notes, LOWER_IS_BETTER)
    logger.info("wrote %s", path)
    return path


def add_compare_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``medtasks compare RUN [RUN ...] [--out DIR] [--n-boot N] [--seed S]``."""
    c = sub.add_parser("compare", help="runs of one task side by side, with paired patient-bootstrap CIs")
    c.add_argument("runs", nargs="+", help="run directories (2 or more); the first is the reference")
    c.add_argument("--out", help="output folder (default: ./compare/<timestamp>)")
    c.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default: 1000)")
    c.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    return c


def run_compare(args: argparse.Namespace) -> int:
    """Run the ``compare`` subcommand; CompareError (a ValueError) propagates to the CLI's handler."""
    from medtasks.report.compare_html import headline_table

    path = compare_runs(args.runs, args.out, n_boot=args.n_boot, seed=args.seed, progress=True)
    pairs = pd.read_csv(path.parent / "compare_pairs.csv", dtype={"label": str, "run_a": str, "run_b": str})
    print(headline_table(pairs))
    print(f"\ncompare: {path.resolve()}")
    return 0
