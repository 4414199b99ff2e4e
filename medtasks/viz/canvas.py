"""Matplotlib canvas helpers shared by the report and the task-side figures (Grad-CAM, overlays).

Figures are :class:`matplotlib.figure.Figure` objects on an explicit Agg canvas, never
``pyplot``: nothing enters pyplot's global figure manager, so no figure leaks or pops up a
window and the caller's backend is left alone. PNGs are written atomically (``io.atomic``).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medtasks.io.atomic import atomic_path

logger = logging.getLogger(__name__)

DPI = 110
STYLE = {
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 9.5,
    "figure.titlesize": 14,
    "axes.grid": True,
    "grid.alpha": 0.3,
}

# (label, x, y, score) as produced by the section builders from sklearn curves.
Curve = tuple[str, np.ndarray, np.ndarray, float]


@contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(STYLE):
        yield


def _new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kwargs: object
                ) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and release its artists."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        fig.clear()
    logger.debug("wrote %s", path)
    return path


