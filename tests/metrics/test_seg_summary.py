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


def test_surface_columns_and_summaries_by_hand() -> None:
    """ASSD over cases with both masks, NSD over truth-lesion cases (a miss = 0), per-case values by hand."""
    import math

    t = np.zeros((10, 10), bool)
    t[2:6, 2:6] = True                       # 4x4 square: 12 edge px
    ring = np.zeros((10, 10), bool)
    ring[1:7, 1:7] = True                    # 6x6 around it: 16 edge px 1 away, 4 corners sqrt(2)
    z = np.zeros((10, 10), bool)
    preds, trues = [ring, z, ring, z], [t, t, z, z]   # hit, miss, false alarm, both empty
    table = case_table(preds, trues, ["p1", "p2", "p2", "p3"], with_surface=True, nsd_tolerance=1.0)
    expect_assd = (16 + 4 * math.sqrt(2) + 12) / 32
    assert table["assd"].iloc[0] == pytest.approx(expect_assd) and table["assd"].iloc[1:].isna().all()
    assert table["nsd"].iloc[:3].tolist() == pytest.approx([28 / 32, 0.0, 0.0]) and math.isnan(table["nsd"].iloc[3])
    s = segmentation_summary(table, n_boot=20)
    assert s["assd"]["n"] == 1 and s["assd"]["mean"]["value"] == pytest.approx(expect_assd)
    assert s["nsd"]["n"] == 2 and s["nsd"]["mean"]["value"] == pytest.approx(28 / 64)   # the false alarm is not in
    assert s["nsd"]["median"] == pytest.approx(28 / 64)
    assert s["hd95"]["n"] == 1
    # 1 mm rows, 2 mm columns: the same per-case functions with the spacing.
    mm = case_table(preds[:1], trues[:1], ["p1"], spacing=(1.0, 2.0), with_surface=True, nsd_tolerance=2.0)
    assert mm["nsd"].iloc[0] == pytest.approx(28 / 32) and mm["hd95"].iloc[0] == pytest.approx(math.sqrt(5))  # corners


def test_surface_columns_only_when_asked() -> None:
    preds, trues = _two_images()
    table = case_table(preds, trues, ["p1", "p2"])
    assert "assd" not in table.columns and "nsd" not in table.columns
    s = segmentation_summary(table, n_boot=10)
    assert "assd" not in s and "nsd" not in s
    no_tol = case_table(preds, trues, ["p1", "p2"], with_surface=True)     # NSD needs a tolerance
    assert no_tol["nsd"].isna().all() and segmentation_summary(no_tol, n_boot=10)["nsd"] == {"n": 0}
