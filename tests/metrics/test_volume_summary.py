"""Per-volume lesion metrics and the ISBI composite on hand-made volumes: two true lesions, one missed,
one false positive (and a second, perfectly segmented volume for the correlation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medtasks.metrics.volume_summary import volume_row, volume_summary


def _case():
    t = np.zeros((20, 20, 10), bool)
    t[1:4, 1:4, 1:4] = True          # lesion A, 27 voxels: found
    t[10:12, 10:12, 5:7] = True      # lesion B, 8 voxels: missed
    p = np.zeros_like(t)
    p[1:4, 1:4, 1:4] = True          # A
    p[15:17, 2:4, 7:9] = True        # C, 8 voxels: a false positive
    return p, t


def test_two_lesions_one_missed_one_false_positive() -> None:
    p, t = _case()
    r = volume_row(p, t, "s1", spacing=(1.0, 1.0, 2.0))
    assert (r["n_true_lesions"], r["n_pred_lesions"], r["n_detected"], r["n_false_pos"]) == (2, 2, 1, 1)
    assert r["ltpr"] == 0.5 and r["lfpr"] == 0.5 and r["lesion_precision"] == 0.5 and r["lesion_f1"] == 0.5
    assert r["dice"] == pytest.approx(2 * 27 / (35 + 35)) and r["ppv"] == pytest.approx(27 / 35)
    assert r["true_volume"] == 35 * 2.0 and r["pred_volume"] == 35 * 2.0


def test_summary_and_isbi_by_hand() -> None:
    p, t = _case()
    t2 = np.zeros((20, 20, 10), bool)
    t2[5:7, 5:7, 5:7] = True
    rows = pd.DataFrame([volume_row(p, t, "s1"), volume_row(t2, t2, "s2")])
    s = volume_summary(rows, n_boot=50)
    dice = (54 / 70 + 1.0) / 2
    ppv = (27 / 35 + 1.0) / 2
    lfpr, ltpr = (0.5 + 0.0) / 2, (0.5 + 1.0) / 2
    corr = 1.0                                          # volumes (35, 8) predicted as (35, 8)
    assert s["per_volume"]["dice"]["value"] == pytest.approx(dice)
    assert s["isbi"]["value"] == pytest.approx(dice / 8 + ppv / 8 + (1 - lfpr) / 4 + ltpr / 4 + corr / 4)
    assert s["pooled"]["dice"]["value"] == pytest.approx(2 * 35 / (43 + 43))  # tp 27+8, fp 8, fn 8
    lp = s["lesions_pooled"]
    assert (lp["ltpr"], lp["precision"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert s["headline"]["lesion_f1"]["value"] == pytest.approx((0.5 + 1.0) / 2)


def test_both_matching_rules_summarised_by_hand() -> None:
    from medtasks.metrics.lesion_rules import rule_columns, rules_summary
    from medtasks.metrics.lesions import match_lesions

    p, t = _case()                                   # A exact, B missed, C false: the rules agree here
    t2 = np.zeros((20, 20, 10), bool)
    t2[5:7, 5:7, 5:7] = True
    p2 = np.zeros_like(t2)
    p2[5, 5, 5] = True                               # a speck inside: overlap detects it, IoU 1/8 does not
    rows = []
    for group, (pi, ti) in (("s1", (p, t)), ("s2", (p2, t2))):
        row = volume_row(pi, ti, group)
        row.update(rule_columns(match_lesions(pi, ti), "iou"))
        rows.append(row)
    table = pd.DataFrame(rows)
    assert table[["iou_n_detected", "iou_n_false_pos", "iou_ltpr", "iou_lfpr", "iou_lesion_f1"]].values.tolist() == [
        [1, 1, 0.5, 0.5, 0.5], [0, 1, 0.0, 1.0, 0.0]]
    s = rules_summary(table, iou_threshold=0.5, n_boot=50)
    assert s["iou_threshold"] == 0.5 and set(s) == {"iou_threshold", "overlap", "iou"}
    ov, iou = s["overlap"], s["iou"]
    assert ov["per_volume"]["lesion_f1"]["value"] == pytest.approx((0.5 + 1.0) / 2)
    assert iou["per_volume"]["lesion_f1"]["value"] == pytest.approx((0.5 + 0.0) / 2)
    assert iou["per_volume"]["lfpr"]["value"] == pytest.approx((0.5 + 1.0) / 2)
    assert (ov["pooled"]["n_detected"], ov["pooled"]["n_false_pos"], ov["pooled"]["f1"]) == (2, 1, pytest.approx(2 / 3))
    assert (iou["pooled"]["n_detected"], iou["pooled"]["n_false_pos"], iou["pooled"]["f1"]) == (
        1, 2, pytest.approx(1 / 3))
    vs = volume_summary(table, n_boot=50)          # the overlap rule is the one volume_summary reports
    assert ov["per_volume"]["lesion_f1"] == vs["per_volume"]["lesion_f1"]
    assert ov["pooled"]["f1"] == vs["lesions_pooled"]["f1"]


def test_volume_row_surface_distances_by_hand() -> None:
    """Two parallel 4x4 plates 3 voxels apart along z (spacing 2 mm): ASSD = 6 mm; NSD at 7 mm = 1, at 5 mm = 0."""
    from medtasks.metrics.volume_summary import volume_row as row_of

    a = np.zeros((8, 8, 10), bool)
    b = np.zeros_like(a)
    a[2:6, 2:6, 2], b[2:6, 2:6, 5] = True, True
    r = row_of(b, a, "s", spacing=(1.0, 1.0, 2.0), nsd_tolerance=7.0)
    assert r["assd"] == pytest.approx(6.0) and r["hd95"] == pytest.approx(6.0) and r["nsd"] == pytest.approx(1.0)
    assert row_of(b, a, "s", spacing=(1.0, 1.0, 2.0), nsd_tolerance=5.0)["nsd"] == pytest.approx(0.0)
    empty = row_of(np.zeros_like(a), a, "s", spacing=(1.0, 1.0, 2.0), nsd_tolerance=2.0)
    assert np.isnan(empty["assd"]) and empty["nsd"] == 0.0            # a missed lesion scores 0, not NaN
    assert np.isnan(row_of(b, a, "s")["nsd"])                          # no tolerance asked: not computed
