"""Minimum lesion size: mm^3 -> voxels with the spacing, removal with the lesion metric's connectivity (checked
against the metric's own size filter), the validation curve and the choice, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medtasks.config import ConfigError, from_dict
from medtasks.metrics.lesions import lesion_detection
from medtasks.transforms.postprocess import (
    LesionPostprocessConfig,
    choose_min_lesion_size,
    lesion_f1_curve,
    min_voxels,
    remove_small_lesions,
    resolve_min_lesion_size,
)


def test_mm3_to_voxels() -> None:
    assert min_voxels(10.0, (0.8, 0.8, 1.5)) == 11          # 10 / 0.96 = 10.4 -> 11 voxels (10.56 mm^3)
    assert min_voxels(9.6, (0.8, 0.8, 1.5)) == 10           # exactly 10 voxels: kept at 10 (float guard)
    assert min_voxels(3.0, 1.0) == 3 and min_voxels(0.0, 1.0) == 0 and min_voxels(0.5, (1, 1, 1)) == 1
    assert min_voxels(24.0, (2.0, 2.0, 3.0)) == 2
    with pytest.raises(ValueError, match="spacing"):
        min_voxels(1.0, (1.0, 1.0))


def test_connectivity_decides_what_is_one_lesion() -> None:
    m = np.zeros((5, 5, 5), bool)
    m[0, 0, 0] = m[1, 1, 0] = True        # share an edge: one lesion at 18-/26-connectivity, two at 6
    m[4, 4, 4] = m[3, 3, 3] = True        # share a corner only: one lesion at 26-connectivity
    assert remove_small_lesions(m, 2.0, 1.0, connectivity=1).sum() == 0
    assert remove_small_lesions(m, 2.0, 1.0, connectivity=2).sum() == 2
    assert remove_small_lesions(m, 2.0, 1.0, connectivity=3).sum() == 4
    assert remove_small_lesions(m, 0.0, 1.0).sum() == 4 and remove_small_lesions(m, 3.0, 1.0, 3).sum() == 0
    assert remove_small_lesions(m, 1.0, (2.0, 1.0, 1.0), connectivity=1).sum() == 4   # 1 voxel = 2 mm^3 >= 1


@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_removal_agrees_with_the_metric_size_filter(connectivity) -> None:
    rng = np.random.default_rng(7)
    p = rng.random((16, 16, 8)) > 0.85
    for k in (2, 3, 5):
        kept = remove_small_lesions(p, float(k), 1.0, connectivity)
        by_metric = lesion_detection(p, p, connectivity=connectivity, min_size=k)["n_pred_lesions"]
        assert lesion_detection(kept, kept, connectivity=connectivity)["n_pred_lesions"] == by_metric > 0
        assert not (kept & ~p).any()


def _val_cases():
    t = np.zeros((10, 10, 4), bool)
    t[2:4, 2:4, 1:3] = True                  # one 8-voxel lesion
    p = t.copy()
    p[8, 8, 0] = p[0, 8, 3] = True           # and two 1-voxel false positives
    return [(p, t, (1.0, 1.0, 1.0))]


def test_curve_and_choice_by_hand() -> None:
    curve = lesion_f1_curve(_val_cases(), [10, 0, 2, 1, 2], connectivity=2)
    assert [r["min_lesion_mm3"] for r in curve] == [0.0, 1.0, 2.0, 10.0]        # sorted, duplicates dropped
    assert [r["n_pred_lesions"] for r in curve] == [3, 3, 1, 0]
    assert [r["lesion_f1"] for r in curve] == [pytest.approx(0.5), pytest.approx(0.5), 1.0, 0.0]   # P 1/3, R 1
    assert [r["dice"] for r in curve] == [pytest.approx(16 / 18), pytest.approx(16 / 18), 1.0, 0.0]
    assert choose_min_lesion_size(curve) == 2.0
    tie = [{"min_lesion_mm3": 5.0, "lesion_f1": 0.7}, {"min_lesion_mm3": 3.0, "lesion_f1": 0.7},
           {"min_lesion_mm3": 0.0, "lesion_f1": float("nan")}]
    assert choose_min_lesion_size(tie) == 3.0 and choose_min_lesion_size(tie[2:]) == 0.0
    closed = lesion_f1_curve(_val_cases(), [0, 2], gate=lambda i, m: m if m.sum() >= 9 else np.zeros_like(m))
    assert [r["n_pred_lesions"] for r in closed] == [3, 0]           # the gate sees the filtered mask


def test_resolve_fixed_auto_and_config() -> None:
    fixed = resolve_min_lesion_size(LesionPostprocessConfig(min_lesion_mm3=4.0), None, connectivity=2)
    assert fixed == {"mode": "fixed", "connectivity": 2, "min_lesion_mm3": 4.0}
    auto = LesionPostprocessConfig(min_lesion_mm3="auto", candidates_mm3=[0.0, 2.0, 10.0])
    got = resolve_min_lesion_size(auto, lambda c: lesion_f1_curve(_val_cases(), c), connectivity=2)
    assert got["min_lesion_mm3"] == 2.0 and len(got["validation_curve"]) == 3 and got["split"] == "val"
    assert resolve_min_lesion_size(auto, None, 2)["min_lesion_mm3"] == 0.0
    assert from_dict(LesionPostprocessConfig, {"min_lesion_mm3": "auto"}).min_lesion_mm3 == "auto"
    assert from_dict(LesionPostprocessConfig, {"min_lesion_mm3": 5}).min_lesion_mm3 == 5.0
    with pytest.raises(ConfigError, match="min_lesion_mm3"):
        from_dict(LesionPostprocessConfig, {"min_lesion_mm3": -1})
    with pytest.raises(ConfigError, match="min_lesion_mm3"):
        from_dict(LesionPostprocessConfig, {"min_lesion_mm3": "largest"})
