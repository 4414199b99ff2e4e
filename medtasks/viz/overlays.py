"""Truth-vs-prediction overlays on grey images: mask contours (segmentation) and boxes (detection).

Truth is drawn in green, the prediction in red (dashed for boxes), so a person sees misses
(green alone), false alarms (red alone) and agreement at a glance. One grid PNG per call.

Example:
    >>> img = np.zeros((32, 32)); t = np.zeros((32, 32), bool); t[8:16, 8:16] = True
    >>> mask_overlay_grid([img], [t], [t], ["case"], "overlays.png")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from medtasks.viz.canvas import _new_figure, _style, save_figure

__all__ = ["TRUTH_COLOR", "PRED_COLOR", "mask_overlay_grid", "box_overlay_grid"]

logger = logging.getLogger(__name__)

TRUTH_COLOR, PRED_COLOR = "#22c55e", "#ef4444"


def _grid(n: int, ncols: int, suptitle: str | None, panel: float = 2.9):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    return _new_figure(panel * ncols, (panel + 0.25) * nrows + (0.4 if suptitle else 0.0), nrows, ncols)


def _check(n: int, *seqs: Sequence) -> None:
    if n == 0 or any(len(s) != n for s in seqs):
        raise ValueError(f"need >= 1 image and one entry per image in every list; got {n} images, "
                         f"{[len(s) for s in seqs]} entries")


def _draw(images: Sequence[np.ndarray], titles: Sequence[str], path: str | Path, suptitle: str | None, ncols: int,
          legend: tuple[str, str], paint) -> Path:
    """The grid both overlays share: grey image per panel, ``paint(ax, i)`` draws truth and prediction."""
    n = len(images)
    with _style():
        fig, axes = _grid(n, ncols, suptitle)
        for i, ax in enumerate(axes.ravel()):
            ax.set_axis_off()
            if i >= n:
                continue
            ax.imshow(np.asarray(images[i], np.float32), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            paint(ax, i)
            ax.set_title(titles[i], fontsize=8.5)
        # the colour key goes in the title: a figure legend below the grid gets clipped by the layout
        key = f"green: {legend[0]}, red: {legend[1]}"
        fig.suptitle(f"{suptitle}\n{key}" if suptitle else key, fontsize=11)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_figure(fig, path)
    return path


def mask_overlay_grid(images: Sequence[np.ndarray], truths: Sequence[np.ndarray | None], preds: Sequence[np.ndarray],
                      titles: Sequence[str], path: str | Path, suptitle: str | None = None, ncols: int = 4) -> Path:
    """Grey ``images`` (H, W in [0, 1]) with the truth mask's contour (green) and the prediction's (red).

    A ``None`` truth (``predict`` on unlabelled data) draws the prediction alone.
    """
    n = len(images)
    _check(n, truths, preds, titles)

    def paint(ax, i: int) -> None:
        for mask, color in ((truths[i], TRUTH_COLOR), (preds[i], PRED_COLOR)):
            if mask is not None and np.any(mask):
                ax.contour(np.asarray(mask, np.float32), levels=[0.5], colors=[color], linewidths=1.4)

    path = _draw(images, titles, path, suptitle, ncols, ("truth mask", "predicted mask"), paint)
    logger.info("wrote mask overlays %s (%d images)", path, n)
    return path


def box_overlay_grid(images: Sequence[np.ndarray], truths: Sequence[Sequence[Sequence[float]]],
                     preds: Sequence[Sequence[Sequence[float]]], titles: Sequence[str], path: str | Path,
                     suptitle: str | None = None, ncols: int = 4) -> Path:
    """Grey ``images`` with truth boxes ``[x1, y1, x2, y2]`` (green) and predicted boxes
    ``[x1, y1, x2, y2, confidence]`` (red, dashed, confidence printed), in pixels of the image."""
    from matplotlib.patches import Rectangle

    n = len(images)
    _check(n, truths, preds, titles)

    def paint(ax, i: int) -> None:
        for x1, y1, x2, y2, *_ in truths[i]:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=TRUTH_COLOR, lw=1.6))
        for x1, y1, x2, y2, *rest in preds[i]:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=PRED_COLOR, lw=1.4, ls="--"))
            if rest:
                ax.text(x1, max(y1 - 2, 0), f"{rest[0]:.2f}", color=PRED_COLOR, fontsize=7, va="bottom")

    path = _draw(images, titles, path, suptitle, ncols, ("truth box", "predicted box (confidence)"), paint)
    logger.info("wrote box overlays %s (%d images)", path, n)
    return path
