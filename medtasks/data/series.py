"""Slice position within a series (the source report's ``z_normalized``)."""

from __future__ import annotations

import pandas as pd


def add_z_normalized(df: pd.DataFrame, series_col: str = "series_instance_uid", z_col: str = "Z",
                     out_col: str = "z_normalized") -> pd.DataFrame:
    """Sort by (series, z) and add ``(z - min) / (max - min)`` per series, in [0, 1].

    A one-slice series (or all slices at one z) gets 0.5: its position is unknown, and 0.5 maps
    to the centre (0) of the model's [-1, 1] input.
    """
    out = df.sort_values([series_col, z_col], kind="stable").reset_index(drop=True)
    g = out.groupby(series_col)[z_col]
    lo, hi = g.transform("min"), g.transform("max")
    span = hi - lo
    out[out_col] = ((out[z_col] - lo) / span.where(span > 0)).fillna(0.5).astype(float)
    return out


def neighbour_paths(df: pd.DataFrame, context: int, series_col: str = "series_instance_uid", z_col: str = "Z",
                    path_col: str = "path") -> list[list[str]]:
    """For each row (in ``df``'s order) the paths of slices ``i - context .. i + context`` of its series.

    Slices are ordered by ``z_col`` within the series; at the series edges the edge slice repeats
    (a series of one slice gives ``[p] * (2 * context + 1)``), so every row gets the same number
    of channels. Rows keep their own order: the result lines up with ``df``.

    Example:
        >>> d = pd.DataFrame({"series_instance_uid": ["s"] * 3, "Z": [2.0, 0.0, 1.0], "path": ["c", "a", "b"]})
        >>> neighbour_paths(d, 1)
        [['b', 'c', 'c'], ['a', 'a', 'b'], ['a', 'b', 'c']]
    """
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    out: list[list[str]] = [[] for _ in range(len(df))]
    positions = {label: i for i, label in enumerate(df.index)}
    for _, g in df.groupby(series_col, sort=False):
        g = g.sort_values(z_col, kind="stable")
        paths = g[path_col].astype(str).tolist()
        n = len(paths)
        for k, label in enumerate(g.index):
            out[positions[label]] = [paths[min(max(k + d, 0), n - 1)] for d in range(-context, context + 1)]
    return out
