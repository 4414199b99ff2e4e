"""Matplotlib figures for the run report; drawing only, no metric computation.

Figures are built as :class:`matplotlib.figure.Figure` objects on an explicit Agg canvas
instead of through ``pyplot``: nothing is registered in pyplot's global figure manager, so no
figure can leak or pop up a window, and the caller's backend choice is left alone. Each
figure is written to a temporary sibling and moved into place (``io.atomic``) so a report
never links a half-written PNG.

Font sizes are set through a local ``rc_context`` so a person can read the figure at the
width it is shown in the report (about 1100 px).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from medtasks.viz.canvas import Curve, _new_figure, _style, save_figure

logger = logging.getLogger(__name__)


def _pretty(column: str) -> str:
    return column.replace("_", " ")


def _colors(n: int) -> list:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_loss_curves(history: pd.DataFrame, best_epoch: int | None, path: Path) -> Path | None:
    """Loss curves (left) and validation metrics with lr on a log axis (right).

    Args:
        history: history.csv rows; uses ``epoch``, ``train_loss``, ``val_loss``, ``lr`` and
            every other numeric ``val_*`` column when present.
        best_epoch: Epoch to mark with a dashed line, or None.
        path: Output PNG.

    Returns:
        ``path``, or None when there is nothing to plot.
    """
    epoch = history["epoch"] if "epoch" in history.columns else pd.Series(np.arange(1, len(history) + 1))

    def usable(col: str) -> bool:
        return col in history.columns and pd.api.types.is_numeric_dtype(history[col]) \
            and bool(history[col].notna().any())

    losses = [c for c in ("train_loss", "val_loss") if usable(c)]
    metrics = [c for c in history.columns if c.startswith("val_") and c != "val_loss" and usable(c)]
    has_lr = usable("lr") and bool((history["lr"] > 0).any())
    if not (losses or metrics or has_lr):
        return None

    with _style():
        fig, axes = _new_figure(12, 4.6, 1, 2)
        ax_loss, ax_metric = axes[0]
        marker = "o" if len(history) <= 50 else None
        for col in losses:
            ax_loss.plot(epoch, history[col], marker=marker, label=_pretty(col))
        if not losses:
            ax_loss.text(0.5, 0.5, "no loss columns", ha="center", va="center", transform=ax_loss.transAxes)
        ax_loss.set(title="Loss", xlabel="Epoch", ylabel="Loss")

        handles: list = []
        for col, color in zip(metrics, _colors(len(metrics))):
            handles += ax_metric.plot(epoch, history[col], marker=marker, color=color, label=_pretty(col))
        ax_metric.set(title="Validation metrics and learning rate", xlabel="Epoch", ylabel="Metric value")
        if has_lr:
            ax_lr = ax_metric.twinx()
            lr = history["lr"].where(history["lr"] > 0)
            handles += ax_lr.plot(epoch, lr, color="0.35", linestyle=":", marker=marker, label="lr")
            ax_lr.set_yscale("log")
            ax_lr.set_ylabel("Learning rate (log)")
            ax_lr.grid(False)

        for ax in (ax_loss, ax_metric):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if best_epoch is not None:
                line = ax.axvline(best_epoch, color="tab:red", linestyle="--", linewidth=1.2,
                                  label=f"best epoch ({best_epoch})")
                if ax is ax_metric:
                    handles.append(line)
        if losses:
            ax_loss.legend(loc="best")
        if handles:
            ax_metric.legend(handles=handles, labels=[h.get_label() for h in handles], loc="best")
        return save_figure(fig, path)


def plot_confusion_matrices(matrices: Mapping[str, np.ndarray], path: Path, ncols: int = 3) -> Path:
    """One 2x2 panel per label: counts and row percentages (rows = truth).

    Args:
        matrices: label -> ``[[tn, fp], [fn, tp]]`` as from ``sklearn.metrics.confusion_matrix``.
        path: Output PNG.
        ncols: Panels per row.
    """
    n = len(matrices)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    with _style():
        fig, axes = _new_figure(3.8 * ncols + 0.6, 3.5 * nrows + 0.6, nrows, ncols)
        flat = axes.ravel()
        for ax, (label, cm) in zip(flat, matrices.items()):
            cm = np.asarray(cm, dtype=np.int64)
            row_sum = cm.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                pct = np.where(row_sum > 0, cm / np.maximum(row_sum, 1), np.nan)
            ax.imshow(np.nan_to_num(pct), cmap="Blues", vmin=0.0, vmax=1.0)
            for i in range(2):
                for j in range(2):
                    share = "—" if np.isnan(pct[i, j]) else f"{pct[i, j]:.1%}"
                    dark = not np.isnan(pct[i, j]) and pct[i, j] > 0.55
                    ax.text(j, i, f"{cm[i, j]}\n{share}", ha="center", va="center", fontsize=12,
                            color="white" if dark else "black")
            ax.set_xticks([0, 1], labels=["neg", "pos"])
            ax.set_yticks([0, 1], labels=["neg", "pos"])
            ax.set(title=label, xlabel="Predicted", ylabel="True")
            ax.grid(False)
        for ax in flat[n:]:
            ax.set_visible(False)
        fig.suptitle("Confusion matrices per label (count and % of true row)")
        return save_figure(fig, path)


def _plot_curves(curves: Sequence[Curve], path: Path, *, title: str, xlabel: str, ylabel: str,
                 score_name: str, diagonal: bool) -> Path:
    with _style():
        fig, axes = _new_figure(6.6, 6.0)
        ax = axes[0, 0]
        for (label, x, y, score), color in zip(curves, _colors(len(curves))):
            # AP is a step integral: precision at each threshold holds back to the previous recall,
            # which is "steps-post" in precision_recall_curve's decreasing-recall order (as sklearn draws it).
            style = "steps-post" if score_name == "AP" else "default"
            ax.plot(x, y, color=color, linewidth=1.8, drawstyle=style, label=f"{label} ({score_name} {score:.3f})")
        if diagonal:
            ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="chance")
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(-0.01, 1.01), ylim=(-0.01, 1.02))
        ax.set_aspect("equal")
        ax.legend(loc="lower right" if diagonal else "lower left")
        return save_figure(fig, path)


def plot_roc_curves(curves: Sequence[Curve], path: Path, split: str | None = None) -> Path:
    """All labels' ROC curves in one panel, AUC in the legend; ``curves`` are (label, fpr, tpr, auc)."""
    suffix = f" ({split} split)" if split else ""
    return _plot_curves(curves, path, title=f"ROC curves{suffix}", xlabel="False positive rate",
                        ylabel="True positive rate (recall)", score_name="AUC", diagonal=True)


