"""Segmentation summary: pooled vs per-image vs per-patient aggregates on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from medtasks.metrics.seg_summary import case_table, segmentation_summary


def _two_images():
    # Image A: truth 100 px, prediction 100 px, 50 shared -> Dice 0.5.
    ta = np.zeros((20, 20), bool)
    ta[0:10, 0:10] = True
    pa = np.zeros((20, 20), bool)
    pa[5:15, 0:10] = True
    # Image B: truth 4 px, prediction empty -> Dice 0.
    tb = np.zeros((20, 20), bool)
    tb[0:2, 0:2] = True
    pb = np.zeros((20, 20), bool)
    return [pa, pb], [ta, tb]


def test_pooled_and_per_image_dice_differ_as_by_hand() -> None:
    preds, trues = _two_images()
    s = segmentation_summary(case_table(preds, trues, ["p1", "p2"]), n_boot=50)
    assert s["pooled"]["dice"]["value"] == pytest.approx(2 * 50 / (100 + 104))     # 0.4902
    assert s["per_image"]["dice"]["value"] == pytest.approx((0.5 + 0.0) / 2)       # 0.25
    assert s["per_patient"]["dice"]["value"] == pytest.approx(0.25)                # one image per patient here
    assert s["pooled"]["sens"]["value"] == pytest.approx(50 / 104)
    assert s["pooled"]["spec"]["value"] == pytest.approx((800 - 154) / (800 - 104))
    assert s["pixel_confusion_matrix"] == [[646, 50], [54, 50]]
    assert s["hd95"]["n"] == 1                                                     # B has no prediction


def test_per_patient_pools_within_a_patient_and_empty_slices() -> None:
    preds, trues = _two_images()
    empty = np.zeros((20, 20), bool)
    noisy = empty.copy()
    noisy[10, 10] = True
    t = case_table([*preds, empty, noisy], [*trues, empty, empty], ["p1", "p1", "p2", "p2"])
    s = segmentation_summary(t, n_boot=50, min_area=1)
    # p1 pools A and B: 2*50/204; p2 has no truth lesion but one false pixel -> Dice 0.
    assert s["per_patient"]["dice"]["value"] == pytest.approx((100 / 204 + 0.0) / 2)
    assert s["per_image"]["dice"]["value"] == pytest.approx(0.25)                  # lesion slices only
    assert s["per_image_all"]["dice"]["value"] == pytest.approx((0.5 + 0 + 1 + 0) / 4)   # empty/empty = 1
    cm = s["seg_to_classification"]["confusion_matrix"]                             # truth lesion vs >= 1 px
    assert cm == [[1, 1], [1, 1]]
    assert (segmentation_summary(t, n_boot=10, min_area=2)["seg_to_classification"]["confusion_matrix"]
            == [[2, 0], [1, 1]])


def test_empty_table_raises() -> None:
    import pandas as pd

    with pytest.raises(ValueError, match="no cases"):
        segmentation_summary(pd.DataFrame())
