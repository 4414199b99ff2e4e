"""Class-balanced training sets for multi-label slice classification (the source report's §3).

The report built its training set by drawing each haemorrhage subtype to about the same count
and capping the normal slices (its 9,293- and 16,293-slice variants). :func:`balance_rows` does
that on the training split only, with a fixed seed, and returns what it did so the run records it.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"a": [1, 1, 1, 0, 0, 0, 0, 0], "b": [0, 0, 1, 1, 0, 0, 0, 0]})
    >>> out, info = balance_rows(df, ["a", "b"], per_class=2, normal=1, seed=0)
    >>> info["after"], len(out)
    ({'a': 2, 'b': 2, 'normal': 1}, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["balance_rows", "label_counts"]


def label_counts(df: pd.DataFrame, labels: Sequence[str]) -> dict[str, int]:
    """Positives per label and the number of normal rows (every label 0)."""
    y = df[list(labels)].to_numpy() > 0
    out = {lab: int(y[:, j].sum()) for j, lab in enumerate(labels)}
    out["normal"] = int((~y.any(axis=1)).sum())
    return out


def balance_rows(df: pd.DataFrame, labels: Sequence[str], per_class: int | None = None, normal: int | None = None,
                 normal_ratio: float | None = None, replace: bool = False,
                 seed: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Draw about ``per_class`` positive rows of each label and ``normal`` all-negative rows.

    Labels are visited rarest first; rows already drawn for an earlier label count towards the
    later labels they are positive for (a slice with two subtypes serves both), so the rarest
    labels keep all their rows and common labels are subsampled to the target.

    Args:
        df: Training rows with 0/1 columns ``labels``.
        labels: Labels to balance (for ICH the five subtypes; ``any`` follows from them).
        per_class: Target positives per label; ``None`` keeps every positive row.
        normal: Normal rows kept (all labels 0); ``None`` with ``normal_ratio`` None keeps all.
        normal_ratio: Alternatively, normals = ratio x the number of positive rows drawn.
        replace: Top up labels with fewer than ``per_class`` positives by drawing their rows again
            (oversampling); otherwise such a label keeps all its rows once.
        seed: Seed of the draw.

    Returns:
        ``(rows, info)``: the drawn rows (shuffled, duplicates possible only with ``replace``) and
        ``{"before": counts, "after": counts, "per_class": ..., "normal": ..., ...}``.
    """
    if per_class is not None and per_class < 1:
        raise ValueError(f"sampling.per_class must be >= 1, got {per_class}")
    if normal is not None and normal < 0:
        raise ValueError(f"sampling.normal must be >= 0, got {normal}")
    if normal is not None and normal_ratio is not None:
        raise ValueError("give sampling.normal or sampling.normal_ratio, not both")
    if normal_ratio is not None and normal_ratio < 0:
        raise ValueError(f"sampling.normal_ratio must be >= 0, got {normal_ratio}")
    rng = np.random.default_rng(seed)
    y = df[list(labels)].to_numpy() > 0
    chosen: list[int] = []
    have = np.zeros(len(labels), dtype=np.int64)  # positives of each label among the chosen rows
    taken = np.zeros(len(df), dtype=bool)
    for j in np.argsort(y.sum(axis=0), kind="stable"):
        pos = np.flatnonzero(y[:, j])
        if per_class is None:
            new = pos[~taken[pos]]
        else:
            need = per_class - int(have[j])
            if need <= 0:
                continue
            free = pos[~taken[pos]]
            new = rng.choice(free, size=min(need, len(free)), replace=False) if len(free) else free
            if replace and len(new) < need and len(pos):
                new = np.concatenate([new, rng.choice(pos, size=need - len(new), replace=True)])
        taken[new] = True
        chosen.extend(int(i) for i in new)
        have += y[new].sum(axis=0)
    normals = np.flatnonzero(~y.any(axis=1))
    n_pos = len(chosen)
    keep = len(normals) if normal is None and normal_ratio is None else (
        normal if normal is not None else int(round(normal_ratio * n_pos)))
    picked_normals = rng.choice(normals, size=min(keep, len(normals)), replace=False) if len(normals) else normals
    idx = np.array(chosen + [int(i) for i in picked_normals], dtype=np.int64)
    idx = idx[rng.permutation(len(idx))]
    out = df.iloc[idx].reset_index(drop=True)
    info = {"before": label_counts(df, labels), "after": label_counts(out, labels), "per_class": per_class,
            "normal": normal, "normal_ratio": normal_ratio, "replace": bool(replace), "seed": int(seed),
            "rows_before": int(len(df)), "rows_after": int(len(out))}
    return out, info
