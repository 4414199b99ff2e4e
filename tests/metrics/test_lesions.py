"""Lesion matching under the ISBI any-overlap rule and the MS report's IoU > 0.5 rule, on hand-made volumes where
the two disagree (a speck inside a lesion, a split lesion, a blob over two lesions), checked against hand counts and
against a brute-force IoU over every component pair; the per-lesion table's volumes, centroids and statuses."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label

from medtasks.metrics.lesion_table import LESION_COLUMNS, lesion_table
from medtasks.metrics.lesions import lesion_detection, match_lesions, pooled_lesion_scores


def _case() -> tuple[np.ndarray, np.ndarray]:
    t = np.zeros((20, 20, 10), bool)
    p = np.zeros_like(t)
    t[1:4, 1:4, 1:4] = True                         # A, 27 voxels; predicted: one voxel inside (IoU 1/27)
    p[2, 2, 2] = True
    t[10:12, 10:14, 5] = True                       # B, 8 voxels; predicted as two 2-voxel pieces (IoU 2/8 each)
    p[10:12, 10, 5] = p[10:12, 13, 5] = True
    t[15:17, 2:4, 7:9] = True                       # C, 8 voxels; predicted exactly (IoU 1)
    p[15:17, 2:4, 7:9] = True
    t[5:7, 15:17, 1:3] = True                       # D, 8 voxels; predicted with one voxel more (IoU 8/9)
    p[5:7, 15:17, 1:3] = True
    p[7, 15, 1] = True
    p[18, 18, 9] = True                             # E: a false positive for both rules
    t[0, 18, 8] = True                              # F: missed by both rules
    return p, t


def test_rules_disagree_by_hand() -> None:
    p, t = _case()
    ov = lesion_detection(p, t, rule="overlap")
    iou = lesion_detection(p, t, rule="iou")
    assert (ov["n_true_lesions"], ov["n_pred_lesions"]) == (iou["n_true_lesions"], iou["n_pred_lesions"]) == (5, 6)
    # overlap: A, B, C, D detected; only E touches nothing
    assert (ov["n_detected"], ov["n_false_pos"]) == (4, 1)
    assert ov["ltpr"] == 0.8 and ov["lfpr"] == pytest.approx(1 / 6) and ov["f1"] == pytest.approx(40 / 49)
    # IoU > 0.5: only C and D; the speck in A, both halves of B and E are false positives
    assert (iou["n_detected"], iou["n_false_pos"]) == (2, 4)
    assert iou["ltpr"] == 0.4 and iou["lfpr"] == pytest.approx(4 / 6) and iou["f1"] == pytest.approx(4 / 11)
    assert lesion_detection(p, t) == ov                                  # overlap stays the default
    pooled = pooled_lesion_scores(n_true=5, n_pred=6, n_detected=iou["n_detected"], n_false_pos=iou["n_false_pos"])
    assert pooled["f1"] == pytest.approx(4 / 11)                         # one case: pooled = per case
    assert pooled_lesion_scores(3, 2, 0, 2)["f1"] == 0.0 and np.isnan(pooled_lesion_scores(3, 0, 0, 0)["f1"])


def test_blob_over_two_lesions_and_the_strict_threshold() -> None:
    t = np.zeros((8, 4, 1), bool)
    t[0:2, 0:2, 0] = t[3:5, 0:2, 0] = True         # two 4-voxel lesions, one gap row apart
    p = np.zeros_like(t)
    p[0:5, 0:2, 0] = True                           # one 10-voxel blob over both: IoU 4/10 with each
    ov, iou = lesion_detection(p, t, rule="overlap"), lesion_detection(p, t, rule="iou")
    assert (ov["n_detected"], ov["n_false_pos"]) == (2, 0) and (iou["n_detected"], iou["n_false_pos"]) == (0, 1)
    one = np.zeros((4, 1, 1), bool)
    one[:, 0, 0] = True
    half, three = np.zeros_like(one), np.zeros_like(one)
    half[:2], three[:3] = True, True
    assert lesion_detection(half, one, rule="iou")["n_detected"] == 0            # IoU 0.5 is not > 0.5
    assert lesion_detection(three, one, rule="iou")["n_detected"] == 1           # IoU 0.75
    assert lesion_detection(half, one, rule="iou", iou_threshold=0.75)["n_detected"] == 0
    with pytest.raises(ValueError, match=r"\[0.5, 1\)"):
        lesion_detection(half, one, rule="iou", iou_threshold=0.3)
    with pytest.raises(ValueError, match="rule"):
        lesion_detection(half, one, rule="dice")


@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_best_iou_matches_brute_force(connectivity) -> None:
    rng = np.random.default_rng(connectivity)
    t = rng.random((12, 12, 6)) > 0.8
    p = t ^ (rng.random(t.shape) > 0.9)             # the truth with 10% of voxels flipped
    m = match_lesions(p, t, connectivity=connectivity)
    lt, lp = label(t, connectivity=connectivity), label(p, connectivity=connectivity)   # skimage: same rank
    assert (lt.max(), lp.max()) == (m.n_true, m.n_pred) and np.array_equal(lt, m.true_labels)

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        return (a & b).sum() / (a | b).sum()

    best_t = [max([iou(lt == i, lp == j) for j in range(1, m.n_pred + 1)] + [0.0]) for i in range(1, m.n_true + 1)]
    best_p = [max([iou(lt == i, lp == j) for i in range(1, m.n_true + 1)] + [0.0]) for j in range(1, m.n_pred + 1)]
    assert m.true_best_iou == pytest.approx(best_t) and m.pred_best_iou == pytest.approx(best_p)
    touched = [bool((lp[lt == i] > 0).any()) for i in range(1, m.n_true + 1)]
    assert m.true_touched.tolist() == touched
    assert int(m.true_detected("iou").sum()) == int(m.pred_matched("iou").sum())   # one-to-one at >= 0.5


def test_lesion_table_rows_by_hand() -> None:
    p, t = _case()
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    tab = lesion_table(match_lesions(p, t), "s1_01", spacing=(0.5, 0.5, 2.0), affine=affine)
    assert list(tab.columns) == list(LESION_COLUMNS)
    assert (tab.kind == "true").sum() == 5 and (tab.kind == "pred").sum() == 6 and set(tab.case_id) == {"s1_01"}
    a = tab[(tab.kind == "true") & (tab.voxels == 27)].iloc[0]       # lesion A: centre voxel (2, 2, 2)
    assert a.volume_mm3 == 27 * 0.5 and (a.centroid_i, a.centroid_j, a.centroid_k) == (2.0, 2.0, 2.0)
    assert (a.centroid_x_mm, a.centroid_y_mm, a.centroid_z_mm) == (-9.0, 21.0, 9.0)
    assert (a.status_overlap, a.status_iou) == ("detected", "missed") and a.best_iou == pytest.approx(1 / 27)
    d = tab[(tab.kind == "pred") & (tab.voxels == 9)].iloc[0]        # D predicted with one voxel more
    assert (d.status_overlap, d.status_iou, d.best_iou) == ("true_positive", "true_positive", pytest.approx(8 / 9))
    # voxels: i in {5, 6} x j in {15, 16} x k in {1, 2}, plus (7, 15, 1)
    assert (d.centroid_i, d.centroid_j, d.centroid_k) == pytest.approx((51 / 9, 139 / 9, 13 / 9))
    halves = tab[(tab.kind == "pred") & (tab.voxels == 2)]           # the two halves of B
    assert halves.status_overlap.tolist() == ["true_positive"] * 2 and halves.status_iou.tolist() == [
        "false_positive"] * 2 and halves.best_iou.tolist() == [0.25, 0.25]
    counts = tab.groupby(["kind", "status_iou"]).size().to_dict()
    assert counts == {("true", "detected"): 2, ("true", "missed"): 3, ("pred", "true_positive"): 2,
                      ("pred", "false_positive"): 4}
    empty = lesion_table(match_lesions(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 3), bool)), "none")
    assert empty.empty and list(empty.columns) == list(LESION_COLUMNS)
