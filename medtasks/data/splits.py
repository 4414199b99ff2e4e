"""Patient-grouped splits: no patient ever appears in two splits.

The split is made at patient level: patients are shuffled with the seed (stratified by a patient
label when asked, e.g. "has any hemorrhage"), then allocated to train/val/test by the fractions.
A slice-level split exists only as an explicit option; the run records a warning for the report.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
LEAKY_WARNING = ("data.split_level=slice: slices of the same patient are in more than one split, so every "
                 "held-out figure is inflated by patient leakage. Use split_level=patient for honest numbers.")


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Counts per split summing to n, every non-zero fraction getting >= 1 when n allows."""
    raw = np.asarray(fractions, dtype=float) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts))[: n - counts.sum()]:
        counts[i] += 1
    for i, f in enumerate(fractions):  # make sure val/test are not empty when they are asked for
        if f > 0 and counts[i] == 0 and counts.max() > 1:
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    return counts.tolist()


def assign_splits(df: pd.DataFrame, group_col: str = "patient_id", fractions: Sequence[float] = (0.7, 0.15, 0.15),
                  seed: int = 0, stratify: str | None = None, level: str = "patient") -> pd.Series:
    """Return a ``split`` Series (train/val/test) aligned with ``df``.

    Args:
        group_col: the patient column; every row of a patient gets the same split.
        stratify: optional column; a patient's stratum is its max over rows (e.g. any hemorrhage).
        level: ``patient`` (default) or ``slice`` (leaky; only on explicit request).

    Example:
        >>> df["split"] = assign_splits(df, "patient_id", (0.7, 0.15, 0.15), seed=1, stratify="any")
    """
    rng = np.random.default_rng(seed)
    if level == "slice":
        order = rng.permutation(len(df))
        counts = _allocate(len(df), fractions)
        labels = np.repeat(SPLITS, counts)
        out = np.empty(len(df), dtype=object)
        out[order] = labels
        return pd.Series(out, index=df.index, name="split")
    if level != "patient":
        raise ValueError(f"split level {level!r}: use patient or slice")
    groups = df[group_col].astype(str)
    if stratify:
        strata = df.groupby(groups)[stratify].max()
    else:
        strata = pd.Series(0, index=sorted(groups.unique()))
    assignment: dict[str, str] = {}
    for _, members in sorted(strata.groupby(strata), key=lambda kv: str(kv[0])):
        patients = np.array(sorted(members.index))
        patients = patients[rng.permutation(len(patients))]
        counts = _allocate(len(patients), fractions)
        for name, chunk in zip(SPLITS, np.split(patients, np.cumsum(counts)[:-1])):
            assignment.update({p: name for p in chunk})
    return pd.Series([assignment[g] for g in groups], index=df.index, name="split")


def patients_overlap(df: pd.DataFrame, group_col: str = "patient_id", split_col: str = "split") -> list[str]:
    """Patients found in more than one split (empty list = a clean grouped split)."""
    n = df.groupby(group_col)[split_col].nunique()
    return sorted(n[n > 1].index.astype(str))


def assign_folds(df: pd.DataFrame, labels: Sequence[str], k: int, group_column: str | None = "patient_id",
                 seed: int = 0) -> pd.Series:
    """Fold id (0..k-1) of each row, by patient: MultilabelStratifiedKFold on patient label maxima.

    ``group_column=None`` folds the rows themselves (a slice-level CV, as the ich report's; leaky).
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    if group_column is None:
        df = df.assign(_row=np.arange(len(df)))
        group_column = "_row"
    patients = df.groupby(group_column, sort=True)[list(labels)].max()
    if len(patients) < k:
        raise ValueError(f"cv.folds={k} needs at least {k} patients outside the test split; have {len(patients)}")
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    fold_of: dict[Any, int] = {}
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(patients)), patients.to_numpy())):
        for pid in patients.index[held]:
            fold_of[pid] = fold
    return df[group_column].map(fold_of).astype(int)
