"""Report section of an evaluation's subgroup tables (``subgroups.csv``, written by :mod:`medtasks.subgroups`):
per ``--by`` column a forest plot of the kind's key metrics (value and 95% CI per subgroup, the difference to
the rest in the row label) and the full table in a fold-out."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medtasks.report.html import details, esc, figure, fmt_num, note, section, table
from medtasks.viz.canvas import _new_figure, _style, save_figure

if TYPE_CHECKING:
    from medtasks.report import RunData

# the metrics drawn in the forest plot, by kind (the first ones found in the table)
KEY_METRICS = {"binary": ["f1", "roc_auc"], "multilabel": ["weighted_f1", "macro_f1", "roc_auc"],
               "segmentation": ["pooled_dice", "per_patient_dice", "dice"],
               "detection": ["ap50", "map50_95", "image_f1"]}
MAX_PANELS = 4


def _ci(v: float, lo: float, hi: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return fmt_num(v) + ("" if lo is None or math.isnan(lo) or math.isnan(hi) else f" [{fmt_num(lo)}, {fmt_num(hi)}]")


def _panels(df: pd.DataFrame, kind: str) -> list[tuple[str, str]]:
    keys = [(m, lab) for m, lab in df[["metric", "label"]].drop_duplicates().itertuples(index=False)]
    chosen = []
    for metric in KEY_METRICS.get(kind, []):
        chosen += [(m, lab) for m, lab in keys if m == metric]
    if not chosen:   # a kind without a preset (per-class Dice): whatever the table holds first
        chosen = keys
    return chosen[:MAX_PANELS]


def forest_plot(df: pd.DataFrame, by: str, kind: str, path: Path) -> Path:
    """One panel per key metric: each subgroup's value with its 95% CI, and beside it the difference to the rest
    with its CI (``*`` when that CI excludes 0)."""
    from matplotlib.transforms import blended_transform_factory

    panels = _panels(df, kind)
    groups = list(dict.fromkeys(df["group"]))
    y = np.arange(len(groups))[::-1]
    with _style():
        fig, axes = _new_figure(5.0 * len(panels) + 1.5, 0.5 * len(groups) + 1.7, 1, len(panels))
        for i, (ax, (metric, label)) in enumerate(zip(axes[0], panels)):
            sub = df[(df.metric == metric) & (df.label == label)].set_index("group").reindex(groups)
            v = sub["value"].to_numpy(float)
            lo, hi = sub["ci_low"].to_numpy(float), sub["ci_high"].to_numpy(float)
            err = np.vstack([np.where(np.isnan(lo), 0, v - lo), np.where(np.isnan(hi), 0, hi - v)])
            ax.errorbar(v, y, xerr=err, fmt="o", color="#1f5fa8", capsize=3)
            ax.set_title(metric if label == "overall" else f"{metric} ({label})")
            ax.set_xlabel("value, 95% CI")
            ax.set_yticks(y)
            ax.set_ylim(-0.6, len(groups) - 0.4)
            ax.set_yticklabels([f"{g} (n={int(n) if n == n else 0})" for g, n in zip(groups, sub["n_cases"])]
                               if i == 0 else [])
            side = blended_transform_factory(ax.transAxes, ax.transData)
            for yy, (_, r) in zip(y, sub.iterrows()):
                if r["diff"] == r["diff"]:
                    ci = ("" if r["diff_ci_low"] != r["diff_ci_low"] else
                          f" [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]")
                    star = " *" if str(r["significant"]).lower() == "true" else ""
                    ax.text(1.02, yy, f"Δ {r['diff']:+.3f}{ci}{star}", transform=side, va="center", fontsize=8.5)
        fig.suptitle(f"by {by}: value [95% CI]; Δ = subgroup - rest [95% CI]")
        return save_figure(fig, path)


def subgroups_section(run: RunData, fig_dir: Path) -> str | None:
    """The section, or None when the folder has no ``subgroups.csv``."""
    path = run.run_dir / "subgroups.csv"
    if not path.is_file():
        return None
    df = pd.read_csv(path, dtype={"group": str}, keep_default_na=False, na_values=[""])
    body = [note("Each metric within each subgroup, with its 95% CI resampling the subgroup's patients, and the "
                 "difference to the rest of the evaluated cases (unpaired patient bootstrap: the two sides hold "
                 "different patients). No correction for multiple comparisons: with many subgroups and metrics, "
                 "some intervals exclude 0 by chance.")]
    for by, part in df.groupby("by", sort=False):
        name = f"subgroups_{''.join(c if c.isalnum() else '_' for c in str(by))}.png"
        forest_plot(part, str(by), run.kind, fig_dir / name)
        banded = bool(part["banded"].astype(str).str.lower().eq("true").any())
        shared = int(pd.to_numeric(part["shared_patients"], errors="coerce").fillna(0).max())
        rows = [[r.group, int(r.n_cases), int(r.n_patients), r.metric if r.label == "overall" else f"{r.metric} "
                 f"({r.label})", _ci(r.value, r.ci_low, r.ci_high), fmt_num(r.rest_value),
                 _ci(r.diff, r.diff_ci_low, r.diff_ci_high), "yes" if str(r.significant).lower() == "true" else ""]
                for r in part.itertuples()]
        tab = table(["group", "cases", "patients", "metric", "value [95% CI]", "rest", "difference [95% CI]",
                     "CI excludes 0"], rows, table_id=f"subgroups-{esc(by)}",
                    numeric=[False, True, True, False, True, True, True, False])
        extra = [note(f"{by} is numeric with many values: cut into quantile bands.")] if banded else []
        if shared:
            extra.append(note(f"{shared} patient(s) fall in more than one {by} group: the difference's CI assumes "
                              "independent samples and is too narrow for them."))
        body += [f"<h3>by {esc(by)}</h3>", figure(name, f"Subgroups by {by}: key metrics with 95% CIs"), *extra,
                 details(f"all metrics by {by} ({len(part)} rows; subgroups.csv)", tab)]
    return section("subgroups", "Subgroups", *body)
