"""Fold assignment: patient-disjoint, label-stratified; the sequence head on series of any length."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medtasks.data.splits import assign_folds
from medtasks.models.sequence import SeriesRefiner
from medtasks.tasks.ich_classify.sequence import refine, series_groups

LABELS = ["epidural", "subdural", "any"]


def _slices(n_patients: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        pat = (rng.random(2) < [0.1, 0.35]).astype(int)
        for s in range(int(rng.integers(4, 12))):
            lab = pat * (rng.random(2) < 0.6)
            rows.append({"patient_id": f"P{p:03d}", "epidural": lab[0], "subdural": lab[1], "any": int(lab.max())})
    return pd.DataFrame(rows)


def test_folds_are_patient_disjoint_and_label_stratified() -> None:
    df = _slices()
    folds = assign_folds(df, LABELS, 5, seed=0)
    assert sorted(folds.unique()) == [0, 1, 2, 3, 4]
    assert df.assign(f=folds).groupby("patient_id").f.nunique().max() == 1
    patients = df.assign(f=folds).groupby("patient_id").agg({**{lab: "max" for lab in LABELS}, "f": "first"})
    overall = patients[LABELS].mean()
    for _, g in patients.groupby("f"):
        assert len(g) == pytest.approx(len(patients) / 5, abs=2)
        # iterative stratification: each fold's share of positive patients is close to the whole's
        assert np.all(np.abs(g[LABELS].mean() - overall) < 0.05)
    assert (assign_folds(df, LABELS, 5, seed=0) == folds).all()
    with pytest.raises(ValueError, match="patients"):
        assign_folds(df.head(3), LABELS, 5)


def test_sequence_head_handles_series_of_different_lengths() -> None:
    torch.manual_seed(0)
    head = SeriesRefiner(n_labels=3, kind="gru", hidden=4)
    torch.nn.init.normal_(head.correction.weight)  # not the identity any more
    for kind in ("gru", "conv"):
        h = head if kind == "gru" else SeriesRefiner(n_labels=3, kind="conv", hidden=4, kernel=3)
        for length in (1, 2, 7):
            assert h(torch.randn(1, 3, length)).shape == (length, 3)
    df = pd.DataFrame({"series_instance_uid": ["b", "a", "b", "a", "a", "b", "b"],
                       "Z": [3.0, 1.0, 1.0, 0.0, 2.0, 2.0, 0.0]})
    logits = np.random.default_rng(1).normal(size=(7, 3))
    out = refine(head.eval(), df, logits)
    for g in series_groups(df):  # each series alone, in z order, gives the same rows back
        with torch.no_grad():
            alone = head(torch.as_tensor(logits[g].T[None], dtype=torch.float32)).numpy()
        np.testing.assert_allclose(out[g], alone, rtol=1e-5, atol=1e-6)
    assert [list(df.Z.iloc[g]) for g in series_groups(df)] == [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]]
