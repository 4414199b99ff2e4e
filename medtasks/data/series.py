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
