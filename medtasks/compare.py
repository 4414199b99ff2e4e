"""``medtasks compare``: runs of one task side by side, with patient-bootstrap CIs of every difference.

Every number is recomputed from each run's ``predictions.csv`` (rows of the split its
``metrics.json`` says was evaluated), so all runs are measured by the same code. Runs must share
the task, the kind and the labels; the metric set is the kind's :class:`~medtasks.compare_metrics.MetricSet`
in :data:`COMPARE_METRICS` (classification: :class:`~medtasks.compare_metrics.ClassificationMetrics`,
segmentation: :class:`~medtasks.compare_metrics.SegmentationMetrics`).

Statistics (design §6): each metric of each run gets a 95 % percentile CI resampling that run's
whole patients (:func:`~medtasks.metrics.bootstrap.bootstrap_ci`). Each pair gets the difference
``run_a - run_b`` (``run_b`` = the run given earlier), ``significant`` when its CI excludes 0:

* ``paired`` when both runs evaluated the same ``case_id`` set: rows are aligned by case_id, the
  truth (and patient) of every case must agree, and both runs are scored on the same resampled
  patients (:func:`~medtasks.metrics.bootstrap.paired_bootstrap_diff`);
* ``unpaired`` when the case sets differ (e.g. a ``--protocol report`` run scored on its random
  validation split against a default run scored on its patient-split test set), or for every pair
  with ``--unpaired``: each run's patients are resampled independently
  (:func:`~medtasks.metrics.bootstrap.unpaired_bootstrap_diff`). That CI is wider and includes the
  case-mix difference; the page and ``compare_pairs.csv`` (column ``pairing``) say which was used,
  and a note gives the number of shared cases.

One seed serves every metric and run. No multiple-comparison correction; the page says so.
Thresholded metrics use each run's own ``pred_<L>`` column (its tuned thresholds), so a
comparison includes the effect of threshold choice.

Example:
    >>> from medtasks.compare import compare_runs
    >>> compare_runs(["runs/ich_classify/a", "runs/ich_classify/b"], "compare/ab")  # doctest: +SKIP
    PosixPath('compare/ab/compare.html')
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medtasks.compare_metrics import COMPARE_METRICS, LOWER_IS_BETTER, OVERALL, AlignedRun, MetricSet
from medtasks.io.atomic import write_csv_atomic
from medtasks.metrics.bootstrap import bootstrap_ci, paired_bootstrap_diff, unpaired_bootstrap_diff
from medtasks.metrics.summary import _class_weights
from medtasks.registry import UnknownNameError, did_you_mean
from medtasks.report import RunData, load_run
from medtasks.report.compare_html import UNPAIRED_WHY
from medtasks.rundir import FINISHED, FailedRunError, read_status, unfinished_run_message

__all__ = ["compare_runs", "align_runs", "compute_comparison", "pairing_of", "AlignedRun", "CompareError",
           "RunFileMissing", "RunNotFinished", "COMPARE_METRICS", "LOWER_IS_BETTER", "OVERALL", "UNPAIRED_WHY",
           "add_compare_parser", "run_compare"]

logger = logging.getLogger(__name__)

DEFAULT_ECE_BINS = 15


class CompareError(ValueError):
    """Runs that cannot be compared; the message names the run directory and the fix."""


class RunFileMissing(CompareError, FileNotFoundError):
    """A run directory or one of its files is missing (both a ValueError and a FileNotFoundError)."""


class RunNotFinished(CompareError, FailedRunError):
    """A run whose ``status.json`` says it failed (or is still running) and that lacks the files compare reads:
    the message names the directory, the error and its ``run.log``."""


# --------------------------------------------------------------------------- loading + checks


def _load(run_dir: Path) -> RunData:
    if not run_dir.is_dir():
        raise RunFileMissing(f"run directory {run_dir} does not exist; pass directories written by `medtasks run`.")
    status = read_status(run_dir)   # None: a run made before statuses were recorded (judged by its files)
    missing = [name for name in ("metrics.json", "predictions.csv") if not (run_dir / name).is_file()]
    if missing and status is not None and status.get("status") != FINISHED:
        raise RunNotFinished(unfinished_run_message(run_dir, status))
    if missing:
        raise RunFileMissing(
            f"{run_dir}: {missing[0]} not found. compare recomputes every metric from a finished run's "
            "predictions.csv and metrics.json; re-run evaluation (`medtasks run ...`) or pass another run.")
    run = load_run(run_dir)
    if run.predictions is None or run.predictions.empty:
        raise CompareError(f"{run_dir}: predictions.csv is empty; re-run evaluation for this run.")
    return run


def _metric_set(kind: str, metrics: dict | None = None) -> type[MetricSet]:
    """The kind's metric set; a multi-class segmentation run (metrics.json ``layout: cardiac``) has per-class
    columns and is scored by ``segmentation_classes``."""
    if kind == "segmentation" and (metrics or {}).get("layout") == "cardiac":
        kind = "segmentation_classes"
    try:
        return COMPARE_METRICS.get(kind)
    except UnknownNameError:
        raise CompareError(f"compare has no metric set for kind {kind!r}.{did_you_mean(kind, COMPARE_METRICS.names())} "
                           "A new kind registers a MetricSet subclass with "
                           "`@medtasks.compare.COMPARE_METRICS.register(kind)`.") from None


def _evaluated_rows(run: RunData, mset: type[MetricSet]) -> pd.DataFrame:
    """Rows of the evaluated split, indexed by case_id, with the columns of the kind's metric set checked (from
    ``predictions.csv``, or the file the metric set reads: detection's ``image_matches.csv``)."""
    df, path = run.predictions, run.run_dir / mset.rows_file
    if mset.rows_file != "predictions.csv":
        if not path.is_file():
            raise RunFileMissing(f"{path} not found: {mset.__name__} reads it (written by the kind's evaluation); "
                                 "re-evaluate the run with `medtasks evaluate`.")
        df = pd.read_csv(path, dtype={"case_id": str, "patient_id": str, "split": str})
    split = run.metrics.get("split")
    if split is not None and "split" in df.columns:
        df = df[df["split"] == str(split)]
        if df.empty:
            raise CompareError(f"{path}: no rows with split == {split!r} (the split metrics.json says was "
                               f"evaluated); splits present: {sorted(run.predictions['split'].unique())}.")
    if "case_id" not in df.columns:
        raise CompareError(f"{path} lacks column case_id; compare aligns and counts cases by it (as written by "
                           "`medtasks run`).")
    dup = df["case_id"][df["case_id"].duplicated()]
    if len(dup):
        raise CompareError(f"{path}: case_id {dup.iloc[0]!r} appears {int((df['case_id'] == dup.iloc[0]).sum())} "
                           "times in the evaluated split; case ids must be unique to align runs.")
    problem = mset.problems(df, run.labels)
    if problem:
        raise CompareError(f"{path}: {problem}")
    return df.set_index("case_id", drop=False)


