"""Segmentation metrics: hand-computed values on tiny arrays, conventions, aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from medtasks.metrics.bootstrap import bootstrap_ci
from medtasks.metrics.lesions import isbi_score, lesion_detection, lesion_volume, volume_correlation
from medtasks.metrics.segmentation import (
    case_metric_fn,
    confusion_counts,
    hd95,
    overlap_metrics,
    per_class_dice,
    pixel_confusion_matrix,
    pooled_and_per_case,
    pooled_metric_fn,
    seg_to_classification,
)


def _squares() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4 squares in a 10x10 image overlapping in a 2x2 block."""
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[1:5, 1:5] = True
    b[3:7, 3:7] = True
    return a, b


def test_overlapping_squares_by_hand() -> None:
    a, b = _squares()
    assert confusion_counts(a, b) == {"tp": 4, "fp": 12, "fn": 12, "tn": 72}
    m = overlap_metrics(a, b)
    assert m["dice"] == pytest.approx(2 * 4 / (16 + 16))
    assert m["iou"] == pytest.approx(4 / 28)
    assert m["sens"] == pytest.approx(4 / 16)
    assert m["ppv"] == pytest.approx(4 / 16)
    assert m["spec"] == pytest.approx(72 / 84)
    # 0/1 ints are accepted like bools.
    assert overlap_metrics(a.astype(np.uint8), b.astype(int)) == m


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(4, 4\)"):
        overlap_metrics(np.zeros((3, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="binary"):
        confusion_counts(np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="number of cases"):
        pooled_and_per_case([np.zeros(3)], [np.zeros(3), np.zeros(3)])


def test_empty_case_conventions() -> None:
    z = np.zeros((5, 5), bool)
    one = z.copy()
    one[2, 2] = True
    both = overlap_metrics(z, z)
    assert both["dice"] == both["iou"] == both["sens"] == both["ppv"] == 1.0
    assert both["spec"] == 1.0
    excl = overlap_metrics(z, z, empty_value=None)
    assert math.isnan(excl["dice"]) and math.isnan(excl["iou"])
    # Truth empty, prediction not: a false alarm scores 0.
    fa = overlap_metrics(one, z)
    assert fa["dice"] == fa["iou"] == fa["ppv"] == 0.0 and math.isnan(fa["sens"])
    # Prediction empty, truth not: a miss scores 0.
    miss = overlap_metrics(z, one)
    assert miss["dice"] == miss["sens"] == 0.0 and math.isnan(miss["ppv"])


def test_pooled_per_case_per_group_differ() -> None:
    """One large, easy lesion and four small missed ones: pooled looks good, per-case does not."""
    trues, preds = [], []
    big = np.zeros((20, 20), bool)
    big[:10, :10] = True  # 100 px, predicted perfectly
    trues.append(big)
    preds.append(big.copy())
    for k in range(4):
        t = np.zeros((20, 20), bool)
        t[k : k + 2, 0:2] = True  # 4 px, missed
        trues.append(t)
        preds.append(np.zeros((20, 20), bool))
    groups = ["p1", "p2", "p2", "p3", "p3"]
    r = pooled_and_per_case(preds, trues, groups=groups)
    assert r["pooled"]["dice"] == pytest.approx(200 / 216)  # tp=100, fn=16
    assert r["pooled"]["tp"] == 100 and r["pooled"]["fn"] == 16
    assert r["per_case"]["dice"]["mean"] == pytest.approx(0.2)
    assert r["per_case"]["dice"]["median"] == 0.0
    assert r["per_case"]["dice"]["std"] == pytest.approx(np.std([1, 0, 0, 0, 0], ddof=1))
    assert r["per_case"]["dice"]["n"] == 5
    assert r["per_group"]["dice"]["mean"] == pytest.approx(1 / 3)
    assert r["n_groups"] == 3 and r["n_cases"] == 5
    tab = r["table"]
    for col in ("group", "dice", "iou", "sens", "spec", "ppv", "n_true", "n_pred"):
        assert col in tab.columns
    assert tab.index.name == "case"
    assert tab["n_true"].tolist() == [100, 4, 4, 4, 4]
    assert tab["n_pred"].tolist() == [100, 0, 0, 0, 0]
    # A stacked (N, H, W) array gives the same result; no groups -> no per_group.
    r2 = pooled_and_per_case(np.stack(preds), np.stack(trues))
    assert r2["pooled"]["dice"] == r["pooled"]["dice"] and r2["per_group"] is None


def test_per_case_excludes_empty_when_asked() -> None:
    t = np.zeros((2, 4, 4), bool)
    t[0, :2, :2] = True
    p = t.copy()
    p[0, 0, 0] = False  # dice 6/7 on case 0; case 1 empty in both
    r = pooled_and_per_case(p, t, empty_value=None, with_hd95=True)
    assert r["per_case"]["dice"] == pytest.approx(
        {"mean": 6 / 7, "median": 6 / 7, "std": float("nan"), "n": 1}, nan_ok=True
    )
    assert r["per_case"]["hd95"]["n"] == 1  # HD95 only where both have foreground
    assert pooled_and_per_case(p, t)["per_case"]["dice"]["mean"] == pytest.approx((6 / 7 + 1) / 2)


def test_hd95_parallel_lines_and_spacing() -> None:
    a = np.zeros((12, 10), bool)
    b = np.zeros((12, 10), bool)
    a[2, :] = True
    b[5, :] = True  # every point is exactly 3 px from the other line
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, b, spacing=(2.0, 1.0)) == pytest.approx(6.0)  # along the shift: scales
    assert hd95(a, b, spacing=(1.0, 0.5)) == pytest.approx(3.0)  # across it: no change
    assert hd95(a, b, spacing=2.0) == pytest.approx(6.0)
    # 3-D: two planes 4 voxels apart, 5 mm slices along the shift axis.
    va = np.zeros((10, 6, 6), bool)
    vb = np.zeros((10, 6, 6), bool)
    va[1] = True
    vb[5] = True
    assert hd95(va, vb, spacing=(5.0, 0.5, 0.5)) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, b, spacing=(1.0, 1.0, 1.0))


