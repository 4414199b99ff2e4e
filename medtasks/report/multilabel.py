"""Report sections for multilabel and binary classification runs.

A binary run is a multilabel run with one label (predictions.csv carries ``true_<L>``,
``prob_<L>`` and ``pred_<L>`` for it), so both kinds share this builder.

Tables come from metrics.json, the numbers the engine computed and the ones ``compare``
reads. Confusion matrices and ROC/PR curves are recomputed from predictions.csv restricted to
the evaluated split, because metrics.json stores only summary numbers; the confusion counts
are cross-checked against metrics.json and any disagreement is printed in the report rather
than hidden.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

from medtasks.report import figures
from medtasks.report.html import figure, fmt_num, note, section, table

if TYPE_CHECKING:
    from medtasks.report import RunData

logger = logging.getLogger(__name__)

PER_CLASS_COLUMNS = ("precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "support", "threshold")
PER_CLASS_HEADERS = ("Label", "Precision", "Recall", "F1", "ROC-AUC", "PR-AUC", "Log loss", "Support", "Threshold")


def build_sections(run: RunData, fig_dir: Path) -> list[str]:
    """Per-class table, confusion matrices, ROC/PR curves and reliability diagram.

    Args:
        run: The loaded run directory.
        fig_dir: Where to write figures (``<run>/figures``).

    Returns:
        HTML ``<section>`` fragments in report order.
    """
    preds, source = _evaluated_predictions(run)
    return [
        _per_class_section(run),
        _confusion_section(run, preds, source, fig_dir),
        _curves_section(run, preds, source, fig_dir),
        _reliability_section(run, fig_dir),
        *([_cv_section(run)] if isinstance(run.metrics.get("cv"), dict) else []),
    ]


def _evaluated_predictions(run: RunData) -> tuple[pd.DataFrame | None, str]:
    """Rows of predictions.csv for the split metrics.json was computed on, plus a provenance note."""
    df = run.predictions
    if df is None or df.empty:
        return None, "predictions.csv not available."
    split = run.metrics.get("split")
    if split is None or "split" not in df.columns:
        return df, f"Computed from all {len(df)} rows of predictions.csv."
    subset = df[df["split"].astype(str) == str(split)]
    if subset.empty:
        logger.warning("predictions.csv has no rows with split == %r; using all rows", split)
        return df, f"predictions.csv has no rows with split == '{split}'; computed from all {len(df)} rows."
    return subset, f"Computed from the {len(subset)} rows of predictions.csv with split == '{split}'."


def _label_columns(df: pd.DataFrame, label: str, *kinds: str) -> dict[str, np.ndarray] | None:
    cols = {k: f"{k}_{label}" for k in kinds}
    if any(c not in df.columns for c in cols.values()):
        return None
    frame = df[list(cols.values())].dropna()
    return {k: frame[c].to_numpy() for k, c in cols.items()}


def _per_class_section(run: RunData) -> str:
    m = run.metrics
    per_class = m.get("per_class") or {}
    rows, classes = [], []
    for label in run.labels:
        stats = per_class.get(label)
        if stats is None:
            rows.append([label] + ["n/a"] * len(PER_CLASS_COLUMNS))
        else:
            rows.append([label] + [fmt_num(stats.get(k)) for k in PER_CLASS_COLUMNS])
        classes.append("label-row")
    for avg in ("macro", "weighted", "micro"):
        stats = m.get(avg)
        if isinstance(stats, dict):
            cells = [fmt_num(stats.get(k)) if k in stats else "" for k in PER_CLASS_COLUMNS]
            rows.append([f"{avg} average"] + cells)
            classes.append("summary")
    numeric = [False] + [True] * len(PER_CLASS_COLUMNS)
    body = [table(PER_CLASS_HEADERS, rows, table_id="per-class", row_classes=classes, numeric=numeric)]

    overall: list[list[str]] = []
    if "rsna_weighted_log_loss" in m:
        overall.append(["RSNA weighted log loss", fmt_num(m["rsna_weighted_log_loss"])])
    calibration = m.get("calibration") or {}
    overall.append(["Expected calibration error (ECE)", fmt_num(calibration.get("ece"))])
    overall.append(["Brier score", fmt_num(calibration.get("brier"))])
    overall.append(["Cases evaluated", fmt_num(m.get("n"))])
    overall.append(["Patients evaluated", fmt_num(m.get("n_patients"))])
    body.append(table(["Overall", "Value"], overall, table_id="overall-table", numeric=[False, True]))
    body.append(note(f"From metrics.json, evaluated on the '{m.get('split', 'n/a')}' split. "
                     "Thresholds are the per-label decision thresholds used for pred_<label>."))
    return section("per-class", "Per-class metrics", *body)


def _confusion_section(run: RunData, preds: pd.DataFrame | None, source: str, fig_dir: Path) -> str:
    title = "Confusion matrices"
    if preds is None:
        return section("confusion", title, note(source))
    matrices: dict[str, np.ndarray] = {}
    notes: list[str] = []
    per_class = run.metrics.get("per_class") or {}
    for label in run.labels:
        cols = _label_columns(preds, label, "true", "pred")
        if cols is None:
            notes.append(f"{label}: true_{label} / pred_{label} columns missing in predictions.csv.")
            continue
        cm = confusion_matrix(cols["true"].astype(int), cols["pred"].astype(int), labels=[0, 1])
        matrices[label] = cm
        expected = per_class.get(label, {})
        stored = [expected.get(k) for k in ("tn", "fp", "fn", "tp")]
        if all(v is not None for v in stored) and [int(v) for v in stored] != cm.ravel().tolist():
            notes.append(f"{label}: counts from predictions.csv (tn, fp, fn, tp = {cm.ravel().tolist()}) "
                         f"differ from metrics.json ({stored}).")
    if not matrices:
        return section("confusion", title, note(source), *(note(n) for n in notes))
    path = figures.plot_confusion_matrices(matrices, fig_dir / "confusion_matrices.png")
    caption = f"Rows are the truth, columns the thresholded prediction (pred_<label>). {source}"
    return section("confusion", title, figure(path.name, caption, alt="Confusion matrices"),
                   *(note(n) for n in notes))


def _curves_section(run: RunData, preds: pd.DataFrame | None, source: str, fig_dir: Path) -> str:
    title = "ROC and precision-recall curves"
    if preds is None:
        return section("curves", title, note(source))
    roc: list[figures.Curve] = []
    pr: list[figures.Curve] = []
    skipped: list[str] = []
    for label in run.labels:
        cols = _label_columns(preds, label, "true", "prob")
        if cols is None:
            skipped.append(f"{label} (true_/prob_ columns missing)")
            continue
        y, p = cols["true"].astype(int), cols["prob"].astype(float)
        present = np.unique(y)
        if present.size < 2:
            only = int(present[0]) if present.size else "none"
            skipped.append(f"{label} (only one class present in the truth: {only})")
            continue
        fpr, tpr, _ = roc_curve(y, p)
        roc.append((label, fpr, tpr, float(roc_auc_score(y, p))))
        precision, recall, _ = precision_recall_curve(y, p)
        pr.append((label, recall, precision, float(average_precision_score(y, p))))
    body: list[str] = []
    split = run.metrics.get("split")
    if roc:
        roc_path = figures.plot_roc_curves(roc, fig_dir / "roc_curves.png", split)
        pr_path = figures.plot_pr_curves(pr, fig_dir / "pr_curves.png", split)
        body.append('<div class="pair">'
                    + figure(roc_path.name, "ROC curves; AUC per label in the legend.", alt="ROC curves")
                    + figure(pr_path.name, "Precision-recall curves; average precision (AP) per label.",
                             alt="Precision-recall curves")
                    + "</div>")
    body.append(note(source))
    if skipped:
        body.append(note("Not plotted: " + "; ".join(skipped) + "."))
    return section("curves", title, *body)


def _reliability_section(run: RunData, fig_dir: Path) -> str:
    title = "Calibration"
    reliability = run.metrics.get("reliability")
    ece = (run.metrics.get("calibration") or {}).get("ece")
    if not reliability:
        return section("reliability", title, note("metrics.json has no reliability bins."))
    path = figures.plot_reliability(reliability, ece, fig_dir / "reliability.png")
    if path is None:
        return section("reliability", title, note("metrics.json reliability bins are empty or malformed."))
    caption = ("Reliability diagram from metrics.json: bars are the observed fraction of positives per "
               "probability bin (all label probabilities pooled), the orange line places each bin at its "
               "mean predicted probability; counts per bin below.")
    before = run.metrics.get("before_temperature")
    if not isinstance(before, dict):
        return section("reliability", title, figure(path.name, caption, alt="Reliability diagram"))
    # Temperature scaling was fitted on validation: show the test split before and after it.
    m, t = run.metrics, run.metrics.get("temperature")
    after = m.get("calibration") or {}
    rows = [["ECE", fmt_num(before.get("ece")), fmt_num(after.get("ece"))],
            ["Brier score", fmt_num(before.get("brier")), fmt_num(after.get("brier"))],
            ["Weighted log loss", fmt_num(before.get("weighted_log_loss")), fmt_num(m.get("rsna_weighted_log_loss"))]]
    body = [table(["Metric", "Before (T = 1)", f"After (T = {fmt_num(t)})"], rows, table_id="temperature-table",
                  numeric=[False, True, True]),
            note("Temperature T fitted on the validation split (task_state.json); both columns are the "
                 f"'{m.get('split', 'n/a')}' split." + _bound_note(m))]
    path_before = figures.plot_reliability(before.get("reliability") or {}, before.get("ece"),
                                           fig_dir / "reliability_before.png")
    if path_before is not None:
        body.append(figure(path_before.name, "Before temperature scaling (T = 1). " + caption,
                           alt="Reliability diagram before temperature scaling"))
    body.append(figure(path.name, f"After temperature scaling (T = {fmt_num(t)}). " + caption,
                       alt="Reliability diagram after temperature scaling"))
    return section("reliability", title, *body)


def _cv_section(run: RunData) -> str:
    """Per-fold validation metrics of a cross-validated run, with their mean and sd."""
    cv = run.metrics["cv"]
    folds = cv.get("per_fold") or []
    keys = [k for k in (folds[0] if folds else {}) if k not in ("fold",)]
    rows = [[str(f.get("fold"))] + [fmt_num(f.get(k)) for k in keys] for f in folds]
    mean, sd = cv.get("mean") or {}, cv.get("sd") or {}
    rows.append(["mean +- sd"] + [f"{fmt_num(mean.get(k))} +- {fmt_num(sd.get(k))}" if k in mean else "" for k in keys])
    body = [table(["Fold"] + keys, rows, table_id="cv-table", numeric=[False] + [True] * len(keys)),
            note(f"{cv.get('folds')}-fold cross-validation by patient (MultilabelStratifiedKFold); each fold's "
                 f"metrics are on its own validation fold at threshold 0.5. Test-time model: "
                 + ('the mean of all fold models' if cv.get('select') == 'ensemble'
                    else 'fold ' + str(cv.get('selected_fold')) + ' (best validation score)')
                 + "; temperature and thresholds fitted on the out-of-fold predictions (oof_predictions.csv).")]
    return section("cv", "Cross-validation", *body)


def _bound_note(metrics: dict) -> str:
    """A warning when T sits at an end of the configured search range (the optimum may lie beyond)."""
    t = metrics.get("temperature")
    bounds = metrics.get("temperature_range") or []
    if isinstance(t, (int, float)) and any(abs(t - b) < 1e-9 for b in bounds):
        return (f" T = {fmt_num(t)} is at the end of the search range {list(bounds)}: the best temperature may lie "
                "outside it (calibration.temperature_range).")
    return ""