def _run_names(dirs: Sequence[Path]) -> list[str]:
    """Folder names; a repeated name gets its parent folder, then a counter."""
    names = [d.name for d in dirs]
    names = [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in dirs]
    return [n if names.count(n) == 1 else f"{n} ({names[:i].count(n) + 1})" for i, n in enumerate(names)]


def _examples(ids: Sequence[str] | set, k: int = 3) -> str:
    ids = sorted(ids)
    return ", ".join(repr(str(x)) for x in ids[:k]) + (", ..." if len(ids) > k else "")


def _check_same(ref: RunData, run: RunData) -> None:
    fix = "compare puts runs of one task (same kind and labels) side by side."
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


def _differs(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """Row mask: the two equally shaped frames differ in some column (NaN equals NaN)."""
    x, y = a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64)
    return ~((x == y) | (np.isnan(x) & np.isnan(y))).all(axis=1)


def _has_pid(df: pd.DataFrame) -> bool:
    return "patient_id" in df.columns and bool(df["patient_id"].notna().all())


def align_runs(run_dirs: Sequence[str | Path], unpaired: bool = False) -> list[AlignedRun]:
    """Load and check run directories; runs with the same evaluated case set share one row order.

    Runs evaluated on the same ``case_id`` set (and ``unpaired`` False) are compared paired, so their
    rows are put in the order of the first of them, and the truth and patient of every case must agree.
    Runs on different case sets keep their own rows and patients (compared unpaired).

    Raises:
        CompareError: fewer than two runs, a run given twice, a missing file (also a
            ``FileNotFoundError``), a different task/kind/labels, malformed columns, or (paired runs
            only) a case whose truth or patient differs between runs.
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
    mset = _metric_set(ref.kind, ref.metrics)
    frames = [_evaluated_rows(r, mset) for r in runs]
    sets = [frozenset(df.index) for df in frames]
    leaders = [i if unpaired else sets.index(s) for i, s in enumerate(sets)]  # first run with the same case set
    weights, n_bins = _reference_weights(ref), int((ref.metrics.get("calibration") or {}).get("n_bins")
                                                   or DEFAULT_ECE_BINS)
    labels, names, out = list(ref.labels), _run_names(dirs), []
    for i, (name, run, df) in enumerate(zip(names, runs, frames)):
        lead, lead_df = runs[leaders[i]], frames[leaders[i]]
        ids = lead_df["case_id"].to_numpy(dtype=str)
        df = df.loc[ids]
        members = [frames[j] for j in range(len(runs)) if leaders[j] == leaders[i]]
        group_column = "patient_id" if all(_has_pid(m) for m in members) else "case_id"
        if group_column == "case_id":
            logger.warning("%s: predictions.csv lacks patient_id (here or in a run on the same cases): the "
                           "bootstrap resamples cases instead", run.run_dir)
        groups = lead_df.loc[ids, group_column].to_numpy(dtype=str)
        if leaders[i] != i:
            cols = mset.truth_columns(lead_df, labels)
            bad = np.nonzero(_differs(df[cols], lead_df.loc[ids, cols]))[0]
            if bad.size:
                raise CompareError(
                    f"{run.run_dir}: truth differs from {lead.run_dir} (same evaluated cases, so compared paired) "
                    f"for {bad.size} case(s) ({_examples(ids[bad])}); the runs were evaluated on different labels. "
                    "Rebuild both from the same manifest, or pass --unpaired to compare them as independent samples.")
            if group_column == "patient_id" and (df["patient_id"].to_numpy(dtype=str) != groups).any():
                raise CompareError(f"{run.run_dir}: patient_id of some cases differs from {lead.run_dir}; evaluate "
                                   "both runs on the same manifest, or pass --unpaired.")
        out.append(AlignedRun(
            name=name, run_dir=run.run_dir, task=run.task, kind=run.kind, labels=labels, synthetic=run.synthetic,
            case_ids=ids, groups=groups, frame=df, class_weights=weights, n_bins=n_bins, group_column=group_column,
            metrics=run.metrics))
    return out


def pairing_of(a: AlignedRun, b: AlignedRun, unpaired: bool = False) -> str:
    """``"paired"`` when the two runs hold the same cases in the same order (and not ``unpaired``), else
    ``"unpaired"``."""
    return "paired" if not unpaired and np.array_equal(a.case_ids, b.case_ids) else "unpaired"


def _undefined(idx: np.ndarray) -> float:
    raise ValueError("metric not computed for this run")


def compute_comparison(runs: Sequence[AlignedRun], n_boot: int = 1000, seed: int = 0, progress: bool = True,
                       unpaired: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-run values with CIs and pairwise differences (paired or unpaired, see :func:`pairing_of`).

    Returns:
        ``(per_run, pairs)``: per_run has columns metric, label, run, value, ci_low, ci_high;
        pairs has metric, label, run_a, run_b, pairing, diff (= run_a - run_b; run_b is the run
        given earlier), ci_low, ci_high, significant. Undefined values are NaN.
    """
    mset = _metric_set(runs[0].kind, runs[0].metrics)
    fns = [mset.build(r) for r in runs]
    n = len(runs)
    pairing = {(i, j): pairing_of(runs[i], runs[j], unpaired) for i in range(n) for j in range(i + 1, n)}
    per_run, pairs = [], []
    for key in tqdm(list(fns[0]), desc="compare", unit="metric", disable=not progress):
        metric, label = key
        for run, f in zip(runs, fns):
            r = bootstrap_ci(f.get(key, _undefined), run.groups, n_boot=n_boot, seed=seed)
            per_run.append({"metric": metric, "label": label, "run": run.name, "value": r["value"],
                            "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
        for (i, j), how in pairing.items():
            fa, fb = fns[j].get(key, _undefined), fns[i].get(key, _undefined)
            d = (paired_bootstrap_diff(fa, fb, runs[i].groups, n_boot=n_boot, seed=seed) if how == "paired" else
                 unpaired_bootstrap_diff(fa, fb, runs[j].groups, runs[i].groups, n_boot=n_boot, seed=seed))
            pairs.append({"metric": metric, "label": label, "run_a": runs[j].name, "run_b": runs[i].name,
                          "pairing": how, "diff": d["diff"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                          "significant": bool(d["excludes_zero"])})
    as_float = dict.fromkeys(("value", "diff", "ci_low", "ci_high"), float)  # None -> NaN
    return (pd.DataFrame(per_run).astype({k: v for k, v in as_float.items() if k != "diff"}),
            pd.DataFrame(pairs).astype({k: v for k, v in as_float.items() if k != "value"}))


# --------------------------------------------------------------------------- public entry points


def _pairing_notes(runs: Sequence[AlignedRun], unpaired: bool) -> list[str]:
    """One note per unpaired pair: why, how many cases each run and both share, and what the CI means."""
    mset, notes = _metric_set(runs[0].kind, runs[0].metrics), []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            a, b = runs[j], runs[i]
            if pairing_of(b, a, unpaired) == "paired":
                continue
            shared = sorted(set(a.case_ids) & set(b.case_ids))
            if set(a.case_ids) == set(b.case_ids):
                why = f"as --unpaired asked, although both runs were scored on the same {len(shared)} cases"
            else:
                overlap = "none shared" if not shared else f"{len(shared)} shared, resampled independently here"
                why = f"runs scored on different cases ({len(a.case_ids)} and {len(b.case_ids)} cases, {overlap})"
            notes.append(f"{a.name} - {b.name}: unpaired, {why}: {UNPAIRED_WHY}.")
            if shared:
                cols = mset.truth_columns(a.frame, a.labels)
                bad = np.nonzero(_differs(a.frame.loc[shared, cols], b.frame.loc[shared, cols]))[0]
                if bad.size:
                    notes.append(f"{a.name} - {b.name}: truth differs on {bad.size} of the {len(shared)} shared "
                                 f"cases ({_examples([shared[k] for k in bad])}): the runs used different labels.")
    return notes


def _notes(runs: Sequence[AlignedRun], per_run: pd.DataFrame, unpaired: bool = False) -> list[str]:
    """Warnings for the page: unpaired pairs, no patient ids, kind caveats, class weights, stale metrics.json."""
    notes = _pairing_notes(runs, unpaired)
    for run in runs:
        if run.group_column != "patient_id":
            notes.append(f"{run.name}: no patient_id in predictions.csv (here or in a run on the same cases): the "
                         "bootstrap resampled cases, not patients, so its CIs are too narrow if a patient has "
                         "several cases.")
        notes.extend(_metric_set(run.kind, run.metrics).notes(run))
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


def _common(values: list) -> object:
    return values[0] if all(v == values[0] for v in values) else None


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None, n_boot: int = 1000,
                 seed: int = 0, progress: bool = True, unpaired: bool = False) -> Path:
    """Compare runs of one task; write CSVs, a forest plot and ``compare.html``.

    Args:
        run_dirs: Two or more run directories; the first is the reference.
        out_dir: Output folder (default ``./compare/<timestamp>``).
        n_boot: Bootstrap replicates per metric, run and pair.
        seed: Bootstrap seed (the same for every metric and run).
        progress: Show a tqdm bar over metrics.
        unpaired: Compare every pair as independent samples, even runs scored on the same cases
            (runs on different case sets are compared unpaired in any case).

    Returns:
        Path of ``compare.html``; ``compare.csv``, ``compare_pairs.csv`` and
        ``compare_forest.png`` are written next to it, each atomically.

    Raises:
        CompareError: see :func:`align_runs` (a ``ValueError``).
    """
    from medtasks.report.compare_html import render_compare

    runs = align_runs(run_dirs, unpaired=unpaired)
    if out_dir is None:
        out_dir = Path("compare") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out_dir)
    per_run, pairs = compute_comparison(runs, n_boot=n_boot, seed=seed, progress=progress, unpaired=unpaired)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(per_run, out_dir / "compare.csv")
    write_csv_atomic(pairs, out_dir / "compare_pairs.csv")
    notes = _notes(runs, per_run, unpaired)
    run_info = [{"name": r.name, "path": str(r.run_dir), "synthetic": r.synthetic,
                 "config_hash": r.metrics.get("config_hash"), "thresholds": r.metrics.get("thresholds"),
                 "protocol": r.metrics.get("protocol") or "medtasks", "split": r.metrics.get("split"),
                 "n_cases": int(r.case_ids.shape[0]),
                 "n_patients": int(np.unique(r.groups).size) if r.group_column == "patient_id" else None}
                for r in runs]
    same_cases = all(set(r.case_ids) == set(runs[0].case_ids) for r in runs)
    info = {"task": runs[0].task, "kind": runs[0].kind, "split": _common([r["split"] for r in run_info]),
            "n_cases": run_info[0]["n_cases"] if same_cases else None,
            "n_patients": run_info[0]["n_patients"] if same_cases else None,
            "n_boot": int(n_boot), "seed": int(seed), "class_weights": runs[0].class_weights,
            "labels": runs[0].labels, "runs": run_info}
    path = render_compare(out_dir, info, per_run, pairs, notes, LOWER_IS_BETTER)
    logger.info("wrote %s", path)
    return path


def add_compare_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``medtasks compare RUN [RUN ...] [--out DIR] [--n-boot N] [--seed S] [--unpaired]``."""
    c = sub.add_parser("compare", help="runs of one task side by side, with patient-bootstrap CIs of the differences")
    c.add_argument("runs", nargs="+", help="run directories (2 or more); the first is the reference")
    c.add_argument("--out", help="output folder (default: ./compare/<timestamp>)")
    c.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default: 1000)")
    c.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    c.add_argument("--unpaired", action="store_true",
                   help="resample each run's patients independently for every difference, even for runs scored on "
                        "the same cases (default: paired when two runs evaluated the same cases, else unpaired)")
    return c


def run_compare(args: argparse.Namespace) -> int:
    """Run the ``compare`` subcommand; CompareError (a ValueError) propagates to the CLI's handler."""
    from medtasks.report.compare_html import headline_table

    path = compare_runs(args.runs, args.out, n_boot=args.n_boot, seed=args.seed, progress=True,
                        unpaired=bool(getattr(args, "unpaired", False)))
    pairs = pd.read_csv(path.parent / "compare_pairs.csv", dtype={"label": str, "run_a": str, "run_b": str})
    print(headline_table(pairs))
    print(f"\ncompare: {path.resolve()}")
    return 0