def test_hd95_shifted_square_max_and_empty() -> None:
    a = np.zeros((16, 16), bool)
    b = np.zeros((16, 16), bool)
    a[3:9, 3:9] = True
    b[3:9, 6:12] = True
    assert hd95(a, b, percentile=100) == pytest.approx(3.0)  # Hausdorff = shift
    assert 0.0 < hd95(a, b) <= 3.0
    assert hd95(a, a) == 0.0
    assert math.isnan(hd95(a, np.zeros_like(a))) and math.isnan(hd95(np.zeros_like(a), a))


def test_lesion_detection_connectivity_3d() -> None:
    t = np.zeros((6, 8, 8), bool)
    t[1, 1, 1] = t[1, 2, 2] = True  # share only an edge: 1 lesion at 18-conn, 2 at 6-conn
    t[4, 6, 6] = True  # a second, isolated true lesion (missed)
    p = np.zeros_like(t)
    p[1, 1, 1] = True  # hits the edge pair
    p[4, 1, 6] = True  # false positive
    p[1, 6, 1] = True  # false positive
    r18 = lesion_detection(p, t)  # default connectivity=2 -> 18-connected (ISBI)
    assert (r18["n_true_lesions"], r18["n_pred_lesions"]) == (2, 3)
    assert (r18["n_detected"], r18["n_false_pos"]) == (1, 2)
    assert r18["ltpr"] == pytest.approx(1 / 2)
    assert r18["lfpr"] == pytest.approx(2 / 3)
    assert r18["precision"] == pytest.approx(1 / 3)
    assert r18["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # 0.4
    r6 = lesion_detection(p, t, connectivity=1)
    assert r6["n_true_lesions"] == 3 and r6["ltpr"] == pytest.approx(1 / 3)
    # Corner-only contact: one lesion at 26-conn, two at 18-conn.
    c = np.zeros((3, 3, 3), bool)
    c[0, 0, 0] = c[1, 1, 1] = True
    assert lesion_detection(c, c, connectivity=3)["n_true_lesions"] == 1
    assert lesion_detection(c, c, connectivity=2)["n_true_lesions"] == 2
    with pytest.raises(ValueError, match="connectivity"):
        lesion_detection(c, c, connectivity=4)


def test_lesion_detection_min_size_merge_and_empty() -> None:
    t = np.zeros((10, 10), bool)
    t[0:2, 0:2] = True  # 4 px
    t[0:2, 4:6] = True  # 4 px
    t[8, 8] = True  # 1 px speck
    p = np.zeros_like(t)
    p[0:2, 0:6] = True  # one predicted lesion covering both true lesions
    p[5, 0] = True  # 1 px false positive
    r = lesion_detection(p, t)
    assert (r["n_true_lesions"], r["n_pred_lesions"], r["n_detected"]) == (3, 2, 2)
    assert r["ltpr"] == pytest.approx(2 / 3) and r["lfpr"] == pytest.approx(1 / 2)
    r2 = lesion_detection(p, t, min_size=2)  # specks dropped from both masks
    assert (r2["n_true_lesions"], r2["n_pred_lesions"]) == (2, 1)
    assert r2["ltpr"] == r2["precision"] == r2["f1"] == 1.0 and r2["lfpr"] == 0.0
    # 2-D diagonal neighbours: 8-connected by default, 4-connected with connectivity=1.
    d = np.eye(3, dtype=bool)
    assert lesion_detection(d, d)["n_true_lesions"] == 1
    assert lesion_detection(d, d, connectivity=1)["n_true_lesions"] == 3
    z = np.zeros_like(t)
    e = lesion_detection(z, z)
    assert e["n_true_lesions"] == 0 and math.isnan(e["ltpr"]) and math.isnan(e["f1"])
    m = lesion_detection(z, t)
    assert m["ltpr"] == 0.0 and m["f1"] == 0.0 and math.isnan(m["lfpr"])


def test_isbi_score_by_hand() -> None:
    s = isbi_score(dice=0.6, ppv=0.7, lfpr=0.3, ltpr=0.5, corr=0.8)
    assert s == pytest.approx(0.6 / 8 + 0.7 / 8 + 0.7 / 4 + 0.5 / 4 + 0.8 / 4)  # 0.6625
    assert isbi_score(1.0, 1.0, 0.0, 1.0, 1.0) == pytest.approx(1.0)


def test_volumes_and_correlation() -> None:
    m = np.zeros((4, 4, 4), bool)
    m[:2, :2, :3] = True  # 12 voxels
    assert lesion_volume(m) == 12.0
    assert lesion_volume(m, spacing=(0.5, 0.5, 5.0)) == pytest.approx(12 * 1.25)
    assert lesion_volume(m, spacing=2.0) == pytest.approx(96.0)
    with pytest.raises(ValueError, match="spacing"):
        lesion_volume(m, spacing=(1.0, 1.0))
    x = np.array([1.0, 4.0, 2.5, 9.0, 3.0])
    y = np.array([1.5, 3.0, 3.5, 8.0, 2.0])
    assert volume_correlation(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert math.isnan(volume_correlation([1.0], [2.0]))
    assert math.isnan(volume_correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_pixel_confusion_matrix_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    preds = [rng.random((6, 7)) < 0.4 for _ in range(3)]
    trues = [rng.random((6, 7)) < 0.3 for _ in range(3)]
    cm = pixel_confusion_matrix(preds, trues)
    ref = confusion_matrix(
        np.concatenate([t.ravel() for t in trues]), np.concatenate([p.ravel() for p in preds]),
        labels=[False, True],
    )
    np.testing.assert_array_equal(cm, ref)


def test_seg_to_classification_threshold() -> None:
    masks = np.zeros((4, 5, 5), bool)
    masks[1].flat[:3] = True
    masks[2].flat[:4] = True
    masks[3].flat[:10] = True
    assert seg_to_classification(masks, min_area=4).tolist() == [False, False, True, True]
    assert seg_to_classification(list(masks), min_area=1).tolist() == [False, True, True, True]
    with pytest.raises(ValueError, match="min_area"):
        seg_to_classification(masks, min_area=0)


def test_per_class_dice_label_maps() -> None:
    t = np.zeros((2, 4, 4), dtype=np.uint8)
    p = np.zeros_like(t)
    t[0, :2, :2] = 1  # myocardium, 4 vox
    p[0, :2, :1] = 1  # 2 vox, all correct
    t[1, 0, 0] = 2  # valve in truth only
    d = per_class_dice(p, t, classes=[1, 2, 3])
    assert d[1] == pytest.approx(2 * 2 / (2 + 4))
    assert d[2] == 0.0
    assert d[3] == 1.0  # calcium absent in both: empty convention
    assert math.isnan(per_class_dice(p, t, classes=[3], empty_value=None)[3])
    with pytest.raises(ValueError, match="shape mismatch"):
        per_class_dice(p, t[0], classes=[1])


def test_bootstrap_helpers_resample_by_patient() -> None:
    rng = np.random.default_rng(1)
    trues, preds, groups = [], [], []
    for pid in range(6):
        for _ in range(3):
            t = rng.random((8, 8)) < 0.3
            p = t ^ (rng.random((8, 8)) < 0.1 * (pid + 1))
            trues.append(t)
            preds.append(p)
            groups.append(f"pt{pid}")
    r = pooled_and_per_case(preds, trues, groups=groups)
    tab = r["table"]
    g = tab["group"].to_numpy()
    ci = bootstrap_ci(case_metric_fn(tab, "dice"), g, n_boot=200, seed=0)
    assert ci["value"] == pytest.approx(r["per_case"]["dice"]["mean"])
    assert ci["n_groups"] == 6 and ci["ci_low"] <= ci["value"] <= ci["ci_high"]
    ci_p = bootstrap_ci(pooled_metric_fn(tab, "dice"), g, n_boot=200, seed=0)
    assert ci_p["value"] == pytest.approx(r["pooled"]["dice"])
    assert ci_p["ci_low"] < ci_p["ci_high"]
    with pytest.raises(KeyError, match="available"):
        case_metric_fn(tab, "nope")
