"""ms_segment's slice-level split (the report's protocol): seeded per slice, scans shared, others blanked."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtasks.tasks.ms_segment.slice_split import blank_other_slices, slice_split_of, split_slices


def test_each_slice_gets_a_seeded_split_independent_of_the_others() -> None:
    frame = pd.DataFrame({"subject_id": ["a"] * 400 + ["b"] * 400, "timepoint": "1",
                          "slice_index": list(range(400)) * 2})
    out = split_slices(frame, seed=3, fractions=(0.8, 0.2, 0.0))
    share = out.split.value_counts(normalize=True)
    assert set(out.split) == {"train", "val"} and abs(share["val"] - 0.2) < 0.05
    assert set(out[out.subject_id == "a"].split) == {"train", "val"}          # one scan in both splits
    again = split_slices(frame.iloc[::3], seed=3, fractions=(0.8, 0.2, 0.0))  # a subset: the same draws
    assert (again.split == out.iloc[::3].split).all()
    assert (split_slices(frame, seed=4, fractions=(0.8, 0.2, 0.0)).split != out.split).any()
    assert slice_split_of("a", "1", 0, 3, (0.0, 0.0, 1.0)) == "test"


def test_blank_other_slices_keeps_only_the_scored_slices() -> None:
    pred = np.ones((2, 2, 5), bool)
    true = np.zeros((2, 2, 5), bool)
    true[:, :, 1] = True
    p, t = blank_other_slices(pred, true, [1, 3])
    assert p[:, :, [1, 3]].all() and not p[:, :, [0, 2, 4]].any()
    assert t.sum() == 4 and pred.all()                                        # inputs untouched