def plot_pr_curves(curves: Sequence[Curve], path: Path, split: str | None = None) -> Path:
    """All labels' precision-recall curves, AP in the legend.

    ``curves`` are (label, recall, precision, ap) in ``precision_recall_curve``'s order.
    """
    suffix = f" ({split} split)" if split else ""
    return _plot_curves(curves, path, title=f"Precision-recall curves{suffix}", xlabel="Recall",
                        ylabel="Precision", score_name="AP", diagonal=False)


def _as_float(values: Sequence[object] | None, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def plot_reliability(reliability: Mapping[str, Sequence[object]], ece: float | None, path: Path) -> Path | None:
    """Reliability diagram: observed positive fraction per bin vs the diagonal, counts below.

    Args:
        reliability: metrics.json ``reliability`` (``bin_lower``, ``bin_upper``, ``mean_pred``,
            ``frac_pos``, ``count``); empty bins carry None.
        ece: Expected calibration error for the title, or None.
        path: Output PNG.

    Returns:
        ``path``, or None when the bins are missing.
    """
    lower = _as_float(reliability.get("bin_lower"), 0)
    upper = _as_float(reliability.get("bin_upper"), 0)
    n = len(lower)
    if n == 0 or len(upper) != n:
        return None
    mean_pred = _as_float(reliability.get("mean_pred"), n)
    frac_pos = _as_float(reliability.get("frac_pos"), n)
    count = np.nan_to_num(_as_float(reliability.get("count"), n))
    width = upper - lower
    filled = ~np.isnan(frac_pos)

    with _style():
        fig, axes = _new_figure(7.0, 7.2, 2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        ax, ax_count = axes[0, 0], axes[1, 0]
        ax.bar(lower[filled], frac_pos[filled], width=width[filled], align="edge", color="tab:blue",
               alpha=0.55, edgecolor="tab:blue", label="fraction positive per bin")
        both = filled & ~np.isnan(mean_pred)
        ax.plot(mean_pred[both], frac_pos[both], "o-", color="tab:orange", label="(mean predicted, fraction positive)")
        ax.plot([0, 1], [0, 1], color="0.4", linestyle="--", linewidth=1, label="perfect calibration")
        ece_text = "n/a" if ece is None else f"{float(ece):.4f}"
        ax.set(title=f"Reliability diagram (ECE {ece_text})", ylabel="Observed fraction positive",
               xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(loc="upper left")
        ax_count.bar(lower, count, width=width, align="edge", color="0.55", edgecolor="0.3")
        ax_count.set(xlabel="Predicted probability", ylabel="Count")
        if count.max(initial=0) > 0 and count[count > 0].min() * 100 < count.max():
            ax_count.set_yscale("log")  # one crowded bin would flatten all the others
        return save_figure(fig, path)


def plot_grouped_bars(groups: Sequence[str], series: Sequence[str], values: np.ndarray, path: Path,
                      title: str = "") -> Path:
    """One group of bars per ``groups`` entry, one bar per ``series`` (``values``: groups x series), 0..1 axis."""
    with _style():
        fig, axes = _new_figure(7.5, 4.0)
        ax = axes[0, 0]
        width = 0.8 / max(len(series), 1)
        x = np.arange(len(groups))
        for j, (name, color) in enumerate(zip(series, _colors(len(series)))):
            ax.bar(x + (j - (len(series) - 1) / 2) * width, values[:, j], width, label=name, color=color)
        ax.set(xticks=x, xticklabels=list(groups), ylim=(0, 1.05), title=title)
        ax.legend(loc="upper right")
        return save_figure(fig, path)
