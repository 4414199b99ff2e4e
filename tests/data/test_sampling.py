"""Class-balanced training rows: counts per label, normals, seeds and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medtasks.data.sampling import balance_rows, label_counts

LABELS = ["a", "b", "c"]


def _frame(seed: int = 0, n: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < [0.05, 0.2, 0.4]).astype(int)
    return pd.DataFrame(y, columns=LABELS).assign(row=np.arange(n))


def test_counts_hit_the_targets_and_rare_labels_keep_all() -> None:
    df = _frame()
    before = label_counts(df, LABELS)
    out, info = balance_rows(df, LABELS, per_class=150, normal=300, seed=1)
    after = label_counts(out, LABELS)
    assert after["a"] == before["a"] < 150                       # rare: every row, once
    assert after["b"] >= 150 and after["c"] >= 150               # at least the target (shared rows add some)
    assert after["b"] < before["b"] and after["c"] < before["c"]
    assert after["normal"] == 300
    assert info["before"] == before and info["after"] == after and info["rows_after"] == len(out)
    assert out.row.is_unique                                     # no duplicates without replace
    assert set(out.row) <= set(df.row)


def test_replace_oversamples_and_ratio_of_normals() -> None:
    df = _frame()
    out, info = balance_rows(df, LABELS, per_class=300, normal_ratio=0.5, replace=True, seed=0)
    after = info["after"]
    assert after["a"] >= 300 and not out.row.is_unique
    positives = info["rows_after"] - after["normal"]
    assert after["normal"] == round(0.5 * positives)


def test_seeded_and_no_op_without_targets() -> None:
    df = _frame()
    a, _ = balance_rows(df, LABELS, per_class=100, normal=100, seed=3)
    b, _ = balance_rows(df, LABELS, per_class=100, normal=100, seed=3)
    assert a.row.tolist() == b.row.tolist()
    same, info = balance_rows(df, LABELS, seed=0)
    assert sorted(same.row) == sorted(df.row) and info["after"] == info["before"]


def test_errors() -> None:
    df = _frame(n=50)
    with pytest.raises(ValueError, match="not both"):
        balance_rows(df, LABELS, normal=5, normal_ratio=1.0)
    with pytest.raises(ValueError, match="per_class"):
        balance_rows(df, LABELS, per_class=0)
