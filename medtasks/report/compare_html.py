"""Render ``compare.html`` and ``compare_forest.png`` from the tables that ``medtasks.compare`` computed.

Drawing and markup only: this module never computes a metric. It takes the long per-run
table (metric, label, run, value, ci_low, ci_high) and the pairwise table (metric, label,
run_a, run_b, pairing, diff, ci_low, ci_high, significant) and lays them out with the report's HTML
helpers, so a comparison looks like a run report. The figure sits next to ``compare.html``
and is linked relatively, so the output folder can be copied as a whole.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from medtasks.io.atomic import write_text_atomic
from medtasks.report.figures import _new_figure, _style, save_figure
from medtasks.report.html import SYNTHETIC_BANNER, esc, fmt_num, note, page, section, table

__all__ = ["render_compare", "plot_forest", "headline_table"]

logger = logging.getLogger(__name__)

UNPAIRED_WHY = ("the CI of the difference resamples each run's patients independently; it is wider than a paired "
                "CI and includes the case-mix difference")

FOREST_PNG = "compare_forest.png"
# Printed by `medtasks compare` when present: (metric, label).
HEADLINE = (("weighted_f1", "overall"), ("macro_f1", "overall"), ("roc_auc", "any"),
            ("rsna_weighted_log_loss", "overall"), ("ece", "overall"), ("brier", "overall"),
            ("pooled_dice", "overall"), ("per_image_dice", "overall"), ("per_patient_dice", "overall"))
# One line per pairing, shown above the pairs table when a pair of that pairing is in it.
PAIRING_EXPLANATION = {
    "paired": "paired: runs scored on the same cases: each replicate resamples the same patients for both runs, "
              "so the case-to-case variation they share cancels.",
    "unpaired": f"unpaired: runs scored on different cases: {UNPAIRED_WHY}.",
}
EXTRA_CSS = "<style>tr.significant td { background: #e3f1e6; font-weight: 600; }</style>"




def _row_label(metric: str, label: str, lower_is_better: Collection[str]) -> str:
    name = metric if label == "overall" else f"{metric} · {label}"
    return name + (" (lower is better)" if metric in lower_is_better else "")


def _interval(value: float, lo: float, hi: float, signed: bool = False) -> str:
    if value is None or np.isnan(value):
        return "n/a"
    fmt = (lambda x: f"{x:+.4f}") if signed else fmt_num
    ci = "CI n/a" if lo is None or np.isnan(lo) else f"{fmt(lo)}, {fmt(hi)}"
    return f"{fmt(value)} [{ci}]"


def _pairing(pairs: pd.DataFrame) -> pd.Series:
    """The ``pairing`` column (``paired`` for tables written before compare had unpaired mode)."""
    return pairs["pairing"] if "pairing" in pairs.columns else pd.Series("paired", index=pairs.index)


def plot_forest(pairs: pd.DataFrame, reference: str, others: Sequence[str], path: Path,
                lower_is_better: Collection[str] = ()) -> Path | None:
    """Differences vs the reference run with 95 % CI bars; one panel per other run.

    Significant differences (CI excludes 0) are drawn in red and filled, the rest in grey; each
    panel's axis says whether its CI is paired or unpaired.

    Returns:
        ``path``, or None when there is no pair against the reference.
    """
    vs_ref = pairs[pairs["run_b"] == reference]
    if vs_ref.empty or not others:
        return None
    keys = list(dict.fromkeys(zip(vs_ref["metric"], vs_ref["label"])))
    ticks = [_row_label(m, lab, lower_is_better) for m, lab in keys]
    y = np.arange(len(keys))[::-1]
    with _style():
        fig, axes = _new_figure(4.6 * len(others) + 3.2, 0.34 * len(keys) + 1.8, 1, len(others), sharey=True)
        for ax, other in zip(axes[0], others):
            rows = vs_ref[vs_ref["run_a"] == other]
            how = "/".join(sorted(set(_pairing(rows)))) or "paired"
            sub = rows.set_index(["metric", "label"]).reindex(keys)
            diff, lo, hi = (sub[c].to_numpy(dtype=float) for c in ("diff", "ci_low", "ci_high"))
            sig = sub["significant"].fillna(False).to_numpy(dtype=bool)
            ax.axvline(0.0, color="0.3", linewidth=1)
            for mask, color, face, lab in ((~sig, "0.45", "white", "CI includes 0"),
                                           (sig, "tab:red", "tab:red", "significant (CI excludes 0)")):
                has_ci = mask & ~np.isnan(lo)
                ax.errorbar(diff[has_ci], y[has_ci], xerr=[diff[has_ci] - lo[has_ci], hi[has_ci] - diff[has_ci]],
                            fmt="o", color=color, markerfacecolor=face, capsize=3, linewidth=1.4, label=lab)
                no_ci = mask & np.isnan(lo) & ~np.isnan(diff)
                ax.plot(diff[no_ci], y[no_ci], "o", color=color, markerfacecolor=face)
            ax.set(title=f"{other}\nminus {reference}", xlabel=f"Difference (95% {how} bootstrap CI)")
            ax.set_yticks(y, labels=ticks)
            ax.grid(axis="y", alpha=0.15)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2)
        fig.suptitle("Metric differences vs the reference run")
        return save_figure(fig, path)


def _header(info: dict[str, Any], notes: Sequence[str]) -> list[str]:
    if info.get("n_cases") is None:
        cases = ["cases differ between runs (see Runs)"]
    else:
        cases = [f"{info['n_cases']} cases", f"{info['n_patients'] or 'n/a'} patients"]
    meta = [f"kind: {info['kind']}", f"evaluated split: {info.get('split') or 'per run (see Runs)'}", *cases,
            f"{info['n_boot']} bootstrap replicates (seed {info['seed']})"]
    parts = [EXTRA_CSS, "<header>", f"<h1>Comparison — {esc(info['task'])}</h1>",
             f'<p class="meta">{esc(" · ".join(meta))}</p>', "</header>"]
    synthetic = [r["name"] for r in info["runs"] if r["synthetic"]]
    if synthetic:
        parts.append(f'<div class="banner" id="synthetic-banner">{esc(SYNTHETIC_BANNER)}</div>')
        parts.append(note(f"Runs on synthetic data: {', '.join(synthetic)}."))
    if notes:
        items = "".join(f"<li>{esc(n)}</li>" for n in notes)
        parts.append(f'<div class="warning" id="warnings"><strong>Warnings</strong><ul>{items}</ul></div>')
    return parts


def _runs_section(info: dict[str, Any]) -> str:
    rows = []
    for i, r in enumerate(info["runs"]):
        thr = r.get("thresholds")
        thr_text = ", ".join(f"{k}={fmt_num(v, 3)}" for k, v in thr.items()) if isinstance(thr, dict) else fmt_num(thr)
        patients = r.get("n_patients")
        rows.append([r["name"] + (" (reference)" if i == 0 else ""), r["path"], r.get("protocol") or "medtasks",
                     r.get("split") or "n/a", r.get("n_cases", "n/a"), "n/a" if patients is None else patients,
                     "yes" if r["synthetic"] else "no", r.get("config_hash") or "n/a", thr_text])
    headers = ["Run", "Directory", "Protocol", "Evaluated split", "Cases", "Patients", "Synthetic", "Config hash",
               "Thresholds"]
    return section("runs", "Runs", table(headers, rows, table_id="runs-table"))


def _side_by_side(per_run: pd.DataFrame, run_names: Sequence[str], lower_is_better: Collection[str]) -> str:
    rows = []
    for (metric, label), grp in per_run.groupby(["metric", "label"], sort=False):
        by_run = grp.set_index("run")
        cells = [_interval(by_run.at[n, "value"], by_run.at[n, "ci_low"], by_run.at[n, "ci_high"]) for n in run_names]
        rows.append([_row_label(metric, label, lower_is_better), *cells])
    headers = ["Metric", *run_names]
    return section("side-by-side", "Metrics per run (value [95% CI])",
                   table(headers, rows, table_id="side-by-side", numeric=[False] + [True] * len(run_names)))


def _pairs_section(pairs: pd.DataFrame, lower_is_better: Collection[str]) -> str:
    rows, classes = [], []
    for r, how in zip(pairs.itertuples(index=False), _pairing(pairs)):
        rows.append([_row_label(r.metric, r.label, lower_is_better), r.run_a, r.run_b, how,
                     _interval(r.diff, r.ci_low, r.ci_high, signed=True), "yes" if r.significant else ""])
        classes.append("significant" if r.significant else "")
    n_sig = int(pairs["significant"].sum())
    present = [k for k in PAIRING_EXPLANATION if k in set(_pairing(pairs))]
    body = [
        note("Difference = run A − run B (run B is the run given earlier). "
             f"Highlighted rows ({n_sig} of {len(pairs)}): the 95% CI excludes 0."),
        *(f'<p class="pairing" id="pairing-{k}">{esc(PAIRING_EXPLANATION[k])}</p>' for k in present),
        table(["Metric", "Run A", "Run B", "Pairing", "Difference [95% CI]", "Significant"], rows,
              table_id="pairs-table", row_classes=classes, numeric=[False, False, False, False, True, False]),
    ]
    return section("pairs", "Pairwise differences", *body)


def _method_section(info: dict[str, Any]) -> str:
    weights = info.get("class_weights")
    text = [
        "Every metric is recomputed from each run's predictions.csv, restricted to the split its metrics.json "
        "says was evaluated; classification: precision, recall and F1 use each run's own pred_<label> column "
        "(its thresholds), ROC-AUC and the losses use the probabilities, ECE and Brier pool all label "
        "probabilities; segmentation: per-image Dice/IoU average the cases with a truth lesion, pooled and "
        "per-patient ones come from the tp/fp/fn pixel counts.",
        f"95% CIs: percentile bootstrap with {info['n_boot']} replicates resampling each run's whole patients. "
        "A difference of two runs scored on the same cases (aligned by case_id) uses a paired bootstrap (both "
        "runs scored on the same resampled patients in each replicate); of runs scored on different cases (or "
        "with --unpaired), an unpaired one (each run's patients resampled independently), whose CI also "
        "includes the case-mix difference.",
        "Significance is per row with no correction for multiple comparisons, and the rows are correlated "
        "(e.g. F1 and its averages); with many rows some may exclude 0 by chance. Judge the pre-chosen "
        "headline metrics first.",
    ]
    if weights is not None:
        text.append("RSNA weighted log loss weights: "
                    + ", ".join(f"{lab}={fmt_num(w, 2)}" for lab, w in zip(info["labels"], weights)) + ".")
    return section("method", "Method", *(f"<p>{esc(t)}</p>" for t in text))


def render_compare(out_dir: Path, info: dict[str, Any], per_run: pd.DataFrame, pairs: pd.DataFrame,
                   notes: Sequence[str], lower_is_better: Collection[str]) -> Path:
    """Write ``compare_forest.png`` and ``compare.html`` into ``out_dir``; return the HTML path.

    Args:
        out_dir: Output folder (exists).
        info: ``task, kind, split, n_cases, n_patients, n_boot, seed, labels, class_weights`` (split /
            n_cases None when they differ between runs) and ``runs`` (list of ``name, path, synthetic,
            config_hash, thresholds, protocol, split, n_cases, n_patients``; first = reference).
        per_run: Long table of values with CIs.
        pairs: Pairwise differences.
        notes: Warnings to show at the top.
        lower_is_better: Metric names where a smaller value is better.
    """
    names = [r["name"] for r in info["runs"]]
    forest = plot_forest(pairs, names[0], names[1:], out_dir / FOREST_PNG, lower_is_better)
    if forest is None:
        fig_html = note("No pairs against the reference to plot.")
    else:
        fig_html = (f'<figure><img src="{esc(forest.name)}" alt="Forest plot of differences vs the reference" '
                    'loading="eager"><figcaption>Difference of each metric vs the reference run '
                    f"({esc(names[0])}) with its 95% patient-bootstrap CI (paired or unpaired, as the panel's axis "
                    "says); red: CI excludes 0."
                    "</figcaption></figure>")
    parts = [*_header(info, notes), _runs_section(info), _side_by_side(per_run, names, lower_is_better),
             _pairs_section(pairs, lower_is_better), section("forest", "Differences vs the reference", fig_html),
             _method_section(info)]
    out = out_dir / "compare.html"
    write_text_atomic(out, page(f"compare — {info['task']}", parts))
    return out


def headline_table(pairs: pd.DataFrame) -> str:
    """Plain-text table of the headline differences (printed by ``medtasks compare``)."""
    rows = [f"{'metric':<24}{'label':<10}{'run_a - run_b':<44}{'pairing':<10}{'diff':>9}  95% CI"]
    pairs = pairs.assign(pairing=_pairing(pairs))
    for metric, label in HEADLINE:
        sel = pairs[(pairs.metric == metric) & (pairs.label == label)]
        for r in sel.itertuples(index=False):
            ci = "n/a" if np.isnan(r.ci_low) else f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
            star = "  *" if r.significant else ""
            pair = f"{r.run_a} - {r.run_b}"
            diff = "n/a" if np.isnan(r.diff) else f"{r.diff:+.4f}"
            rows.append(f"{metric:<24}{label:<10}{pair[:43]:<44}{r.pairing:<10}{diff:>9}  {ci}{star}")
    rows.append("* 95% patient-bootstrap CI excludes 0 (no multiple-comparison correction); paired: same resampled "
                "patients; unpaired: each run's patients resampled independently (wider, includes case mix)")
    return "\n".join(rows)
