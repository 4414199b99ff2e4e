"""Calibration metrics: hand-made cases and scikit-learn cross-checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from medtasks.metrics.calibration import brier_score, expected_calibration_error, reliability_bins


def test_ece_perfect_when_confidence_matches_frequency() -> None:
    y = np.array([1] * 8 + [0] * 2)
    p = np.full(10, 0.8)
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)


def test_ece_overconfident() -> None:
    y = np.array([1] * 5 + [0] * 5)
    p = np.full(10, 0.9)
    assert expected_calibration_error(y, p) == pytest.approx(0.4)


def test_ece_two_bins_by_hand() -> None:
    # bin [0.0, 0.5): preds 0.2 x4, 1 positive -> |0.2 - 0.25| = 0.05, weight 0.4
    # bin [0.5, 1.0]: preds 0.7 x6, 6 positives -> |0.7 - 1.0| = 0.3, weight 0.6
    y = np.array([1, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    p = np.array([0.2] * 4 + [0.7] * 6)
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.4 * 0.05 + 0.6 * 0.3)


def test_ece_multilabel_pools_entries() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((50, 4)) < 0.3).astype(int)
    p = rng.random((50, 4))
    assert expected_calibration_error(y, p) == pytest.approx(
        expected_calibration_error(y.ravel(), p.ravel())
    )


def test_brier_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(100) < 0.4).astype(int)
    p = rng.random(100)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p))
    ym = (rng.random((40, 3)) < 0.4).astype(int)
    pm = rng.random((40, 3))
    assert brier_score(ym, pm) == pytest.approx(brier_score_loss(ym.ravel(), pm.ravel()))


def test_reliability_bins_match_calibration_curve() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(500) < 0.5).astype(int)
    p = rng.random(500) ** 2  # skewed: leaves some high bins sparse
    p[:3] = [0.0, 1.0, 0.5]  # boundary values
    rb = reliability_bins(y, p, n_bins=10)
    frac, mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
    nonempty = [i for i, c in enumerate(rb["count"]) if c > 0]
    assert [rb["frac_pos"][i] for i in nonempty] == pytest.approx(frac)
    assert [rb["mean_pred"][i] for i in nonempty] == pytest.approx(mean)
    assert sum(rb["count"]) == 500
    assert rb["bin_lower"][0] == 0.0 and rb["bin_upper"][-1] == 1.0
    # ECE is the count-weighted gap of the same bins.
    ece = sum(c * abs(m - f) for c, m, f in zip(rb["count"], rb["mean_pred"], rb["frac_pos"]) if c)
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(ece / 500)


def test_reliability_empty_bins_are_none() -> None:
    rb = reliability_bins(np.array([0, 1, 1]), np.array([0.05, 0.95, 0.92]), n_bins=5)
    assert rb["count"] == [1, 0, 0, 0, 2]
    assert rb["mean_pred"][1] is None and rb["frac_pos"][2] is None
    assert rb["frac_pos"][4] == 1.0
    json.dumps(rb, allow_nan=False)


def test_calibration_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([0, 1]), np.array([0.5, 1.2]))
    with pytest.raises(ValueError):
        brier_score(np.array([0, 2]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError):
        reliability_bins(np.array([0, 1]), np.array([0.5]))
