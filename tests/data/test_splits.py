from __future__ import annotations

import numpy as np
import pandas as pd

from medtasks.data.series import add_z_normalized
from medtasks.data.splits import assign_folds, assign_splits, patients_overlap


def _frame(n_patients=30, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        pos = int(p % 3 == 0)
        for s in range(rng.integers(5, 12)):
            rows.append({"patient_id": f"P{p:03d}", "any": pos * int(s % 2 == 0)})
    return pd.DataFrame(rows)


def test_patient_grouped_split_has_no_overlap_and_all_splits():
    df = _frame()
    df["split"] = assign_splits(df, "patient_id", (0.7, 0.15, 0.15), seed=3, stratify="any")
    assert patients_overlap(df) == []
    per_patient = df.groupby("patient_id").split.first().value_counts()
    assert per_patient["train"] == 21 and per_patient["val"] + per_patient["test"] == 9
    # stratified: positive patients land in every split
    pos = df[df["any"] == 1].groupby("split").patient_id.nunique()
    assert set(pos.index) == {"train", "val", "test"}


def test_split_is_seeded():
    df = _frame()
    a = assign_splits(df, seed=1)
    assert (a == assign_splits(df, seed=1)).all()
    assert not (a == assign_splits(df, seed=2)).all()


def test_slice_level_split_leaks():
    df = _frame()
    df["split"] = assign_splits(df, level="slice", seed=0)
    assert len(patients_overlap(df)) > 0


def test_z_normalized_per_series():
    df = pd.DataFrame({"series_instance_uid": ["a", "a", "a", "b", "c", "c"],
                       "Z": [10.0, -5.0, 2.5, 7.0, 3.0, 3.0]})
    out = add_z_normalized(df)
    a = out[out.series_instance_uid == "a"]
    assert a.Z.tolist() == [-5.0, 2.5, 10.0]
    assert np.allclose(a.z_normalized, [0.0, 0.5, 1.0])
    assert out[out.series_instance_uid == "b"].z_normalized.item() == 0.5   # one slice: centre
    assert np.allclose(out[out.series_instance_uid == "c"].z_normalized, 0.5)


def test_folds_by_patient_or_by_row():
    """Patient folds keep a patient whole; ``group_column=None`` (the ich report's slice-level CV) folds rows."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"patient_id": np.repeat([f"p{i}" for i in range(20)], 5),
                       "a": rng.integers(0, 2, 100), "b": rng.integers(0, 2, 100)})
    by_patient = assign_folds(df, ["a", "b"], 5, "patient_id", seed=1)
    assert df.assign(f=by_patient).groupby("patient_id").f.nunique().max() == 1
    by_row = assign_folds(df, ["a", "b"], 5, None, seed=1)
    assert sorted(by_row.unique()) == [0, 1, 2, 3, 4] and by_row.value_counts().tolist() == [20] * 5
    assert df.assign(f=by_row).groupby("patient_id").f.nunique().max() > 1      # patients split across folds
    assert (by_row.index == df.index).all()
