"""``data.split_level: slice`` for ms_segment: the report's protocol, slices of the same scans in training and
validation (the report's "test" was validation slices of its training scans; data-notes).

Volumes stay the manifest's rows (their ``split`` is :data:`ALL_SPLITS`: every scan serves every split); each
axial slice gets its own split from a seeded hash of (subject, timepoint, slice, seed), so the assignment of a
slice does not depend on which other slices a loader keeps (training's share of lesion-free slices). The
evaluation scores only the slices of ``eval.split``: the other slices of each volume are blanked in both the
prediction and the truth before the volume metrics, and the slice metrics cover only those slices.

Example:
    >>> slice_split_of("01", "1", 7, seed=42, fractions=(0.8, 0.2, 0.0))
    'train'
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["ALL_SPLITS", "SLICE_SPLIT_WARNING", "slice_split_of", "split_slices", "blank_other_slices"]

ALL_SPLITS = "all"
SLICE_SPLIT_WARNING = ("data.split_level=slice: axial slices of the same scans are in training and validation, so "
                       "every figure is inflated by patient (and scan) leakage, as the source report's. Use "
                       "split_level=patient for honest numbers.")
_SPLITS = ("train", "val", "test")


def slice_split_of(subject: str, timepoint: str, k: int, seed: int, fractions: Sequence[float]) -> str:
    """The split of slice ``k`` of (``subject``, ``timepoint``): a uniform draw from a SHA-256 of the ids and the
    seed, cut at the cumulative ``fractions`` (train, val, test)."""
    digest = hashlib.sha256(f"{subject}|{timepoint}|{int(k)}|{int(seed)}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    edges = np.cumsum(np.asarray(fractions, dtype=float))
    return _SPLITS[min(int(np.searchsorted(edges, u, side="right")), 2)]


def split_slices(frame: pd.DataFrame, seed: int, fractions: Sequence[float]) -> pd.DataFrame:
    """``frame`` (one row per slice: ``subject_id``, ``timepoint``, ``slice_index``) with its ``split`` set."""
    if frame.empty:
        return frame.assign(split=pd.Series(dtype=str))
    splits = [slice_split_of(str(s), str(t), int(k), seed, fractions)
              for s, t, k in zip(frame["subject_id"], frame["timepoint"], frame["slice_index"])]
    return frame.assign(split=splits)


def blank_other_slices(pred: np.ndarray, true: np.ndarray, keep: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Copies of the (X, Y, Z) masks with every axial slice outside ``keep`` set to background in both."""
    mask = np.zeros(pred.shape[2], bool)
    mask[np.asarray(list(keep), dtype=int)] = True
    p, t = pred.copy(), true.copy()
    p[:, :, ~mask] = False
    t[:, :, ~mask] = False
    return p, t
